"""Service-level objectives: the highest load a deployment holds, and what that load costs.

``llmodal bench --slo "ttft_p99<=2s,itl_p99<=100ms"`` raises concurrency level by level (1, 2,
4, … up to ``--max-concurrency``) and stops at the first level that breaks a term or fails a
request; the level before it is the knee. ``llmodal plan --bench FILE --rps N`` turns the knee
into containers and dollars per day, beside a public per-token API for the same token mix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from llmodal.core.errors import ConfigError
from llmodal.plan.prices import ApiPrice

METRICS = ("ttft", "itl", "tpot", "e2el")
STATS = ("mean", "p50", "p90", "p99")
_TERM = re.compile(r"^\s*(?P<metric>[a-z0-9]+)_(?P<stat>[a-z0-9]+)\s*<=\s*(?P<num>[0-9]*\.?[0-9]+)\s*(?P<unit>ms|s)\s*$")


@dataclass(frozen=True)
class Term:
    metric: str
    stat: str
    limit_ms: float

    def __str__(self) -> str:
        return f"{self.metric}_{self.stat}<={self.limit_ms:g}ms"

    def value(self, row: dict) -> float:
        return row[f"{self.metric}_ms"][self.stat]

    def holds(self, row: dict) -> bool:
        v = self.value(row)
        return not math.isnan(v) and v <= self.limit_ms


def parse(text: str) -> list[Term]:
    """``"ttft_p99<=2s,itl_p99<=100ms"`` → terms. Anything else is refused naming what is allowed."""
    terms = []
    for part in [p for p in text.split(",") if p.strip()]:
        m = _TERM.match(part)
        if not m or m["metric"] not in METRICS or m["stat"] not in STATS:
            raise ConfigError(f"--slo term {part.strip()!r} is invalid: expected METRIC_STAT<=NUMBER(ms|s) with "
                              f"METRIC in {', '.join(METRICS)} and STAT in {', '.join(STATS)}, "
                              "e.g. ttft_p99<=2s,itl_p99<=100ms")
        limit = float(m["num"]) * (1000 if m["unit"] == "s" else 1)
        if limit <= 0:
            raise ConfigError(f"--slo term {part.strip()!r} is invalid: the limit must be > 0")
        terms.append(Term(m["metric"], m["stat"], limit))
    if not terms:
        raise ConfigError("--slo is empty: expected e.g. ttft_p99<=2s,itl_p99<=100ms")
    return terms


def broken(row: dict, terms: list[Term]) -> list[str]:
    """What a level breaks: failed requests, or terms over their limit (with the measured value)."""
    out = [f"{row['failed']} failed request(s)"] if row["failed"] or row.get("unaccounted") else []
    out += [f"{t.metric}_{t.stat} {t.value(row):.0f} ms > {t.limit_ms:g} ms" for t in terms if not t.holds(row)]
    return out


def sweep_levels(max_concurrency: int) -> list[int]:
    """1, 2, 4, … and ``max_concurrency`` itself."""
    levels, c = [], 1
    while c < max_concurrency:
        levels.append(c)
        c *= 2
    return levels + [max_concurrency]


def knee(rows: list[dict], terms: list[Term]) -> dict:
    """The highest level that holds every term, and why the next one did not."""
    passed = [r for r in rows if not broken(r, terms)]
    failing = next((r for r in rows if broken(r, terms)), None)
    best = passed[-1] if passed and (failing is None or rows.index(passed[-1]) < rows.index(failing)) else None
    pick = ("label", "concurrency", "request_rate", "achieved_rate", "requests_s", "output_tok_s",
            "usd_per_million_output_tokens", "held_requests_s", "held_output_tok_s",
            "held_usd_per_million_output_tokens")
    return {"terms": [str(t) for t in terms],
            "knee": {k: best.get(k) for k in pick} if best else None,
            "first_failing": failing["label"] if failing else None,
            "why": broken(failing, terms) if failing else [],
            "limit_reached": failing is None}


@dataclass(frozen=True)
class Capacity:
    """N requests/s against the knee: containers, $/day, and the same tokens at an API's price."""

    rps: float
    per_container_rps: float  # the knee (or best level) of the bench
    containers: int
    usd_per_day: float
    api_usd_per_day: float | None
    api_source: str | None
    breakeven_rps: float | None  # the load at which one always-on container costs what the API does


def capacity(result: dict, rps: float, price_per_hour: float, api: ApiPrice | None) -> Capacity:
    """``result``: a bench result with an ``slo`` knee (or, without one, its best level by req/s)."""
    slo = result.get("slo") or {}
    k = slo.get("knee") or max(result["levels"], key=_held, default=None)
    if not k or _held(k) <= 0:
        raise ConfigError("--bench: the result has no level that completed requests; nothing to plan from")
    per = _held(k)
    containers = max(1, math.ceil(rps / per))
    day = containers * price_per_hour * 24
    meta = result["meta"]
    if api is None:
        return Capacity(rps, per, containers, day, None, None, None)
    per_request = api.per_request(meta["input_len"], meta["output_len"])
    return Capacity(rps, per, containers, day, rps * 86400 * per_request, api.source,
                    price_per_hour * 24 / (86400 * per_request))


def _held(row: dict) -> float:
    """Requests/s a level held (results saved before 2026-12-02 have only what it measured)."""
    return row.get("held_requests_s") or row["requests_s"]


def api_beside(knee_row: dict | None, api: ApiPrice | None, input_len: int, output_len: int) -> dict | None:
    """The bench's token mix at a public API, per 1M output tokens, beside the knee's own figure."""
    if api is None:
        return None
    return {"source": api.source, "usd_per_million_output_tokens": api.per_request(input_len, output_len)
            / output_len * 1e6,
            "self_hosted_usd_per_million_output_tokens": (knee_row or {}).get("held_usd_per_million_output_tokens")
            or (knee_row or {}).get("usd_per_million_output_tokens")}
