#!/usr/bin/env python3
"""Scripted stand-in for the OpenAI Responses API on 127.0.0.1:18767 (one
exec_command call, then an answer), for Codex through a custom provider with
supports_websockets = false."""
import json, itertools
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ids = itertools.count(1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        inp = body.get("input") or []
        done = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in inp)
        rid = f"resp_{next(ids)}"
        if not done:
            item = {"type": "function_call", "id": f"fc_{next(ids)}", "call_id": f"call_{next(ids)}", "name": "exec_command", "arguments": json.dumps({"cmd": "echo hi > hello.txt"}), "status": "completed"}
        else:
            item = {"type": "message", "id": f"msg_{next(ids)}", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "Created hello.txt with `hi`.", "annotations": []}]}
        usage = {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 40}, "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 120}
        ev = [("response.created", {"type": "response.created", "response": {"id": rid, "object": "response", "status": "in_progress", "output": []}}),
              ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0, "item": item}),
              ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
              ("response.completed", {"type": "response.completed", "response": {"id": rid, "object": "response", "status": "completed", "output": [item], "usage": usage}})]
        data = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in ev).encode()
        self.send_response(200); self.send_header("content-type", "text/event-stream"); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", 18767), H).serve_forever()
