"""A small MCP server for drydock's connector tests, built on the official Python SDK (`mcp` 2.x).

It offers two tools and demands `Authorization: Bearer <token>` on every request. A wrong
token gets a 401 whose body quotes the token it was sent, so that the tests can check
drydock never passes such text on.

Usage: server.py --token TOKEN [--transport streamable|sse|stdio]
Over HTTP it binds 127.0.0.1 on a free port, prints `PORT <n>` on one line, then serves until
killed. Over stdio it speaks on stdin/stdout (no token: the pipe is the credential) and also
requires MCP_TEST_TOKEN in its environment to equal --token, as a stdio server's key would.
"""

import argparse
import json
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

mcp = MCPServer(name="drydock-test-server", version="1.2.3")


@mcp.tool(description="Adds two integers and returns the sum.")
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool(description="Echoes the given text back.")
def echo(text: str) -> str:
    return text


class RequireBearer:
    """ASGI middleware: 401 unless the request carries the expected bearer token."""

    def __init__(self, app, token):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        presented = dict(scope["headers"]).get(b"authorization", b"")
        if presented == self.expected:
            return await self.app(scope, receive, send)
        body = json.dumps(
            {"error": f"invalid token: {presented.decode(errors='replace')} is not accepted"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b'Bearer realm="drydock-test"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def self_signed_files():
    """A throwaway self-signed certificate for 127.0.0.1, as uvicorn's ssl_* settings."""
    import datetime
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drydock-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory = tempfile.mkdtemp(prefix="drydock-mcp-tls-")
    certfile = os.path.join(directory, "cert.pem")
    keyfile = os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return {"ssl_certfile": certfile, "ssl_keyfile": keyfile}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--transport", choices=["streamable", "sse", "stdio"], default="streamable")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a self-signed certificate")
    args = parser.parse_args()

    if args.transport == "stdio":
        if os.environ.get("MCP_TEST_TOKEN") != args.token:
            print("MCP_TEST_TOKEN is missing or wrong", file=sys.stderr)
            return 3
        mcp.run("stdio")
        return 0

    if args.transport == "streamable":
        app = mcp.streamable_http_app()
    else:
        app = mcp.sse_app()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    tls = self_signed_files() if args.tls else {}
    config = uvicorn.Config(RequireBearer(app, args.token), log_level="warning", **tls)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
