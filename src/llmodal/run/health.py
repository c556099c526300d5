"""One wait for ``/health``, in a blocking and an async form that share their policy.

Used by the supervisor (a starting vLLM), the client transports (a cold Modal endpoint),
``llmodal bench`` and ``llmodal status --probe``. The policy lives in ``HealthWait``: how long
to sleep between probes (backoff with jitter, capped), when to give up, and when to stop
early because the process that should answer has died.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from llmodal.core.errors import EndpointError


class HealthTimeout(EndpointError):
    """/health did not answer 200 in time."""


class ProcessDied(EndpointError):
    """The process that should answer /health exited while we waited."""


def health_url(root: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` → ``http://host:port/health``."""
    root = root.rstrip("/")
    return root.removesuffix("/v1") + "/health"


class HealthWait:
    """The shared policy. ``interval`` is the first sleep; it grows ×2 up to ``cap`` with jitter."""

    def __init__(self, timeout: float, *, interval: float = 0.5, cap: float = 5.0,
                 alive: Callable[[], bool] | None = None,
                 on_tick: Callable[[float], None] | None = None) -> None:
        self.timeout, self.interval, self.cap = timeout, interval, cap
        self.alive, self.on_tick = alive, on_tick
        self.t0 = time.monotonic()
        self._attempt = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def before_probe(self) -> None:
        if self.on_tick:
            self.on_tick(self.elapsed())
        if self.alive is not None and not self.alive():
            raise ProcessDied(f"the server process exited after {self.elapsed():.0f} s")

    def next_sleep(self, url: str) -> float:
        """Seconds to sleep before the next probe; raise HealthTimeout when the time is up."""
        left = self.timeout - self.elapsed()
        if left <= 0:
            raise HealthTimeout(f"{url} did not answer 200 within {self.timeout:.0f} s")
        delay = min(self.cap, self.interval * 2**self._attempt) * (0.75 + random.random() / 4)
        self._attempt += 1
        return min(delay, left)


def wait_healthy(url: str, timeout: float, *, probe: Callable[[], bool] | None = None, **kw) -> float:
    """Block until ``url`` answers 200; return the seconds waited."""
    w = HealthWait(timeout, **kw)

    def default_probe() -> bool:
        try:
            return httpx.get(url, timeout=min(5.0, max(timeout, 0.5))).status_code == 200
        except httpx.HTTPError:
            return False

    probe = probe or default_probe
    while True:
        w.before_probe()
        if probe():
            return w.elapsed()
        time.sleep(w.next_sleep(url))


async def async_wait_healthy(url: str, timeout: float, *, probe: Callable[[], Awaitable[bool]] | None = None,
                             **kw) -> float:
    """The same wait for asyncio code."""
    w = HealthWait(timeout, **kw)

    async def default_probe() -> bool:
        try:
            async with httpx.AsyncClient(timeout=min(5.0, max(timeout, 0.5))) as c:
                return (await c.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    probe = probe or default_probe
    while True:
        w.before_probe()
        if await probe():
            return w.elapsed()
        await asyncio.sleep(w.next_sleep(url))
