"""An OAuth-protected MCP server for drydock's connector OAuth tests, built on the official
Python SDK (`mcp` 2.x) and its auth support: the SDK serves the protected-resource metadata
(RFC 9728), the authorization-server metadata (RFC 8414), dynamic registration (RFC 7591),
/authorize, /token (PKCE checked by the SDK), /revoke (RFC 7009) and the 401 with
`WWW-Authenticate: Bearer resource_metadata=...` on the MCP endpoint. This file supplies the
in-memory provider behind those endpoints and a consent page a person (the test's browser)
approves.

Control endpoints for the tests, on the same origin:
  GET  /control/stats   {"registrations", "authorizations", "token_exchanges", "refreshes",
                         "revocations", "mcp_requests"}
  POST /control/config  JSON {"expires_in": n, "refresh_delay": s}: the lifetime reported for
                         tokens issued next; how long a refresh takes
  POST /control/revoke-refresh-tokens: refuses every refresh token issued so far (as when the
                         user revokes the app at the provider)

Usage: oauth_server.py [--no-registration --client-id ID --client-secret SECRET]
Binds 127.0.0.1 on a free port, prints `PORT <n>`, serves until killed. The MCP endpoint is
/mcp; the issuer is the origin.
"""

import argparse
import html
import secrets
import socket
import sys
import time
from urllib.parse import urlencode

import anyio
import uvicorn
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    RefreshToken,
    TokenError,
)
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

STATS = {
    "registrations": 0,
    "authorizations": 0,
    "token_exchanges": 0,
    "refreshes": 0,
    "revocations": 0,
    "mcp_requests": 0,
}
CONFIG = {"expires_in": 3600, "refresh_delay": 0}


class Provider:
    """Everything in memory. Access tokens stay valid until rotated or revoked (the reported
    `expires_in` is what the client acts on), so a test can make drydock see an expired token
    without waiting."""

    def __init__(self):
        self.clients = {}
        self.pending = {}  # consent id -> (client, params)
        self.codes = {}
        self.access = {}
        self.refresh = {}

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, client_info: OAuthClientInformationFull):
        STATS["registrations"] += 1
        self.clients[client_info.client_id] = client_info

    async def authorize(self, client, params: AuthorizationParams) -> str:
        STATS["authorizations"] += 1
        consent = secrets.token_urlsafe(16)
        self.pending[consent] = (client, params)
        return f"{ISSUER}/consent?{urlencode({'id': consent})}"

    def approve(self, consent):
        client, params = self.pending.pop(consent)
        code = secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code,
            scopes=params.scopes or ["mcp"],
            expires_at=time.time() + 300,
            client_id=client.client_id,
            code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource,
        )
        query = {"code": code}
        if params.state is not None:
            query["state"] = params.state
        return f"{params.redirect_uri}?{urlencode(query)}"

    def deny(self, consent):
        _, params = self.pending.pop(consent)
        query = {"error": "access_denied", "error_description": "The user said no."}
        if params.state is not None:
            query["state"] = params.state
        return f"{params.redirect_uri}?{urlencode(query)}"

    async def load_authorization_code(self, client, code):
        found = self.codes.get(code)
        return found if found and found.client_id == client.client_id else None

    def issue(self, client_id, scopes, resource):
        access = "at-" + secrets.token_urlsafe(24)
        refresh = "rt-" + secrets.token_urlsafe(24)
        self.access[access] = AccessToken(
            token=access, client_id=client_id, scopes=scopes, resource=resource
        )
        self.refresh[refresh] = RefreshToken(
            token=refresh, client_id=client_id, scopes=scopes, resource=resource
        )
        return OAuthToken(
            access_token=access,
            token_type="Bearer",
            expires_in=CONFIG["expires_in"],
            scope=" ".join(scopes),
            refresh_token=refresh,
        )

    async def exchange_authorization_code(self, client, code: AuthorizationCode):
        STATS["token_exchanges"] += 1
        self.codes.pop(code.code, None)
        return self.issue(client.client_id, code.scopes, code.resource)

    async def load_refresh_token(self, client, refresh_token):
        found = self.refresh.get(refresh_token)
        return found if found and found.client_id == client.client_id else None

    async def exchange_refresh_token(self, client, refresh_token: RefreshToken, scopes):
        STATS["refreshes"] += 1
        # A slow authorization server: concurrent callers overlap with this refresh.
        await anyio.sleep(CONFIG["refresh_delay"])
        if refresh_token.token not in self.refresh:
            raise TokenError("invalid_grant", "refresh token was revoked")
        # Rotation: the old refresh token and every access token of the grant stop working.
        del self.refresh[refresh_token.token]
        for token in [t for t, a in self.access.items() if a.client_id == client.client_id]:
            del self.access[token]
        return self.issue(client.client_id, scopes or refresh_token.scopes, refresh_token.resource)

    async def load_access_token(self, token):
        STATS["mcp_requests"] += 1
        return self.access.get(token)

    async def revoke_token(self, token):
        STATS["revocations"] += 1
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)
        for t in [t for t, a in self.access.items() if a.client_id == token.client_id]:
            del self.access[t]
        for t in [t for t, r in self.refresh.items() if r.client_id == token.client_id]:
            del self.refresh[t]


