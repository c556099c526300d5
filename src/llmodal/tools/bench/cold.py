"""``llmodal bench --cold``: what the first user after a quiet spell waits for.

Modal scales the endpoint to zero after its scale-down window (the guide: 15 minutes). This
sends nothing for ``idle`` seconds, so every container is gone, then times one streamed request:
its time to first token is the cold path as a client sees it (container start, or a snapshot
restore with fast boot, plus the first token). Run it against your own deployment; nothing here
can stand in for Modal's scheduler.
"""

from __future__ import annotations

import asyncio
import datetime
import time

from rich.console import Console

from llmodal.tools.bench.runner import Runner
from llmodal.tools.client import Endpoint

PROMPT = "Reply with one short sentence: what is a cold start?"


def _wait(idle_s: float, console: Console) -> None:
    end = time.monotonic() + idle_s
    with console.status("") as status:
        while (left := end - time.monotonic()) > 0:
            status.update(f"sending nothing for {left:.0f} s more, so the endpoint scales to zero…")
            time.sleep(min(left, 1.0))


async def _first(ep: Endpoint, output_len: int, timeout: float):
    runner = Runner(ep, api="chat", output_len=output_len, ignore_eos=False, timeout=timeout)
    try:
        return await runner.one(PROMPT)
    finally:
        await runner.aclose()


def cold_start(ep: Endpoint, idle_s: float, output_len: int, timeout: float, console: Console) -> dict:
    """Wait ``idle_s`` seconds, then time one request. Returns the result document."""
    console.print(f"cold start: idle {idle_s:.0f} s, then one request to {ep.base_url}")
    _wait(idle_s, console)
    sent = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    res = asyncio.run(_first(ep, min(output_len, 32), timeout))
    doc = {"cold": {"idle_s": idle_s, "sent_at": sent, "ok": res.ok, "error": res.error or None,
                    "ttft_s": round(res.ttft, 3) if res.ok else None, "e2e_s": round(res.e2e, 3) if res.ok else None,
                    "output_tokens": res.output_tokens},
           "meta": {"base_url": ep.base_url, "model": ep.model}, "ok": res.ok}
    if res.ok:
        console.print(f"first token after {res.ttft:.2f} s (whole answer {res.e2e:.2f} s, {res.output_tokens} tokens)")
    else:
        console.print(f"[red]the first request failed[/]: {res.error}")
    return doc
