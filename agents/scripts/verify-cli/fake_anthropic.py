#!/usr/bin/env python3
"""Scripted stand-in for the Anthropic Messages API on 127.0.0.1:18766: the first
turn asks for one Bash tool call (`echo hi > hello.txt`), the next answers
"Created hello.txt with `hi`.". Drives Claude Code, opencode and Copilot CLI
(COPILOT_PROVIDER_TYPE=anthropic) through a real tool call without a key."""
import json, itertools
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ids = itertools.count(1)
def has_tool_result(body):
    msgs = body.get("messages") or []
    if not msgs: return False
    c = msgs[-1].get("content")
    return isinstance(c, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in c)
def tool_name(body):
    for t in body.get("tools") or []:
        if t.get("name") in ("Bash", "bash"): return t["name"]
    return None
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        name = tool_name(body)
        if name and not has_tool_result(body):
            block = {"type": "tool_use", "id": f"toolu_{next(ids)}", "name": name, "input": {"command": "echo hi > hello.txt", "description": "Create hello.txt"}}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": "Created hello.txt with `hi`." if name else "Hello file"}
            stop = "end_turn"
        msg = {"id": f"msg_{next(ids)}", "type": "message", "role": "assistant", "model": body.get("model", "m"), "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}
        if not body.get("stream"):
            msg["content"] = [block]; msg["stop_reason"] = stop; msg["usage"]["output_tokens"] = 20
            data = json.dumps(msg).encode()
            self.send_response(200); self.send_header("content-type", "application/json"); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data); return
        ev = [("message_start", {"type": "message_start", "message": msg})]
        if block["type"] == "text":
            ev += [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                   ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}})]
        else:
            ev += [("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
                   ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}})]
        ev += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 20}}),
               ("message_stop", {"type": "message_stop"})]
        data = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in ev).encode()
        self.send_response(200); self.send_header("content-type", "text/event-stream"); self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", 18766), H).serve_forever()
