#!/usr/bin/env python3
"""Stand-in for model APIs and HTTP MCP servers on 127.0.0.1:18765.

Records every request (path, headers, body) to /tmp/rec/http.jsonl and answers
400. Model-API requests are answered after 6 s so that the CLI has time to
connect its MCP servers first."""
import json, os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = os.path.join(os.environ.get("RECORD_DIR", "/tmp/rec"), "http.jsonl")


class Recorder(BaseHTTPRequestHandler):
    def handle_any(self):
        if not self.path.startswith("/mcp"):
            time.sleep(6)
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
        with open(OUT, "a") as f:
            f.write(json.dumps({"method": self.command, "path": self.path,
                                "headers": dict(self.headers), "body": body}) + "\n")
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error":{"message":"recorder","type":"invalid_request_error"}}')

    do_GET = do_POST = do_PUT = do_DELETE = handle_any

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", 18765), Recorder).serve_forever()
