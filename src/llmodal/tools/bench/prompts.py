"""Prompts of an exact length without a local tokenizer, by asking the server to count.

A prompt of "one common word per token" is 4.2× too long on a tokenizer that splits those
words (measured against the embedded model: ``--input-len 256`` was counted as ~1,064 tokens),
and every latency and $/1M figure of such a run is off. The server knows its tokenizer: vLLM's
``/tokenize`` counts a prompt (with the chat template for chat requests) for free; any other
OpenAI-compatible server counts it in ``usage.prompt_tokens`` of a one-token request.

The count is close to linear in the number of words (tokens = a + b × words), so two counts fit
it; each prompt is then counted and its words added or removed until the server's count is
within ``TOLERANCE`` of the target (usually one or two counts per prompt).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx

from llmodal.core.errors import EndpointError
from llmodal.tools.client import Endpoint

TOLERANCE = 0.02  # the server-counted length stays within 2 % of --input-len
PARALLEL = 16  # counts in flight at once
WARN_ABOVE = 0.05  # a run whose server-counted lengths differ more than this is flagged
WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact").split()


class Counter:
    """Counts a prompt's tokens as the server will: ``/tokenize`` when it has one, else the usage
    of a one-token request. ``method`` says which was used."""

    def __init__(self, ep: Endpoint, api: str, timeout: float = 60) -> None:
        self.ep, self.api = ep, api
        self.http = httpx.Client(timeout=timeout, headers=ep.headers)
        self.method: str | None = None
        self.calls = 0

    def _body(self, text: str) -> dict:
        if self.api == "chat":
            return {"model": self.ep.model, "messages": [{"role": "user", "content": text}]}
        return {"model": self.ep.model, "prompt": text}

    def count(self, text: str) -> int:
        self.calls += 1
        if self.method in (None, "tokenize"):
            r = self.http.post(self.ep.root + "/tokenize", json=self._body(text))
            if r.status_code == 200 and "count" in r.json():
                self.method = "tokenize"
                return int(r.json()["count"])
            if self.method == "tokenize":
                raise EndpointError(f"POST /tokenize answered HTTP {r.status_code} after working before")
        path = "/chat/completions" if self.api == "chat" else "/completions"
        r = self.http.post(self.ep.base_url + path, json={**self._body(text), "max_tokens": 1})
        if r.status_code != 200 or "usage" not in r.json():
            raise EndpointError(f"cannot count prompt tokens: /tokenize unavailable and {path} answered "
                                f"HTTP {r.status_code}; pass --tokenizer DIR")
        self.method = "usage"
        return int(r.json()["usage"]["prompt_tokens"])

    def close(self) -> None:
        self.http.close()


def _fit(counter: Counter, input_len: int, rng: random.Random) -> tuple[float, float]:
    """tokens ≈ fixed + per_word × words, from two counts."""
    probe = max(8, input_len // 2)
    c1 = counter.count(" ".join(rng.choice(WORDS) for _ in range(probe)))
    c2 = counter.count(" ".join(rng.choice(WORDS) for _ in range(2 * probe)))
    per_word = max((c2 - c1) / probe, 1e-3)
    return c1 - per_word * probe, per_word


def _one(counter: Counter, words: list[str], start: int, input_len: int, per_word: float) -> tuple[str, int]:
    """The prefix of ``words`` whose server count is closest to ``input_len`` (a few counts)."""
    k, best = start, None
    for _ in range(4):
        k = min(max(1, k), len(words))
        c = counter.count(" ".join(words[:k]))
        if best is None or abs(c - input_len) < abs(best[1] - input_len):
            best = (" ".join(words[:k]), c)
        step = round((input_len - c) / per_word)
        if abs(c - input_len) <= TOLERANCE * input_len or step == 0:
            break
        k += step
    return best


def calibrate(counter: Counter, n: int, input_len: int, seed: int = 0) -> tuple[list[str], dict]:
    """``n`` prompts, each counted by the server and trimmed to ``input_len`` tokens (within
    TOLERANCE where a word's tokens allow), and a record of how."""
    rng = random.Random(seed)
    fixed, per_word = _fit(counter, input_len, rng)
    start = max(1, round((input_len - fixed) / per_word))

    def one(i: int) -> tuple[str, int]:
        r = random.Random(f"{seed}:{i}")  # distinct per seed and prompt
        return _one(counter, [r.choice(WORDS) for _ in range(2 * start + 16)], start, input_len, per_word)

    # Counted in parallel: against a remote endpoint each count is a round trip.
    with ThreadPoolExecutor(PARALLEL) as pool:
        texts, counts = map(list, zip(*pool.map(one, range(n))))
    mean = sum(counts) / len(counts)
    rec = {"method": counter.method, "tokens_per_word": round(per_word, 3), "fixed_tokens": round(fixed, 1),
           "counts_min_max": [min(counts), max(counts)], "counted_mean": round(mean, 1),
           "deviation": round(mean / input_len - 1, 4),
           "max_deviation": round(max(abs(c / input_len - 1) for c in counts), 4), "count_calls": counter.calls}
    return texts, rec


def check_lengths(rows: list[dict], input_len: int) -> dict | None:
    """What the server counted over the whole run (usage.prompt_tokens) against the target."""
    done = sum(r["completed"] for r in rows)
    counted = sum(r["prompt_tokens"] for r in rows)
    if not done or not counted:
        return None
    mean = counted / done
    dev = mean / input_len - 1
    return {"target": input_len, "server_mean": round(mean, 1), "deviation": round(dev, 4),
            "warning": abs(dev) > WARN_ABOVE}
