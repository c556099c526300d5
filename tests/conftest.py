"""Shared fixtures. One real vLLM server (CPU engine, generated tiny model) per test session."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-0123456789abcdef"


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
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_model(_isolated_dirs) -> Path:
    from llmodal.tiny_model import ensure_tiny_model

    return ensure_tiny_model()


def start_server(model: Path, port: int, key: str | None = TEST_KEY, extra: list[str] | None = None,
                 log: Path | None = None, **settings_kw):
    from llmodal.config import load_settings
    from llmodal.supervisor import Supervisor
    from llmodal.tiny_model import SERVED_NAME
    from llmodal.launch import build_launch

    settings = load_settings(None, model=str(model), max_model_len=2048, gpu_memory_utilization=0.2,
                             **settings_kw)
    launch = build_launch(settings, served_model_name=SERVED_NAME, api_key=key or "", port=port,
                          python=sys.executable, extra=extra)
    return Supervisor(launch, log or Path(os.environ["LLMODAL_CACHE_DIR"]) / "logs" / f"test-{port}.log")


@pytest.fixture(scope="session")
def server(tiny_model):
    """A running vLLM server: yields an llmodal Endpoint (base_url, key, model)."""
    pytest.importorskip("vllm")
    from llmodal.client import Endpoint
    from llmodal.tiny_model import SERVED_NAME

    proc = start_server(tiny_model, free_port())
    proc.start()
    try:
        proc.wait_ready(600)
        yield Endpoint(proc.launch.base_url, TEST_KEY, SERVED_NAME)
    finally:
        proc.stop()
