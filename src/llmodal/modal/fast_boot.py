"""Fast boot from zero: start vLLM before Modal's memory snapshot, asleep; wake it after restore.

``LLMODAL_FAST_BOOT=snapshot`` turns the Modal server into a class whose ``@modal.enter(snap=True)``
calls ``FastBoot.prepare_snapshot`` (start with sleep mode through the same launcher and
supervisor, wait for health, warm up with a full-length prompt so every compiled shape exists,
then ``/sleep``: the weights go to host memory, which the snapshot keeps) and whose
``@modal.enter(snap=False)`` calls ``restore`` (``/wake_up``, wait for health).

The sleep/wake routes are vLLM's development routes. They answer only the container's own
control key (``LLMODAL_CONTROL_KEY``, made by ``build_launch``, never shown): a client's key gets 403
on them, and on every other development route. The client keys live in a file (``keys_file``) the
middleware re-reads when it changes: ``restore`` rewrites it from the secret as it is at restore
time, so a key removed after the snapshot was taken stops working.
Where vLLM has no sleep mode (the CPU engine in the rehearsal) the hooks still run and log that
sleep is skipped.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx

from llmodal.run.health import health_url, wait_healthy
from llmodal.engine.prepare import Prepared
from llmodal.modal.spec import STOP_MARGIN_S
from llmodal.run.supervisor import Supervisor, say


def keys_file(settings, fast_boot: bool) -> str | None:
    """Fast boot serves the client keys from a file it rewrites at restore (None: public, or no fast boot)."""
    if not (fast_boot and settings.api_keys()):
        return None
    return str(Path(os.environ.get("LLMODAL_RUN_DIR") or "/tmp/llmodal") / "api-keys")


def write_keys(path: str, keys: list[str]) -> None:
    """Replace the keys file in one step (the middleware never reads half a file), owner-only."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(keys) + "\n")
    os.replace(tmp, target)


class FastBoot:
    """The snapshot-side and restore-side steps on one supervisor. ``timings`` records each step."""

    def __init__(self, prep: Prepared, *, gpu: bool) -> None:
        self.prep, self.gpu = prep, gpu
        # Made by build_launch (control_key=True, which the container asks for with fast boot).
        self.control_key = prep.launch.env["LLMODAL_CONTROL_KEY"]
        self.keys_file = prep.launch.env.get("LLMODAL_API_KEYS_FILE")
        if self.keys_file:
            write_keys(self.keys_file, prep.settings.api_keys())
        self.sup = Supervisor(prep.launch, echo=sys.stdout)
        self.timings: dict[str, float] = {}
        self.slept = False

    @property
    def root(self) -> str:
        return self.sup.root

    def _timed(self, name: str, fn) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - t0, 2)
        say(f"fast boot: {name}: {self.timings[name]} s")

    def _control(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.root + path, headers={"Authorization": f"Bearer {self.control_key}"},
                          timeout=600, **kw)
        r.raise_for_status()
        return r

    def prepare_snapshot(self, startup_timeout: float = 1800) -> None:
        """Start, wait for health, warm up, sleep. Runs in ``@modal.enter(snap=True)``."""
        self._timed("start_to_health", lambda: (self.sup.start(), self.sup.wait_ready(startup_timeout)))
        self._timed("warm_up", self.warm_up)
        if not self.gpu:
            say("fast boot: sleep skipped: this engine has no sleep mode (CPU); the snapshot would hold it awake")
            return
        self._timed("sleep", lambda: self._control("POST", "/sleep", params={"level": 1}))
        self.slept = True

    def warm_up(self) -> None:
        """One full-length prompt (so every compiled shape exists) and a short one. Raises on any non-2xx."""
        s = self.prep.settings
        # Never past the guard's body limit (a 413 here would fail every snapshot): 6 bytes a word,
        # and room for the rest of the JSON.
        words = max(1, min(s.max_model_len, (s.max_body_bytes - 1024) // 6))
        body = {"model": self.prep.served_name, "prompt": "hello " * words, "max_tokens": 1,
                "truncate_prompt_tokens": s.max_model_len - 1}
        self._control("POST", "/v1/completions", json=body)
        self._control("POST", "/v1/completions", json=dict(body, prompt="hello", truncate_prompt_tokens=None))

    def restore(self, timeout: float = 300, keys: list[str] | None = None) -> None:
        """Serve the keys of now, wake and wait for health. Runs in ``@modal.enter(snap=False)``.
        ``keys``: the client keys the secret holds at restore time (the container reads them)."""
        if self.keys_file and keys is not None:
            write_keys(self.keys_file, keys)
            say(f"fast boot: serving {len(keys)} client key(s) read at restore")
        if self.slept:
            self._timed("wake", lambda: self._control("POST", "/wake_up"))
            self.slept = False
        self._timed("health_after_restore", lambda: wait_healthy(health_url(self.root), timeout,
                                                                 alive=self.sup.alive, cap=0.2, interval=0.05))

    def stop(self) -> None:
        self.sup.stop(grace=self.prep.settings.drain_timeout_s + STOP_MARGIN_S)
