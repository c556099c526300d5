"""Load-test any OpenAI-compatible endpoint: TTFT, ITL, TPOT, end-to-end latency, throughput,
every request accounted for, and $ per million output tokens at the measured rate.

The client is plain asyncio + aiohttp reading the SSE stream itself (no SDK object per chunk),
so on two cores it sustains far more chunks per second than an engine produces
(``benchmarks/client_ceiling.py`` measures that).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import httpx

from llmodal.core.errors import EndpointError
from llmodal.tools.client import Endpoint
from llmodal.run.health import HealthTimeout, async_wait_healthy, health_url

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    ok: bool
    error: str = ""
    ttft: float = 0.0
    e2e: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    itls: list[float] = field(default_factory=list)
    start: float = 0.0  # when it was sent: perf_counter, then seconds from the level's start


@dataclass
class Prompts:
    texts: list[str]
    source: str  # how lengths were made: the model's tokenizer or the server's count
    calibration: dict | None = None  # how the server's count was matched (no local tokenizer)


def make_prompts(n: int, input_len: int, tokenizer_path: str, seed: int = 0) -> Prompts:
    """``n`` distinct prompts of exactly ``input_len`` tokens by the model's own tokenizer. Without
    one, ``prompt_lengths.calibrate`` asks the server to count."""
    from transformers import AutoTokenizer

    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    special = set(tok.all_special_ids)
    vocab = [i for i in range(len(tok)) if i not in special]
    texts = []
    for _ in range(n):
        ids = [rng.choice(vocab) for _ in range(input_len)]
        text = tok.decode(ids)
        ids = tok.encode(text, add_special_tokens=False)[:input_len]  # re-tokenization may merge or split
        texts.append(tok.decode(ids))
    return Prompts(texts, f"tokenizer {tokenizer_path}")


def _pct(xs: list[float], p: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    k = (len(s) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary_ms(xs: list[float]) -> dict[str, float]:
    out = {"mean": statistics.fmean(xs) * 1000 if xs else math.nan}
    out.update({f"p{p}": _pct(xs, p) * 1000 for p in PERCENTILES})
    return out


class Runner:
    """Streams requests over aiohttp: measured on this 2-core machine, its first-token overhead is
    lower than httpx's (the client shares the CPU with the engine), and it is what vLLM's own
    benchmark uses, so the two agree on what TTFT means."""

    def __init__(self, ep: Endpoint, *, api: str, output_len: int, ignore_eos: bool, timeout: float,
                 temperature: float | None = None, models: tuple[str, ...] = ()) -> None:
        self.ep, self.api, self.output_len, self.ignore_eos = ep, api, output_len, ignore_eos
        # A mixed run (--models): requests take the served models in turn, e.g. a base and its adapters.
        self._models = itertools.cycle(models) if models else None
        self.temperature = temperature
        self.timeout = timeout
        self._session = None

    def _http(self):
        import aiohttp

        if self._session is None:
            # Idle connections are dropped before uvicorn's 5-second keep-alive closes them.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self.ep.headers)
        return self._session

    def body(self, prompt: str) -> dict:
        # The request vLLM's own `bench serve` sends (it stopped forcing greedy sampling): both tools
        # must measure the same work. --temperature sets one.
        model = next(self._models) if self._models else self.ep.model
        b: dict = {"model": model, "max_tokens": self.output_len, "stream": True,
                   "stream_options": {"include_usage": True}}
        if self.temperature is not None:
            b["temperature"] = self.temperature
        if self.ignore_eos:
            # ignore_eos alone fixes the length in vLLM; min_tokens as well cost ~20 % throughput
            # on the CPU engine (its logits processor runs every step).
            b["ignore_eos"] = True
        if self.api == "chat":
            b["messages"] = [{"role": "user", "content": prompt}]
        else:
            b["prompt"] = prompt
        return b

    async def one(self, prompt: str) -> RequestResult:
        import aiohttp

        path = "/chat/completions" if self.api == "chat" else "/completions"
        t0 = time.perf_counter()
        last = None
        res = RequestResult(ok=False, start=t0)
        chunks = 0
        done = False
        try:
            try:
                resp = await self._http().post(self.ep.base_url + path, json=self.body(prompt))
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # Closed before any answer: almost always a pooled connection the server closed as
                # idle just as it was reused (uvicorn closes after 5 s; on the H200 one request of
                # 200 failed so). Sent again, once, on a new connection; a server that really went
                # away refuses that one.
                t0 = res.start = time.perf_counter()
                resp = await self._http().post(self.ep.base_url + path, json=self.body(prompt))
            async with resp as r:
                if r.status != 200:
                    await r.read()
                    res.error = f"http_{r.status}"
                    return res
                async for raw in r.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    ev = json.loads(data)
                    if ev.get("usage"):
                        res.output_tokens = ev["usage"].get("completion_tokens", 0)
                        res.prompt_tokens = ev["usage"].get("prompt_tokens", 0)
                    ch = ev.get("choices") or []
                    if ch and self._carries_tokens(ch[0]):
                        now = time.perf_counter()
                        if last is None:
                            res.ttft = now - t0
                        else:
                            res.itls.append(now - last)
                        last = now
                        chunks += 1
        except asyncio.TimeoutError:
            res.error = "timeout"
            return res
        except aiohttp.ClientConnectorError:
            res.error = "connect"
            return res
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            res.error = "disconnect"
            return res
        except (ValueError, KeyError):
            res.error = "bad_stream"
            return res
        res.e2e = time.perf_counter() - t0
        if not done:  # the body ended without [DONE]: the connection closed mid-stream
            res.error = "truncated_stream"
            return res
        res.output_tokens = res.output_tokens or chunks
        res.ok = res.output_tokens > 0
        if not res.ok:
            res.error = "empty_stream"
        return res

    def _carries_tokens(self, choice: dict) -> bool:
        # Text can be "" for a token that ends mid-UTF-8 sequence; it still is a token. The chat
        # stream's first chunk (role only) is not.
        if self.api == "chat":
            delta = choice.get("delta") or {}
            return "role" not in delta and delta.get("content") is not None
        return choice.get("text") is not None

    async def level(self, prompts: list[str], *, concurrency: int | None, rate: float | None,
                    on_done: Callable[[], None], seed: int = 0) -> tuple[list[RequestResult], float]:
        results: list[RequestResult] = []
        t0 = time.perf_counter()
        self.arrivals: list[float] = []
        if rate:  # open loop: Poisson arrivals, no cap on concurrency
            tasks = []
            # Against the level's clock, not gap by gap: each sleep's overshoot would add up.
            for p, at in zip(prompts, arrival_times(len(prompts), rate, seed)):
                if (wait := t0 + at - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                self.arrivals.append(time.perf_counter())
                tasks.append(asyncio.create_task(self._track(p, results, on_done)))
            await asyncio.gather(*tasks)
        else:
            sem = asyncio.Semaphore(concurrency or 1)

            async def worker(p: str) -> None:
                async with sem:
                    await self._track(p, results, on_done)

            await asyncio.gather(*(worker(p) for p in prompts))
        for r in results:
            r.start -= t0
        return results, time.perf_counter() - t0

    async def _track(self, prompt: str, results: list[RequestResult], on_done: Callable[[], None]) -> None:
        # Every request ends as one result: a failure the stream parser did not foresee is counted
        # under its type, never allowed to abort the level and lose the others.
        sent = time.perf_counter()
        try:
            res = await self.one(prompt)
        except Exception as e:  # noqa: BLE001
            res = RequestResult(ok=False, error=f"error:{type(e).__name__}", start=sent)
        results.append(res)
        on_done()

    def achieved_rate(self) -> float | None:
        """Arrivals per second actually sent in the last open-loop level."""
        a = getattr(self, "arrivals", [])
        return (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def arrival_times(n: int, rate: float, seed: int = 0) -> list[float]:
    """When a level's n requests go out, in seconds from its start: Poisson arrivals (exponential
    gaps drawn from ``seed``) rescaled so the last leaves at (n − 1) / rate, so a level offers the
    rate it names — as vLLM's bench rescales its gaps to n / rate. Unscaled, a draw of 400 gaps is
    off by ±5 % (one standard deviation): an H200 sweep asked for 5.5 req/s and sent 5.20, and the
    next level, 5.75, sent 5.80 (benchmarks/results/h200-2026-12-02d)."""
    if n <= 0:
        return []
    rng = random.Random(seed)
    out = [0.0]
    for _ in range(n - 1):
        out.append(out[-1] + rng.expovariate(rate))
    scale = (n - 1) / rate / out[-1] if n > 1 and out[-1] > 0 else 1.0
    return [t * scale for t in out]


def summarize(results: list[RequestResult], duration: float, sent: int, price_per_hour: float | None) -> dict:
    ok = [r for r in results if r.ok]
    out_tok = sum(r.output_tokens for r in ok)
    in_tok = sum(r.prompt_tokens for r in ok)
    tpots = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    out_tps = out_tok / duration if duration > 0 else 0.0
    failures = Counter(r.error for r in results if not r.ok)
    return {
        "sent": sent,
        "completed": len(ok),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "unaccounted": sent - len(results),  # 0 unless a request vanished without a result (a bug)
        "duration_s": duration,
        "output_tokens": out_tok,
        "prompt_tokens": in_tok,
        "output_tok_s": out_tps,
        "total_tok_s": (out_tok + in_tok) / duration if duration > 0 else 0.0,
        "requests_s": len(ok) / duration if duration > 0 else 0.0,
        "ttft_ms": summary_ms([r.ttft for r in ok]),
        "itl_ms": summary_ms([x for r in ok for x in r.itls]),
        "tpot_ms": summary_ms(tpots),
        "e2el_ms": summary_ms([r.e2e for r in ok]),
        "usd_per_million_output_tokens": usd_per_million(price_per_hour, out_tps),
        # One row per request in sending order: when each was sent and what it saw, so a mean can be
        # taken apart (a closed-loop level's first wave against its refills, an open-loop queue's growth).
        "requests": [{"start_s": round(r.start, 4), "ttft_ms": round(r.ttft * 1000, 2) if r.ok else None,
                      "e2el_ms": round(r.e2e * 1000, 2) if r.ok else None, "output_tokens": r.output_tokens,
                      **({"error": r.error} if not r.ok else {})}
                     for r in sorted(results, key=lambda r: r.start)],
    }


def held(row: dict, price_per_hour: float | None) -> dict:
    """The load a level held, for the knee and for capacity planning.

    Closed loop: what it measured. Open loop, every request answered: the arrival rate actually sent,
    times the mean output per request -- a deployment that keeps up serves what arrives. The level's own
    ``output_tok_s`` counts its finite run's fill and drain (on the H200, 200 requests at 5.26 req/s:
    4.29 req/s over the level), which is not the rate that was held."""
    rate = row.get("achieved_rate")
    if rate and not row["failed"] and not row.get("unaccounted") and row["completed"]:
        rps, tps = rate, rate * row["output_tokens"] / row["completed"]
    else:
        rps, tps = row["requests_s"], row["output_tok_s"]
    return {"held_requests_s": rps, "held_output_tok_s": tps,
            "held_usd_per_million_output_tokens": usd_per_million(price_per_hour, tps)}


def usd_per_million(price_per_hour: float | None, tok_s: float) -> float | None:
    """Dollars per 1M tokens for one machine at ``price_per_hour`` serving ``tok_s`` tokens a second."""
    return price_per_hour / (tok_s * 3600) * 1e6 if price_per_hour and tok_s > 0 else None


async def wait_for_endpoint(ep: Endpoint, timeout: float, also: tuple[str, ...] = ()) -> tuple[float, Endpoint]:
    """Wait (bounded) for /health, then check the key on /v1/models. Returns the seconds waited and
    the endpoint with its model filled in (the first served one when none was given)."""
    t0 = time.perf_counter()
    try:
        await async_wait_healthy(health_url(ep.root), timeout, interval=1.0, cap=5.0)
    except HealthTimeout as e:
        raise EndpointError(f"{e}: is the endpoint up?") from None
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(ep.base_url + "/models", headers=ep.headers)
        if r.status_code == 401:
            raise EndpointError("the endpoint answered 401: wrong or missing API key (--api-key / VLLM_API_KEY)")
        if r.status_code != 200:
            raise EndpointError(f"GET /v1/models answered HTTP {r.status_code}")
        served = [m["id"] for m in r.json().get("data", [])]
        if ep.model is None and served:
            ep = replace(ep, model=served[0])
        for model in (ep.model, *also):
            if model not in served:
                raise EndpointError(f"model {model!r} is not served here; served: {', '.join(served)}")
    return time.perf_counter() - t0, ep


def result_doc(meta: dict, levels: list[dict]) -> dict:
    return {"meta": meta, "levels": levels}


def dump(doc: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=lambda o: asdict(o)))
    tmp.replace(path)
