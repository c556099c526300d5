"""The Modal App, checked offline through the modal SDK's own objects, and its serve body run here."""

import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
modal = pytest.importorskip("modal")


def load_app(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("modal_vllm", None)
    return importlib.import_module("modal_vllm")


def sdk_view(fn):
    """What modal would send for a function: its info(), web config and autoscaler settings."""
    from modal._utils.async_utils import synchronizer

    impl = synchronizer._translate_in(fn)
    loader = impl._load
    closure = dict(zip(loader.__code__.co_freevars, (c.cell_contents for c in loader.__closure__)))
    return fn.info(), impl._webhook_config, closure["autoscaler_settings"], closure


def test_default_app_is_the_guides(monkeypatch):
    m = load_app(monkeypatch)
    assert m.app.name == "vllm-llama70b"
    info, web, autoscale, raw = sdk_view(m.serve_vllm)
    assert raw["tag"] == "serve_vllm"  # URL label serve-vllm: https://WS--vllm-llama70b-serve-vllm.modal.run
    assert info.gpus == [("A100-80GB", 1)]
    assert info.timeout == 24 * 3600
    assert autoscale.scaledown_window == 15 * 60 and autoscale.min_containers == 0 and autoscale.max_containers == 1
    assert web.web_server_port == 8000 and web.web_server_startup_timeout == 1200
    assert info.concurrency_info.max_inputs == 64
    assert "modal.Secret.from_name('vllm-secrets')" in info.secrets
    assert {p: v.name for p, v in info.volumes.items()} == {
        "/root/.cache/huggingface": "llmodal-hf-cache", "/root/.cache/vllm": "llmodal-vllm-cache"}
    handed = json.loads(m.spec.container_env["LLMODAL_SETTINGS"])
    assert handed["model"] == "meta-llama/Llama-3.1-70B-Instruct" and handed["port"] == 8000
    assert "server_api_key" not in handed  # from the secret only
    assert m.spec.container_env["VLLM_USE_FLASHINFER_SAMPLER"] == "0"
    dl_info, _, _, _ = sdk_view(m.download)
    assert dl_info.volumes.keys() == info.volumes.keys()


def test_env_overrides_reach_the_app_and_the_container(monkeypatch):
    m = load_app(monkeypatch, VLLM_MODEL="Qwen/Qwen2.5-72B-Instruct", LLMODAL_GPU="H100", LLMODAL_GPU_COUNT="2",
                 LLMODAL_SCALEDOWN_WINDOW="300", LLMODAL_MAX_CONCURRENT_INPUTS="16", VLLM_MAX_MODEL_LEN="16384",
                 VLLM_SERVER_API_KEY="must-not-travel-in-env-1234")
    info, web, autoscale, _ = sdk_view(m.serve_vllm)
    assert info.gpus == [("H100", 2)] and autoscale.scaledown_window == 300
    assert info.concurrency_info.max_inputs == 16
    env = m.spec.container_env
    assert not any("must-not-travel" in v for v in env.values())
    # The container reads the same settings back from the one value, whatever its own env says.
    from llmodal.config import from_handoff

    monkeypatch.setenv("VLLM_MODEL", "something-else")
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "from-the-secret-1234")
    s = from_handoff(env["LLMODAL_SETTINGS"])
    assert (s.model, s.gpu, s.gpu_count, s.tp, s.max_model_len, s.host) == (
        "Qwen/Qwen2.5-72B-Instruct", "H100", 2, 2, 16384, "0.0.0.0")
    assert s.api_key() == "from-the-secret-1234"


def test_every_setting_travels_including_the_deployers_choices(monkeypatch):
    m = load_app(monkeypatch, LLMODAL_FORCE="true", LLMODAL_PUBLIC="true", LLMODAL_MAX_BODY_BYTES="4096",
                 LLMODAL_METRICS_PUBLIC="true")
    from llmodal.config import Settings, from_handoff

    handed = json.loads(m.spec.container_env["LLMODAL_SETTINGS"])
    assert set(handed) == set(Settings.model_fields) - {"server_api_key"}
    s = from_handoff(m.spec.container_env["LLMODAL_SETTINGS"])
    assert (s.force, s.public, s.max_body_bytes, s.metrics_public) == (True, True, 4096, True)


@pytest.mark.parametrize("text,needle", [
    ('{"max_model_len": 3}', "VLLM_MAX_MODEL_LEN"), ("[1]", "JSON object"), ("{nope", "JSON object"),
    ('{"flux_capacitor": 1}', "unknown fields")])
def test_a_bad_handoff_fails_with_the_fields_message(text, needle):
    from llmodal._exceptions import ConfigError
    from llmodal.config import from_handoff

    with pytest.raises(ConfigError, match=needle):
        from_handoff(text)


def test_image_requirements_resolve_for_the_image_platform(tmp_path):
    from llmodal.modal_spec import IMAGE_REQUIREMENTS, PYTHON_VERSION

    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in range(5, 37)]  # bookworm: glibc 2.36
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--only-binary=:all:", f"--python-version={PYTHON_VERSION}", "--implementation=cp",
                        *platforms, "--platform=manylinux2014_x86_64", "--platform=any",
                        "--target", str(tmp_path / "t"), "--report", str(tmp_path / "r.json"),
                        *IMAGE_REQUIREMENTS], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in json.loads((tmp_path / "r.json").read_text())["install"]}
    assert installs["vllm"] == "0.32.0" and "torch" in installs


class Listener:
    """A TCP port standing in for Modal's API: counts who connects."""

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


def _deploy(tmp_path, listener, extra_env, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"), MODAL_SERVER_URL=listener.url,
               **extra_env)
    return subprocess.run([sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", "", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


TOKEN = {"MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test"}
KEY = {"VLLM_SERVER_API_KEY": "server-key-0123456789"}


@pytest.mark.parametrize("extra,needle", [
    (KEY, "modal token new"),
    ({**TOKEN, **KEY, "VLLM_QUANTIZATION": "none"}, "the plan does not fit"),
    (TOKEN, "no server key"),
])
def test_deploy_refuses_before_sending_anything(tmp_path, extra, needle):
    listener = Listener()
    r = _deploy(tmp_path, listener, extra)
    listener.stop = True
    assert r.returncode == 2 and needle in r.stderr and "nothing was sent" in r.stderr, r.stderr
    assert listener.connections == 0


def test_deploy_with_preflight_passing_runs_modal_deploy(tmp_path):
    listener = Listener()
    r = _deploy(tmp_path, listener, {**TOKEN, **KEY})
    time.sleep(0.3)
    listener.stop = True
    assert "plan: hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4" in r.stdout
    assert listener.connections > 0  # the real `modal deploy modal_vllm.py` reached for Modal's API
    assert r.returncode != 0 and "server-key-0123456789" not in r.stdout + r.stderr
