"""How many streamed chunks per second can `llmodal bench` consume on this machine?

A minimal ASGI server (uvicorn, its own process) streams OpenAI-style SSE chunks as fast as
it can — one token per chunk, no model — and `llmodal bench` reads them. Whatever the client
sustains here is its ceiling; it must sit well above what an engine produces.

    .venv/bin/python benchmarks/client_ceiling.py [--concurrency 1,8,32] [--output-len 2000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import free_port  # noqa: E402

SERVER = r'''
import json, sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/v1/models":
        body = json.dumps({"data": [{"id": "fake"}]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    req = b""
    while True:
        m = await receive()
        req += m.get("body", b"")
        if not m.get("more_body"):
            break
    n = json.loads(req)["max_tokens"]
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    chunk = b'data: {"choices":[{"index":0,"text":" tok","finish_reason":null}]}\n\n'
    for _ in range(n):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    usage = json.dumps({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n}}).encode()
    await send({"type": "http.response.body", "body": b"data: " + usage + b"\n\ndata: [DONE]\n\n"})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--output-len", type=int, default=2000)
    a = ap.parse_args()
    port = free_port()
    srv = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with tempfile.TemporaryDirectory() as td:
            out = Path(td) / "r.json"
            subprocess.run([sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url",
                            f"http://127.0.0.1:{port}/v1", "--api-key", "x", "--model", "fake", "--api", "completions",
                            "--concurrency", a.concurrency, "--num-prompts", "16", "--input-len", "8",
                            "--output-len", str(a.output_len), "--no-ignore-eos", "--out", str(out)],
                           check=True, capture_output=True)
            levels = json.loads(out.read_text())["levels"]
    finally:
        srv.terminate()
        srv.wait()
    print("| concurrency | chunks/s the client sustained | ITL p50 ms |")
    print("|---|---|---|")
    for lv in levels:
        print(f"| {lv['concurrency']} | {lv['output_tok_s']:,.0f} | {lv['itl_ms']['p50']:.3f} |")


if __name__ == "__main__":
    main()
