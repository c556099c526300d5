"""The Modal container rehearsed here: its own entrypoint, run the way Modal runs it.

Two things are swapped and nothing else: the Volume mount paths become temp dirs, and the
secret's keys are put in the environment. The rest — the App's container environment (the one
handed-over settings value), the entrypoint, the supervisor, the guard — is the code Modal runs.
Rows of docs/RELIABILITY.md come from the RECORD lines.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (TEST_ENGINE_ENV, TEST_KEY, TEST_MEMORY_FRACTION, TEST_VLLM_ARGS, Listener, LongStream,
                      engine_core, free_port, in_sessions, server_sessions)

pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[2]


def container_env(tiny_model, port, volumes: Path, hub: Listener, secret: dict, fast_boot: str = "off",
                  **settings_kw) -> dict:
    """What Modal gives the container: the App's env (from modal_spec, as deployed) + the secret."""
    from llmodal.core.config import load_settings
    from llmodal.modal.spec import HF_CACHE_PATH, VLLM_CACHE_PATH, container_env as app_env

    settings_kw.setdefault("extra_args", TEST_VLLM_ARGS)
    settings = load_settings(None, model=str(tiny_model), max_model_len=2048,
                             gpu_memory_utilization=TEST_MEMORY_FRACTION, fast_boot=fast_boot, **settings_kw)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_", "HF_"))}
    env.update(app_env(settings))
    env.update(TEST_ENGINE_ENV)
    handed = json.loads(env["LLMODAL_SETTINGS"])
    handed["port"] = port  # the web port, moved off 8000 so tests can run beside a dev server
    env["LLMODAL_SETTINGS"] = json.dumps(handed)
    # Volume mounts → temp dirs (same layout)
    env["HF_HOME"] = str(volumes / Path(HF_CACHE_PATH).name)
    env["VLLM_CACHE_ROOT"] = str(volumes / Path(VLLM_CACHE_PATH).name)
    env["HF_ENDPOINT"] = hub.url
    env.update(secret)
    env["LLMODAL_CPU_REHEARSAL"] = "1"  # the CPU engine stands in for the GPU
    env["LLMODAL_RUN_DIR"] = str(volumes / "run")
    return env


class Container:
    def __init__(self, env, log: Path):
        self.log = log
        self.f = log.open("w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "modal_hooks.py"), "server"], env=env,
                                     cwd=log.parent, stdout=self.f, stderr=subprocess.STDOUT)
        self.sids: set[int] = set()

    def text(self):
        return self.log.read_text()

    def wait_healthy(self, port, timeout=600):
        from llmodal.core.errors import EndpointError
        from llmodal.run.health import wait_healthy

        try:
            took = wait_healthy(f"http://127.0.0.1:{port}/health", timeout, alive=lambda: self.proc.poll() is None)
            self.sids = server_sessions(self.proc.pid)
            return took
        except EndpointError as e:
            raise AssertionError(f"{e}\n{self.text()[-3000:]}") from None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        for p in in_sessions(self.sids):
            p.kill()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return tmp_path_factory.mktemp("volumes")


SECRET = {"VLLM_SERVER_API_KEY": TEST_KEY, "HUGGING_FACE_HUB_TOKEN": "hf_rehearsal_dummy"}


def _smoke(port, model, key=TEST_KEY):
    from llmodal.tools.client import Endpoint
    from llmodal.tools.smoke import run_smoke

    return run_smoke(Endpoint(f"http://127.0.0.1:{port}/v1", key, model), max_tokens=16)


def _serves_without_the_hub(c, port, hub, tiny_model, phase):
    took = c.wait_healthy(port)
    checks = _smoke(port, str(tiny_model))
    assert all(x.ok for x in checks), [(x.name, x.detail) for x in checks if not x.ok]
    assert hub.connections == 0
    assert "llmodal: command:" in c.text() and TEST_KEY not in c.text()
    print(f"RECORD container-{phase} | healthy after {took:.0f} s | smoke {len(checks)}/{len(checks)} "
          f"| hub connections {hub.connections}")


def test_cold_start_serves_then_sigint_mid_stream_drains_in_time(tiny_model, volumes, tmp_path):
    """enter() on empty volumes → serve (smoke, no hub) → Modal's preemption SIGINT during a long stream →
    exit(): the stream ends cleanly and the container exits 0 within Modal's grace."""
    hub, port = Listener(), free_port()
    c = Container(container_env(tiny_model, port, volumes, hub, SECRET), tmp_path / "container.log")
    try:
        _serves_without_the_hub(c, port, hub, tiny_model, "cold")
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
        assert in_sessions(c.sids) == []  # no vLLM process outlived the container
        print(f"RECORD container-sigint | exited {code} after {took:.1f} s | in-flight stream: {s.end}")
    finally:
        c.kill()


