"""A fake vLLM with a deterministic batch schedule, fast enough to stress a client: the server side
of the bench-agreement check (``python tests/fake_engine.py PORT [STEP_MS] [PROMPT_TOKENS]``).

One engine loop, like vLLM's: every step admits waiting prompts into a prefill budget (chunked
prefill, ``BUDGET`` tokens a step), emits one token to every running stream, and takes
``STEP_MS + PREFILL_US × prefill tokens`` of wall time. Every prompt costs PROMPT_TOKENS of prefill,
whatever its text, so both benchmark clients' requests cost the server exactly the same.
"""

import asyncio
import json
import os
import sys

from aiohttp import web

# vLLM's default prefill budget on a big GPU is 8,192; the shipped checks use a small, fast one.
BUDGET = int(os.environ.get("FAKE_BUDGET", "4096"))
PREFILL_US = float(os.environ.get("FAKE_PREFILL_US", "1.0"))  # wall time per prefill token


class Engine:
    def __init__(self, step_ms: float, prompt_tokens: int) -> None:
        self.step_s = step_ms / 1000
        self.prompt_tokens = prompt_tokens
        self.waiting: list[dict] = []
        self.running: list[dict] = []
        self.wake = asyncio.Event()

    async def loop(self) -> None:
        while True:
            if not (self.waiting or self.running):
                self.wake.clear()
                await self.wake.wait()
            budget, prefilled = BUDGET, 0
            while self.waiting and budget > 0:
                r = self.waiting[0]
                take = min(budget, r["left"])
                r["left"] -= take
                budget -= take
                prefilled += take
                if r["left"] == 0:
                    self.running.append(self.waiting.pop(0))
                else:
                    break
            await asyncio.sleep(self.step_s + prefilled * PREFILL_US / 1e6)
            for r in list(self.running):
                r["queue"].put_nowait(1)
                r["made"] += 1
                if r["made"] >= r["max_tokens"]:
                    self.running.remove(r)
                    r["queue"].put_nowait(None)


async def completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    engine: Engine = request.app["engine"]
    n_in = engine.prompt_tokens
    r = {"left": n_in, "max_tokens": int(body.get("max_tokens", 16)), "made": 0, "queue": asyncio.Queue()}
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    engine.waiting.append(r)
    engine.wake.set()
    while await r["queue"].get() is not None:
        chunk = {"id": "x", "object": "text_completion", "created": 0, "model": body.get("model"),
                 "choices": [{"index": 0, "text": " tok", "logprobs": None, "finish_reason": None}]}
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    usage = {"id": "x", "object": "text_completion", "created": 0, "model": body.get("model"), "choices": [],
             "usage": {"prompt_tokens": n_in, "completion_tokens": r["made"], "total_tokens": n_in + r["made"]}}
    await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def tokenize(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"count": len(str(body.get("prompt", "")).split())})


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


def main() -> None:
    port = int(sys.argv[1])
    step_ms = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    prompt_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    app = web.Application()
    app["engine"] = Engine(step_ms, prompt_tokens)

    async def start(app):
        app["task"] = asyncio.create_task(app["engine"].loop())

    app.on_startup.append(start)
    app.add_routes([web.post("/v1/completions", completions), web.post("/tokenize", tokenize),
                    web.get("/v1/models", models), web.get("/health", health)])
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                keepalive_timeout=float(os.environ.get("FAKE_KEEPALIVE_S", "75")))


if __name__ == "__main__":
    main()
