#!/usr/bin/env python3
"""Runs one real agent CLI with the plan drydock-agents makes for the `hostile`
scenario (pointed at record_stdio.py and record_http.py), then checks what the
MCP servers and the model API actually received.

    cargo build -p drydock-agents --example dump_plan
    mkdir -p /tmp/rec && python3 record_http.py &
    PATH=/path/to/cli/bin:$PATH python3 run.py claude|codex|gemini|opencode [timeout]
    BYOK=1 python3 run.py copilot     # Copilot without GitHub auth, via its BYOK provider

Runs as the current user; IS_SANDBOX=1 lets Claude Code skip permissions as root.
"""
import json, os, subprocess, sys, shutil


def contains(body, text):
    """Whether any string inside a JSON body contains `text`."""
    def walk(v):
        if isinstance(v, str):
            return text in v
        if isinstance(v, dict):
            return any(walk(x) for x in v.values())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        return False
    try:
        return walk(json.loads(body))
    except ValueError:
        return text in body


HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = os.path.join(HERE, "../../../target/debug/examples/dump_plan")
agent = sys.argv[1]
timeout = int(sys.argv[2]) if len(sys.argv) > 2 else 45
for f in ["/tmp/rec/stdio.jsonl", "/tmp/rec/http.jsonl"]:
    if os.path.exists(f): os.remove(f)
plan = json.loads(subprocess.check_output([TARGET, agent, "hostile", os.path.join(HERE, "record_stdio.py"), "http://127.0.0.1:18765/mcp"]))
home = f"/tmp/verify/home-{agent}"
shutil.rmtree(home, ignore_errors=True); os.makedirs(home)
for f in plan["files"]:
    p = f["path"].replace("/home/agent", home)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "w").write(f["contents"]); os.chmod(p, f["mode"])
env = dict(plan["env"]); env["HOME"] = home; env["IS_SANDBOX"] = "1"
if os.environ.get("BYOK"): env["COPILOT_PROVIDER_BASE_URL"] = "http://127.0.0.1:18765/copilot"; env["COPILOT_PROVIDER_API_KEY"] = "byok-key"; env["COPILOT_OFFLINE"] = "true"
env["PATH"] = os.environ["PATH"]
os.makedirs("/tmp/cx", exist_ok=True)
try:
    argv = [a.replace("/home/agent", home) for a in plan["argv"]]
    r = subprocess.run(argv, env=env, cwd="/tmp/cx", capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    out, err, rc = r.stdout, r.stderr, r.returncode
except subprocess.TimeoutExpired as e:
    out, err, rc = e.stdout or b"", e.stderr or b"", "timeout"
open(f"/tmp/verify/{agent}.stdout", "wb").write(out)
print("rc", rc)
print("stdout:", out.decode()[-1500:])
print("stderr:", err.decode()[-1500:])
servers = plan["servers"]
exp_args = [s for s in servers if s["transport"]["transport"] == "stdio"][0]["transport"]
print("== stdio records")
for line in open("/tmp/rec/stdio.jsonl") if os.path.exists("/tmp/rec/stdio.jsonl") else []:
    rec = json.loads(line)
    if rec["argv"]:
        print("args match:", rec["argv"] == exp_args["args"], "TOKEN match:", rec["TOKEN"] == exp_args["env"]["TOKEN"], "PLAIN match:", rec["PLAIN"] == exp_args["env"]["PLAIN"])
        if rec["argv"] != exp_args["args"]: print("  got", rec["argv"])
        if rec["TOKEN"] != exp_args["env"]["TOKEN"]: print("  got TOKEN", repr(rec["TOKEN"]))
print("== http records")
http = [s for s in servers if s["transport"]["transport"] == "http"][0]["transport"]
prompt = plan["argv"][-1].removeprefix("--prompt=")
for line in open("/tmp/rec/http.jsonl") if os.path.exists("/tmp/rec/http.jsonl") else []:
    rec = json.loads(line)
    h = {k.lower(): v for k, v in rec["headers"].items()}
    if rec["path"].startswith("/mcp"):
        print("MCP", rec["method"], rec["path"], "auth match:", h.get("authorization") == http["headers"]["Authorization"], "x-quote match:", h.get("x-quote") == http["headers"]["X-Quote"])
        if h.get("authorization") != http["headers"]["Authorization"]: print("  got auth", repr(h.get("authorization")))
    else:
        print("API", rec["method"], rec["path"], "prompt in body:", contains(rec["body"], prompt), "key hdrs:", {k: v for k, v in h.items() if "key" in k or k == "authorization"})