def test_warm_start_serves_then_a_dead_engine_ends_the_container(tiny_model, volumes, tmp_path):
    """enter() again on the same volume dirs (warm, when the test above ran first) → serve → the engine
    dies: the container exits non-zero with one line, so Modal replaces it."""
    hub, port = Listener(), free_port()
    c = Container(container_env(tiny_model, port, volumes, hub, SECRET), tmp_path / "container.log")
    try:
        _serves_without_the_hub(c, port, hub, tiny_model, "warm")
        engine_core(c.proc.pid).kill()
        t0 = time.monotonic()
        code = c.proc.wait(timeout=60)
        line = [x for x in c.text().splitlines() if x.startswith("llmodal: vLLM exited")]
        assert code != 0 and line, c.text()[-2000:]
        print(f"RECORD container-engine-death | exit {code} after {time.monotonic() - t0:.1f} s | {line[-1][:160]}")
    finally:
        c.kill()


def test_pinned_adapters_in_the_volume_are_served_with_no_hub_access(tiny_model, tmp_path):
    """A hub adapter pinned to a commit whose snapshot is already in the volume (as `download` leaves it): the
    container checks it and serves it without asking the hub anything — the same as for the base's weights."""
    import openai

    from llmodal.engine.tiny_adapter import write_adapter
    from llmodal.modal.spec import HF_CACHE_PATH

    sha = "3" * 40
    volumes = tmp_path / "volumes"
    snap = volumes / Path(HF_CACHE_PATH).name / "hub" / "models--org--tiny-lora" / "snapshots" / sha
    write_adapter(snap, tiny_model, rank=8, seed=5)
    hub, port = Listener(), free_port()
    env = container_env(tiny_model, port, volumes, hub, SECRET, lora_modules=f"tiny-lora=org/tiny-lora@{sha}")
    c = Container(env, tmp_path / "container.log")
    try:
        c.wait_healthy(port)
        oa = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TEST_KEY, max_retries=0, timeout=180)
        assert {m.id for m in oa.models.list().data} == {str(tiny_model), "tiny-lora"}
        r = oa.chat.completions.create(model="tiny-lora", messages=[{"role": "user", "content": "Hello"}],
                                       max_tokens=8, temperature=0)
        assert r.model == "tiny-lora" and r.usage.completion_tokens > 0
        assert f"tiny-lora={snap}" in c.text()  # vLLM reads the adapter from the volume's snapshot
        assert hub.connections == 0, c.text()[-3000:]
        print(f"RECORD container-adapters-offline | pinned adapter served from the volume | hub connections "
              f"{hub.connections}")
    finally:
        c.kill()


def test_a_keyless_secret_refuses_to_start_with_the_fix(tiny_model, volumes, tmp_path):
    port = free_port()
    c = Container(container_env(tiny_model, port, volumes, Listener(), {"HUGGING_FACE_HUB_TOKEN": "hf_x"}),
                  tmp_path / "container.log")
    code = c.proc.wait(timeout=120)
    text = c.text()
    assert code != 0 and "refusing to start" in text and "modal secret create vllm-secrets" in text, text
    assert "VLLM_SERVER_API_KEY=" in text and "command:" not in text
    print(f"RECORD container-keyless | exit {code} | vLLM never started")


def _fast_boot(tiny_model, volumes, tmp_path, secret=SECRET, extra_env=None, **settings_kw):
    """The packaged app's fast-boot hooks in a process of their own (tests/modal_hooks.py)."""
    port = free_port()
    env = container_env(tiny_model, port, volumes, Listener(), secret, fast_boot="snapshot", **settings_kw)
    env["LLMODAL_RUN_DIR"] = str(tmp_path / "run")
    env["LLMODAL_HARNESS_RESTORE"] = str(tmp_path / "restore")
    env.update(extra_env or {})
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    log = tmp_path / "container.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "modal_hooks.py"), "fast-boot"], env=env,
                                cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT)
    c = Container.__new__(Container)
    c.log, c.proc, c.sids = log, proc, set()
    return c, port


def _wait_for(c, needle, timeout=600):
    deadline = time.monotonic() + timeout
    while needle not in c.text():
        assert c.proc.poll() is None and time.monotonic() < deadline, c.text()[-3000:]
        time.sleep(0.2)


def _status(port, key, path="/v1/models"):
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).status_code


