#!/usr/bin/env python3
"""Stand-in MCP stdio server: records the argv and env it was started with, then exits."""
import json, os, sys

with open(os.path.join(os.environ.get("RECORD_DIR", "/tmp/rec"), "stdio.jsonl"), "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "TOKEN": os.environ.get("TOKEN"),
                        "PLAIN": os.environ.get("PLAIN")}) + "\n")
sys.exit(1)
