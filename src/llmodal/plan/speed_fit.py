"""Fitting the speed model's constants to measured runs, and judging it on runs it was not fitted to.

A ``Row`` is one measured figure: a closed-loop throughput (out tok/s) or a single-stream TTFT. ``fit``
chooses E_MEM and each kernel's (E_COMP, FLOOR) to minimise the squared log error over the rows it is given,
one constant at a time (golden-section search, three sweeps): deterministic, no library. ``cross_validate``
fits once per fold on the rows outside it and predicts the rows inside; ``summarize`` reports, per row, the
held-out errors and whether the row is inside the band, explained by a measured cause, or a miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from llmodal.plan.catalog import lookup
from llmodal.plan.gpus import GiB, get_gpu
from llmodal.plan.model_spec import ModelSpec
from llmodal.plan.speed import API_TOKEN_S, E_MEM, FIRST_TOKEN_S, FITS, Engine, KernelFit, kernel
from llmodal.plan.speed_sim import Load, simulate


@dataclass(frozen=True)
class Row:
    label: str
    gpu: str
    quant: str
    profile: str
    kind: str  # "tput": output tok/s; "ttft": mean TTFT in ms
    n_in: int
    n_out: int
    clients: int
    requests: int
    kv_tokens: int
    kv_bytes: int
    measured: float
    source: str
    weights_gib: float | None = None  # the engine's figure where logged; else the model's weight bytes
    disabled_kernels: str | None = None
    max_num_seqs: int = 1024  # vLLM's default on an 80 GB+ GPU
    max_num_batched_tokens: int = 8192
    cached_requests: int = 0  # the first requests repeat a previous level's prompts (vLLM's prefix cache)
    cause: str = ""  # a measured cause for a known bias, with its evidence; never assigned by rule
    model: str = ""  # the catalog model whose shape served this row; "": the caller's spec (the 70B)
    first_seen: float | None = None  # the plan's prediction stored before this row's server started (issue 35)

    @property
    def kernel(self) -> str:
        return kernel(get_gpu(self.gpu), self.quant, self.disabled_kernels)


@dataclass(frozen=True)
class Params:
    e_mem: float
    fits: dict[str, KernelFit]
    token_s: float | None = API_TOKEN_S  # the API server's time per streamed token; None: no row fixed it
    first_s: float = FIRST_TOKEN_S  # a request's first token beyond the engine's steps (speed_sim first_s)


def in_cache(sent: int, n_in: int, n_out: int, kv_tokens: int) -> int:
    """Of a call's ``sent`` requests that the next call re-sends first, how many vLLM's prefix cache still holds
    (the repeated-prompts rule): all, if the call's tokens fit the KV cache; else none, since LRU eviction has
    dropped its oldest blocks, which are the ones re-sent first."""
    return sent if sent * (n_in + n_out) <= kv_tokens else 0


def cached_tokens(n_in: int) -> int:
    """Of a repeated prompt, the tokens the prefix cache serves (the rule): all but its last 16."""
    return n_in - 16


def binds_api(row: Row) -> bool:
    """A row the API server's term can be fitted to: a throughput run of a shape smaller than the 70B (whose
    engines outran the API server), as opposed to the 70B's, which never came near it."""
    return row.kind == "tput" and bool(row.model)


DEFAULT = Params(E_MEM, {k: v for k, v in FITS.items() if not v.like})  # speed.py's constants
# Where the fit starts: fixed round numbers, not speed.py's result, so that refitting reproduces it.
START = Params(0.7, {k: KernelFit(e_comp=0.5, floor_ms=20.0 if k in ("machete", "marlin") else 0.0)
                     for k in DEFAULT.fits}, first_s=0.0)


def spec_of(row: Row, spec: ModelSpec) -> ModelSpec:
    return lookup(row.model, None) if row.model else spec


def fit_of(p: Params, k: str) -> KernelFit:
    """A kernel's fitted constants, or those it borrows (speed.py's ``like``), as the planner uses them."""
    return p.fits[k] if k in p.fits else p.fits[FITS[k].like]


def engine_for(row: Row, spec: ModelSpec, p: Params) -> Engine:
    weights = int(row.weights_gib * GiB) if row.weights_gib else spec.weight_bytes(row.quant)
    return Engine(spec, get_gpu(row.gpu), row.kernel, weights, spec.kv_bytes_per_token(row.kv_bytes),
                  fit=fit_of(p, row.kernel), e_mem=p.e_mem)


def predict_row(row: Row, spec: ModelSpec, p: Params) -> float:
    if p.token_s is None:  # no run fixed the API server's term: it is left out (binds no 70B run)
        p = replace(p, token_s=0.0)
    spec = spec_of(row, spec)
    # Rows that differ only in what was measured share one simulation (the fit asks for many).
    kfit = fit_of(p, row.kernel)
    key = (replace(row, label="", measured=0.0, source="", cause="", profile="", kind="", first_seen=None), spec.name,
           p.e_mem, kfit, p.token_s, p.first_s)
    if key not in _CACHE:
        _CACHE[key] = _simulate(row, spec, p.e_mem, kfit, p.token_s, p.first_s)
    res = _CACHE[key]
    return res.out_tok_s if row.kind == "tput" else res.ttft_s * 1000


_CACHE: dict = {}


