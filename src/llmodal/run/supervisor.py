"""One supervisor for a vLLM server process, used by ``llmodal serve`` and the Modal container.

Start it in its own process group (so a stop reaches the engine and worker processes too),
stream its output to a sink (a log file, the container's stdout, or both), wait for
``/health``, diagnose a death in one line, and drain on SIGTERM/SIGINT.
"""

from __future__ import annotations

import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

from llmodal.core.errors import ServerStartError
from llmodal.engine.diagnostics import diagnose
from llmodal.run.health import HealthTimeout, ProcessDied, health_url, wait_healthy
from llmodal.engine.launch import Launch


def say(msg: str) -> None:
    """One line to the container's log (Modal shows stdout): ``llmodal: …``, flushed at once. One write with its
    newline: the image runs Python unbuffered (PYTHONUNBUFFERED), where print's text and newline are two writes,
    and vLLM's processes share the stream: a log line of theirs landed between the two."""
    sys.stdout.write(f"llmodal: {msg}\n")
    sys.stdout.flush()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "::") else "0.0.0.0", port))
        except OSError:
            return False
    return True


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the forked child calls it and nothing else
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _term_when_parent_dies() -> None:
    # Between fork and exec in the child; kept through exec. The signal comes when the *thread* that forked dies,
    # hence only for a start from the main thread (Supervisor.start).
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """One vLLM server process. Use as a context manager, or call start/wait_ready/stop."""

    def __init__(self, launch: Launch, log_path: Path | None = None, *, echo: IO[str] | None = None,
                 env: dict[str, str] | None = None, die_with_parent: bool = False) -> None:
        self.launch = launch
        # vLLM runs in a session of its own (a stop must reach its engine and workers), so nothing ends it when
        # this process is killed (kill -9, a closed terminal's SIGHUP): it would hold the port and the memory.
        # With die_with_parent it gets SIGTERM then and shuts its engine down. Only `llmodal serve` asks for it.
        self.die_with_parent = die_with_parent and _prctl is not None
        self.log_path = Path(log_path) if log_path else None
        self.echo = echo  # e.g. sys.stdout in the container, where Modal collects the log
        self._env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=400)
        self._reader: threading.Thread | None = None
        self.started_at = 0.0
        self.stopping = False  # a stop was asked for: the exit that follows is not a death
        self.hung_s = 0.0  # set when wait_dead ended a server that answered /health with errors

    @property
    def root(self) -> str:
        return self.launch.base_url.removesuffix("/v1")

    def start(self) -> None:
        if not port_free(self.launch.host, self.launch.port):
            raise ServerStartError(f"port {self.launch.port} on {self.launch.host} is already in use: "
                                   "stop the other server or pass --port")
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._tail.clear()
        self.stopping = False
        self.hung_s = 0.0
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.launch.argv, env=self.launch.child_env(self._env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=self._preexec())
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _preexec(self) -> Callable[[], None] | None:
        main = threading.current_thread() is threading.main_thread()
        return _term_when_parent_dies if self.die_with_parent and main else None

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        log = self.log_path.open("ab") if self.log_path else None
        try:
            for raw in self.proc.stdout:
                if log:
                    log.write(raw)
                    log.flush()
                line = raw.decode("utf-8", "replace")
                if self.echo:
                    self.echo.write(line)
                    self.echo.flush()
                self._tail.append(line.rstrip("\n"))
        finally:
            if log:
                log.close()

    def last_line(self) -> str:
        return self._tail[-1] if self._tail else ""

    def tail(self) -> str:
        return "\n".join(self._tail)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def diagnosis(self) -> str:
        """One line: why the process exited. Only called for exits nobody asked for: vLLM's API
        server exits 0 after its engine dies, so the code alone does not say it was clean."""
        if self._reader:
            self._reader.join(timeout=5)
        cause = diagnose(self.tail()).message
        if self.hung_s:
            cause += f" (its API server kept answering /health with an error for {self.hung_s:.0f} s: stopped)"
        return cause

    def wait_ready(self, timeout: float, on_tick: Callable[[float, str], None] | None = None) -> float:
        """Block until /health answers 200; return seconds since start. Raise ServerStartError
        with a one-line cause if the process exits or the deadline passes."""
        left = timeout - (time.monotonic() - self.started_at)
        tick = (lambda s: on_tick(time.monotonic() - self.started_at, self.last_line())) if on_tick else None
        try:
            wait_healthy(health_url(self.root), left, alive=self.alive, on_tick=tick, interval=0.5, cap=1.0)
        except ProcessDied:
            raise ServerStartError(self.diagnosis()) from None
        except HealthTimeout:
            self.stop()
            raise ServerStartError(f"vLLM did not answer /health within {timeout:.0f} s "
                                   f"(last line: {self.last_line()[:200]})") from None
        return time.monotonic() - self.started_at

    def wait_dead(self, unhealthy_s: float = 15.0, poll_s: float = 1.0) -> int:
        """Block until the server is gone: its process exited, or it kept answering /health with an
        error for ``unhealthy_s`` (then its group is killed). vLLM's API server normally exits within
        seconds of its engine's death, but a CI run saw it answer 503 for ten minutes instead (its
        watchdog did not end it). Only answers count: a slow or refused probe is not a verdict, and
        a stop someone asked for is waited out."""
        assert self.proc
        since = None
        while self.alive():
            time.sleep(poll_s)
            if self.stopping:
                continue
            try:
                ok = httpx.get(health_url(self.root), timeout=2).status_code == 200
            except httpx.HTTPError:  # refused, reset or timed out: no answer
                continue
            since = None if ok else (since or time.monotonic())
            if since is not None and time.monotonic() - since >= unhealthy_s and self.alive():
                self.hung_s = time.monotonic() - since
                self.send(signal.SIGKILL)
                return self.proc.wait()
        return self.proc.returncode

    def send(self, sig: int) -> None:
        if self.alive():
            assert self.proc
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the API server (it drains for ``--shutdown-timeout`` and stops its engine),
        then SIGKILL the whole group after ``grace`` seconds."""
        if self.proc is None:
            return None
        self.stopping = True
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.send(signal.SIGKILL)
                self.proc.wait(timeout=10)
        # Engine and worker processes share the group; make sure none outlives the server.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reader:
            self._reader.join(timeout=5)
        return self.proc.returncode

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