def test_fast_boot_hooks_run_in_order_serve_and_take_the_keys_of_restore_time(tiny_model, volumes, tmp_path):
    """enter(snap=True) → [snapshot] → enter(snap=False) → serve → SIGINT → exit, the packaged app's own
    hooks on the CPU engine (no sleep mode there: the hook says so and carries on). The body limit is
    4 KiB, below a full-length warm-up prompt: the warm-up stays under it. The snapshot is taken with
    keys k1,k2; the secret rotates to k2,k3 before the restore: k1 is refused after it."""
    k1, k2, k3 = TEST_KEY, "rotation-key-two-0000000000", "rotation-key-three-000000000"
    c, port = _fast_boot(tiny_model, volumes, tmp_path, {**SECRET, "VLLM_SERVER_API_KEY": f"{k1},{k2}"},
                         max_body_bytes=4096)
    try:
        _wait_for(c, "llmodal-harness: snapshot taken")
        before = [_status(port, k) for k in (k1, k2, k3)]
        (tmp_path / "restore").write_text(f"VLLM_SERVER_API_KEY={k2},{k3}\n")
        _wait_for(c, "llmodal-harness: serving")
        after = [_status(port, k) for k in (k1, k2, k3)]
        assert before == [200, 200, 401] and after == [401, 200, 200], (before, after)
        print(f"RECORD container-rotation | snapshot k1,k2: {before} | restore k2,k3: {after}")
        text = c.text()
        steps = [s for s in ("start_to_health", "warm_up", "sleep skipped", "health_after_restore") if s in text]
        assert steps == ["start_to_health", "warm_up", "sleep skipped", "health_after_restore"], text[-2000:]
        # Volumes around the snapshot, in order: reload, start, commit, [snapshot], reload, wake.
        marks = [ln.split("llmodal-harness: ")[1] if "llmodal-harness: " in ln else ln.split("fast boot: ")[1]
                 for ln in text.splitlines() if "llmodal-harness: " in ln or ln.startswith("llmodal: fast boot: ")]
        order = [m.split(":")[0] if m.startswith(("start_to", "warm_up", "health_after")) else
                 ("reload" if m.endswith("reload") else "commit" if m.endswith("commit") else m)
                 for m in marks if not m.startswith(("sleep", "serving "))]
        assert order == ["reload", "reload", "start_to_health", "warm_up", "commit", "commit", "snapshot taken",
                         "reload", "reload", "health_after_restore", "restored", "serving"], order
        # The container's control key: made, shown masked, never printed; no client key in the log.
        assert "LLMODAL_CONTROL_KEY=<set, hidden>" in text and "LLMODAL_API_KEYS_FILE=" in text
        assert not any(k in text for k in (k1, k2, k3))
        checks = _smoke(port, str(tiny_model), key=k2)
        assert all(x.ok for x in checks), [(x.name, x.detail) for x in checks if not x.ok]
        import httpx

        assert httpx.post(f"http://127.0.0.1:{port}/sleep", headers={"Authorization": f"Bearer {k2}"},
                          timeout=10).status_code == 403  # a client's key never reaches the control routes
        c.proc.send_signal(signal.SIGINT)
        code = c.proc.wait(60)
        assert code == 0 and "llmodal-harness: stopped" in c.text(), c.text()[-2000:]
        timings = {ln.split(": ")[2]: ln.split(": ")[3] for ln in text.splitlines() if ln.startswith("llmodal: fast boot:")
                   and ln.count(": ") >= 3}
        print(f"RECORD container-fast-boot | steps {' → '.join(steps)} → SIGINT → exit hook, code {code} | {timings}")
    finally:
        c.kill()


@pytest.mark.parametrize("step", ["warm_up", "restore"])
def test_a_failed_snapshot_start_or_wake_exits_nonzero_with_the_reason(tiny_model, volumes, tmp_path, step):
    c, port = _fast_boot(tiny_model, volumes, tmp_path, extra_env={"LLMODAL_HARNESS_FAIL": step})
    try:
        if step == "restore":
            _wait_for(c, "llmodal-harness: snapshot taken")
            (tmp_path / "restore").write_text("")
        import psutil

        sids: set[int] = set()  # every vLLM session the container started, seen while it ran
        deadline = time.monotonic() + 600
        while c.proc.poll() is None and time.monotonic() < deadline:
            try:
                sids |= server_sessions(c.proc.pid)
            except psutil.Error:
                pass
            time.sleep(0.2)
        code = c.proc.wait(timeout=5)
        text = c.text()
        said = [ln for ln in text.splitlines() if "failed: RuntimeError" in ln]
        assert code != 0 and said and "(simulated)" in said[0], text[-2000:]
        assert "snapshot taken" not in text if step == "warm_up" else "restored" not in text
        time.sleep(1)
        assert sids and in_sessions(sids) == [], (sids, in_sessions(sids))  # the container left no vLLM behind
        print(f"RECORD container-fail-{step} | exit {code} | {said[0][:140]}")
    finally:
        c.kill()


def test_a_gpu_container_without_a_gpu_refuses_to_start(tiny_model, volumes, tmp_path):
    env = container_env(tiny_model, free_port(), volumes, Listener(), SECRET)
    env.pop("LLMODAL_CPU_REHEARSAL")  # as in production: nvidia-smi finds nothing here
    c = Container(env, tmp_path / "container.log")
    code = c.proc.wait(timeout=120)
    text = c.text()
    assert code != 0 and "lists no GPU" in text and "refusing to start" in text and "command:" not in text, text
    print(f"RECORD container-no-gpu | exit {code} | vLLM never started")