class PreRegisteredClient(OAuthClientInformationFull):
    """A client the operator registered by hand. The test learns drydock's port only after this
    server started, so any loopback callback of drydock's path is accepted."""

    def validate_redirect_uri(self, redirect_uri):
        if redirect_uri is None or not str(redirect_uri).startswith("http://127.0.0.1:") or not str(
            redirect_uri
        ).endswith("/connectors/oauth/callback"):
            return super().validate_redirect_uri(redirect_uri)
        return redirect_uri


def main():
    global ISSUER
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-registration", action="store_true")
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret")
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ISSUER = f"http://127.0.0.1:{port}"

    provider = Provider()
    if args.client_id:
        provider.clients[args.client_id] = PreRegisteredClient(
            client_id=args.client_id,
            client_secret=args.client_secret,
            redirect_uris=None,
            scope="mcp",
            token_endpoint_auth_method="client_secret_post",
            grant_types=["authorization_code", "refresh_token"],
        )
    mcp = MCPServer(
        name="drydock-oauth-test-server",
        version="2.0.0",
        auth_server_provider=provider,
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(ISSUER),
            resource_server_url=AnyHttpUrl(f"{ISSUER}/mcp"),
            validate_token_resource=True,
            required_scopes=["mcp"],
            client_registration_options=ClientRegistrationOptions(
                enabled=not args.no_registration, valid_scopes=["mcp"], default_scopes=["mcp"]
            ),
            revocation_options=RevocationOptions(enabled=True),
        ),
    )

    @mcp.tool(description="Lists the open issues of the tracker.")
    def list_issues() -> str:
        return "none"

    @mcp.tool(description="Files a new issue.")
    def file_issue(title: str) -> str:
        return f"filed: {title}"

    @mcp.custom_route("/consent", methods=["GET", "POST"])
    async def consent(request: Request):
        if request.method == "GET":
            consent_id = request.query_params.get("id", "")
            if consent_id not in provider.pending:
                return HTMLResponse("unknown consent request", status_code=400)
            client, _ = provider.pending[consent_id]
            name = html.escape(client.client_name or client.client_id)
            cid = html.escape(consent_id)
            return HTMLResponse(
                f"<form method=post action=/consent><p>Allow {name} to use your issues?</p>"
                f"<input type=hidden name=id value={cid}>"
                "<button name=decision value=allow>Allow</button>"
                "<button name=decision value=deny>Deny</button></form>"
            )
        form = await request.form()
        consent_id = str(form.get("id", ""))
        if consent_id not in provider.pending:
            return HTMLResponse("unknown consent request", status_code=400)
        if form.get("decision") == "allow":
            return RedirectResponse(provider.approve(consent_id), status_code=302)
        return RedirectResponse(provider.deny(consent_id), status_code=302)

    @mcp.custom_route("/control/stats", methods=["GET"])
    async def stats(_request: Request):
        return JSONResponse(STATS)

    @mcp.custom_route("/control/config", methods=["POST"])
    async def config(request: Request):
        CONFIG.update(await request.json())
        return JSONResponse(CONFIG)

    @mcp.custom_route("/control/revoke-refresh-tokens", methods=["POST"])
    async def revoke_refresh(_request: Request):
        provider.refresh.clear()
        return JSONResponse({"ok": True})

    print(f"PORT {port}", flush=True)
    config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


ISSUER = ""

if __name__ == "__main__":
    sys.exit(main())
