"""The Modal container rehearsed here: its own entrypoint, run the way Modal runs it.

Two things are swapped and nothing else: the Volume mount paths become temp dirs, and the
secret's keys are put in the environment. The rest — the App's container environment (the one
handed-over settings value), the entrypoint, the supervisor, the guard — is the code Modal runs.
Rows of docs/RELIABILITY.md come from the RECORD lines.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TEST_KEY, LongStream, engine_core, free_port, supervised_by

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


class HubListener:
    """Stands in for the Hugging Face hub (HF_ENDPOINT): counts who connects."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.connections = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while True:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                pass

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"


def container_env(tiny_model, port, volumes: Path, hub: HubListener, secret: dict) -> dict:
    """What Modal gives the container: the App's env (from modal_spec, as deployed) + the secret."""
    from llmodal.config import load_settings
    from llmodal.modal_spec import HF_CACHE_PATH, VLLM_CACHE_PATH, container_env as app_env

    settings = load_settings(None, model=str(tiny_model), max_model_len=2048, gpu_memory_utilization=0.2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_", "HF_"))}
    env.update(app_env(settings))
    handed = json.loads(env["LLMODAL_SETTINGS"])
    handed["port"] = port  # the web port, moved off 8000 so tests can run beside a dev server
    env["LLMODAL_SETTINGS"] = json.dumps(handed)
    # Volume mounts → temp dirs (same layout)
    env["HF_HOME"] = str(volumes / Path(HF_CACHE_PATH).name)
    env["VLLM_CACHE_ROOT"] = str(volumes / Path(VLLM_CACHE_PATH).name)
    env["HF_ENDPOINT"] = hub.url
    env.update(secret)
    return env


class Container:
    def __init__(self, env, log: Path):
        self.log = log
        self.f = log.open("w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "llmodal.modal_runtime"], env=env, cwd=ROOT,
                                     stdout=self.f, stderr=subprocess.STDOUT)

    def text(self):
        return self.log.read_text()

    def wait_healthy(self, port, timeout=600):
        from llmodal._exceptions import EndpointError
        from llmodal.health import wait_healthy

        try:
            return wait_healthy(f"http://127.0.0.1:{port}/health", timeout, alive=lambda: self.proc.poll() is None)
        except EndpointError as e:
            raise AssertionError(f"{e}\n{self.text()[-3000:]}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for p in supervised_by(self.proc.pid):
            p.kill()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return tmp_path_factory.mktemp("volumes")


SECRET = {"VLLM_SERVER_API_KEY": TEST_KEY, "HUGGING_FACE_HUB_TOKEN": "hf_rehearsal_dummy"}


def _smoke(port, model):
    from llmodal.client import Endpoint
    from llmodal.smoke import run_smoke

    return run_smoke(Endpoint(f"http://127.0.0.1:{port}/v1", TEST_KEY, model), max_tokens=16)


@pytest.mark.parametrize("phase", ["cold", "warm"])
def test_cold_then_warm_start_pass_smoke_without_the_hub(tiny_model, volumes, tmp_path, phase):
    hub = HubListener()
    port = free_port()
    c = Container(container_env(tiny_model, port, volumes, hub, SECRET), tmp_path / "container.log")
    try:
        took = c.wait_healthy(port)
        checks = _smoke(port, str(tiny_model))
        assert all(c.ok for c in checks), [(x.name, x.detail) for x in checks if not x.ok]
        assert hub.connections == 0
        assert "llmodal: command:" in c.text() and TEST_KEY not in c.text()
        print(f"RECORD container-{phase} | healthy after {took:.0f} s | smoke {len(checks)}/{len(checks)} "
              f"| hub connections {hub.connections}")
    finally:
        c.kill()


def test_sigint_during_a_stream_drains_and_exits_in_time(tiny_model, volumes, tmp_path):
    port = free_port()
    c = Container(container_env(tiny_model, port, volumes, HubListener(), SECRET), tmp_path / "container.log")
    try:
        c.wait_healthy(port)
        s = LongStream(f"http://127.0.0.1:{port}", model=str(tiny_model))
        s.start()
        assert s.first_token.wait(60)
        t0 = time.monotonic()
        c.proc.send_signal(signal.SIGINT)  # Modal's preemption signal
        code = c.proc.wait(timeout=40)
        took = time.monotonic() - t0
        s.join(timeout=30)
        assert took < 25, took
        assert s.end in ("done", "error") and not s.end.startswith("error:"), s.end  # ended, not hung or reset
        assert code == 0, c.text()[-2000:]
        assert supervised_by(c.proc.pid) == []
        print(f"RECORD container-sigint | exited {code} after {took:.1f} s | in-flight stream: {s.end}")
    finally:
        c.kill()


def test_engine_death_exits_nonzero_with_one_line(tiny_model, volumes, tmp_path):
    port = free_port()
    c = Container(container_env(tiny_model, port, volumes, HubListener(), SECRET), tmp_path / "container.log")
    try:
        c.wait_healthy(port)
        engine_core(c.proc.pid).kill()
        t0 = time.monotonic()
        code = c.proc.wait(timeout=60)
        line = [x for x in c.text().splitlines() if x.startswith("llmodal: vLLM exited")]
        assert code != 0 and line, c.text()[-2000:]
        print(f"RECORD container-engine-death | exit {code} after {time.monotonic() - t0:.1f} s | {line[-1][:160]}")
    finally:
        c.kill()


def test_a_keyless_secret_refuses_to_start_with_the_fix(tiny_model, volumes, tmp_path):
    port = free_port()
    c = Container(container_env(tiny_model, port, volumes, HubListener(), {"HUGGING_FACE_HUB_TOKEN": "hf_x"}),
                  tmp_path / "container.log")
    code = c.proc.wait(timeout=120)
    text = c.text()
    assert code != 0 and "refusing to start" in text and "modal secret create vllm-secrets" in text, text
    assert "VLLM_SERVER_API_KEY=" in text and "command:" not in text
    print(f"RECORD container-keyless | exit {code} | vLLM never started")
