"""Run the real vLLM server as a child process: start, wait for /health, supervise, stop.

The child gets its own process group so Ctrl-C (or SIGTERM) stops vLLM *and* its engine
and worker processes. Its output goes to a log file; startup failures are read back from it
and classified by ``diagnostics``.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ._exceptions import ServerStartError
from .diagnostics import diagnose
from .vllm_args import Launch


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "::") else "0.0.0.0", port))
        except OSError:
            return False
    return True


def healthy(base: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


class VLLMProcess:
    """One vLLM server process. Use as a context manager, or call start/wait_ready/stop."""

    def __init__(self, launch: Launch, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.launch = launch
        self.log_path = Path(log_path)
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self.started_at = 0.0

    @property
    def root(self) -> str:
        return self.launch.base_url.removesuffix("/v1")

    def start(self) -> None:
        if not port_free(self.launch.host, self.launch.port):
            raise ServerStartError(f"port {self.launch.port} on {self.launch.host} is already in use: "
                                   "stop the other server or pass --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._tail.clear()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.launch.argv, env=self.launch.child_env(self._env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        with self.log_path.open("ab") as log:
            for raw in self.proc.stdout:
                log.write(raw)
                log.flush()
                self._tail.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def last_line(self) -> str:
        return self._tail[-1] if self._tail else ""

    def tail(self) -> str:
        return "\n".join(self._tail)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float, on_tick: Callable[[float, str], None] | None = None) -> float:
        """Block until /health answers 200; return seconds since start. Raise ServerStartError
        with a one-line cause if the process exits or the deadline passes."""
        deadline = self.started_at + timeout
        while True:
            elapsed = time.monotonic() - self.started_at
            if on_tick:
                on_tick(elapsed, self.last_line())
            if not self.alive():
                if self._reader:
                    self._reader.join(timeout=5)
                raise ServerStartError(diagnose(self.tail()).message, self.tail())
            if healthy(self.root, timeout=1.0):
                return elapsed
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"vLLM did not answer /health within {timeout:.0f} s "
                                       f"(last line: {self.last_line()[:200]})", self.tail())
            time.sleep(0.5)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM the API server (it drains for ``--shutdown-timeout`` and stops its engine),
        then SIGKILL the whole group after ``grace`` seconds."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Engine and worker processes share the group; make sure none outlives the server.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reader:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> VLLMProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
