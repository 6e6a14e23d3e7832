#!/usr/bin/env python3
"""Scripted stand-in for the Gemini API on 127.0.0.1:18768 (one
run_shell_command call, then an answer), for Gemini CLI with
GOOGLE_GEMINI_BASE_URL."""
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        contents = body.get("contents") or []
        last = contents[-1] if contents else {}
        answered = any("functionResponse" in p for p in last.get("parts") or [])
        usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "totalTokenCount": 120}
        if ":countTokens" in self.path:
            return self.reply_json({"totalTokens": 100})
        has_shell = any("run_shell_command" in json.dumps(t) for t in body.get("tools") or [])
        if has_shell and not answered:
            part = {"functionCall": {"name": "run_shell_command", "args": {"command": "echo hi > hello.txt", "description": "Create hello.txt"}}}
        elif has_shell:
            part = {"text": "Created hello.txt with `hi`."}
        else:
            part = {"text": json.dumps({"reasoning": "done", "next_speaker": "user"})}
        resp = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}], "usageMetadata": usage, "modelVersion": "gemini-2.5-pro"}
        if "streamGenerateContent" in self.path:
            data = f"data: {json.dumps(resp)}\r\n\r\n".encode()
            self.send_response(200); self.send_header("content-type", "text/event-stream"); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
        else:
            self.reply_json(resp)
    def reply_json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", 18768), H).serve_forever()
