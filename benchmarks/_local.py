"""Start one local CPU-engine vLLM (tiny model) for a benchmark script, via llmodal's own launcher."""

from __future__ import annotations

import socket
import sys
from contextlib import contextmanager
from pathlib import Path

KEY = "bench-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_server(model: Path, *, served: str, max_model_len: int = 2048, kv_cache_bytes: int | None = None,
                 gpu_memory_utilization: float = 0.2, env: dict[str, str] | None = None, log: Path | None = None,
                 **kw):
    from llmodal.core.config import load_settings
    from llmodal.run.supervisor import Supervisor
    from llmodal.core.state import cache_dir
    from llmodal.engine.launch import build_launch

    settings = load_settings(None, model=str(model), max_model_len=max_model_len,
                             gpu_memory_utilization=gpu_memory_utilization, **kw)
    port = free_port()
    launch = build_launch(settings, served_model_name=served, api_key=KEY, port=port, python=sys.executable,
                          kv_cache_bytes=kv_cache_bytes)
    proc = Supervisor(launch, log or cache_dir() / "logs" / f"bench-{port}.log", env=env)
    proc.start()
    try:
        took = proc.wait_ready(900)
        print(f"# server up after {took:.0f} s: {launch.shell()}", file=sys.stderr)
        yield proc
    finally:
        proc.stop()
