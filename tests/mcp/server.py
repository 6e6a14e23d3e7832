"""A small MCP server for drydock's connector tests, built on the official Python SDK (`mcp` 2.x).

It offers two tools and demands `Authorization: Bearer <token>` on every request. A wrong
token gets a 401 whose body quotes the token it was sent, so that the tests can check
drydock never passes such text on.

Usage: server.py --token TOKEN [--transport streamable|sse]
It binds 127.0.0.1 on a free port, prints `PORT <n>` on one line, then serves until killed.
"""

import argparse
import json
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--transport", choices=["streamable", "sse"], default="streamable")
    args = parser.parse_args()

    if args.transport == "streamable":
        app = mcp.streamable_http_app()
    else:
        app = mcp.sse_app()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    config = uvicorn.Config(RequireBearer(app, args.token), log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