def _simulate(row: Row, spec: ModelSpec, e_mem: float, kfit: KernelFit, token_s: float, first_s: float):
    eng = engine_for(row, spec, Params(e_mem, {row.kernel: kfit}))  # spec: already the row's
    load = Load(row.n_in, row.n_out, row.clients, row.requests,
                cached_in=cached_tokens(row.n_in) if row.cached_requests else 0, cached_requests=row.cached_requests)
    return simulate(load, eng.step_seconds, max_num_seqs=row.max_num_seqs,
                    max_num_batched_tokens=row.max_num_batched_tokens, kv_tokens=row.kv_tokens, token_s=token_s,
                    first_s=first_s)


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int = 14) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return (a + b) / 2


def loss(rows: Iterable[Row], spec: ModelSpec, p: Params) -> float:
    errs = [math.log(predict_row(r, spec, p) / r.measured) ** 2 for r in rows]
    return sum(errs) / max(1, len(errs))


def fit(rows: list[Row], spec: ModelSpec, start: Params = START, sweeps: int = 3) -> Params:
    """E_MEM and each kernel's E_COMP and FLOOR (4-bit kernels, from that kernel's rows only) from the 70B's
    rows, the shape every fitted kernel ran at; the API server's time per token from every row, where some row
    can fix it (``binds_api``), else None.
    The smaller shapes' throughput rows (8B, 3B) fit the API server's term only: their engines are bound by it or by
    bandwidth, so they would leave a kernel's compute efficiency unfixed (and an FP8 8B run beside the 70B's
    would move FP8's constants for the 70B). Rows of a kernel whose constants are borrowed (speed.py's
    ``like``: BF16 today) never fit a kernel's constants either: the planner meets them with the borrowed ones."""
    every = rows
    rows = [r for r in rows if not FITS[r.kernel].like and not r.model]
    kernels = sorted({r.kernel for r in rows})
    known = [r for r in every if r.kernel in kernels or FITS[r.kernel].like in kernels]  # kernels this fit has
    # the API server's term: fitted where some row can fix it (binds_api), on those rows and the 70B's, not on the
    # smaller shapes' TTFT rows (one token streamed: the first-token term below is what they fix)
    seen = [r for r in known if binds_api(r) or not r.model]
    api = any(binds_api(r) for r in seen)
    # a first token's fixed cost (speed_sim first_s): every single-stream TTFT row, any shape — what it measures
    # does not scale with the model (the 8B's and 3B's 256-token prompts: 6-10 ms over FLOPs in the engine, 4-6 ms
    # in the API server)
    firsts = [r for r in known if r.kind == "ttft"]
    p = Params(start.e_mem, {k: start.fits[k] for k in kernels}, 0.0 if api else None, start.first_s)
    for _ in range(sweeps):
        for k in kernels:
            mine = [r for r in rows if r.kernel == k]
            four_bit = k in ("machete", "marlin")

            def with_(**kw) -> Params:
                return replace(p, fits=p.fits | {k: replace(p.fits[k], **kw)})

            p = with_(e_comp=_golden(lambda x: loss(mine, spec, with_(e_comp=x)), 0.2, 1.0))
            if four_bit:
                p = with_(floor_ms=_golden(lambda x: loss(mine, spec, with_(floor_ms=x)), 5.0, 40.0))
        p = replace(p, e_mem=_golden(lambda x: loss(rows, spec, replace(p, e_mem=x)), 0.3, 1.0))
        if api:
            p = replace(p, token_s=_golden(lambda x: loss(seen, spec, replace(p, token_s=x)), 0.0, 600e-6))
        if firsts:
            p = replace(p, first_s=_golden(lambda x: loss(firsts, spec, replace(p, first_s=x)), 0.0, 0.05))
    return p


@dataclass(frozen=True)
class Fold:
    name: str
    held_out: Callable[[Row], bool]


@dataclass(frozen=True)
class Outcome:
    fold: str
    row: Row
    held_out: bool
    predicted: float | None  # None: the row's kernel had no fitted row in this fold
    error: float | None


def cross_validate(rows: list[Row], folds: list[Fold], fit_fn: Callable[[list[Row]], object],
                   predict_fn: Callable[[Row, object], float | None]) -> list[Outcome]:
    """Every row in every fold: fitted (outside the fold) or held out (inside), with its prediction."""
    out = []
    for fold in folds:
        train = [r for r in rows if not fold.held_out(r)]
        params = fit_fn(train)
        for r in rows:
            pred = predict_fn(r, params)
            out.append(Outcome(fold.name, r, fold.held_out(r), pred, None if pred is None else pred / r.measured - 1))
    return out


@dataclass(frozen=True)
class Verdict:
    row: Row
    held_out_errors: dict[str, float]  # fold name → error, folds where the row was held out and predicted
    worst: float | None  # the held-out error largest in magnitude
    status: str  # "within", "explained", "miss" or "not predicted"


def summarize(outcomes: list[Outcome], band: float | dict[str, float]) -> list[Verdict]:
    """Per row: its held-out errors; within the band (one for all, or one per row kind), outside with a
    measured cause, or a miss."""
    by_row: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_row.setdefault(o.row.label, []).append(o)
    verdicts = []
    for os_ in by_row.values():
        row = os_[0].row
        errs = {o.fold: o.error for o in os_ if o.held_out and o.error is not None}
        if not errs:
            verdicts.append(Verdict(row, {}, None, "not predicted"))
            continue
        worst = max(errs.values(), key=abs)
        limit = band[row.kind] if isinstance(band, dict) else band
        status = "within" if abs(worst) <= limit else ("explained" if row.cause else "miss")
        verdicts.append(Verdict(row, errs, worst, status))
    return verdicts
