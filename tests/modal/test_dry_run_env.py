"""`deploy --dry-run` shows every variable vLLM gets in the GPU container: the container's own start hooks are run
here (Modal's environment, the secret, a volume with the pinned weights), and the environment they would start vLLM
with is compared, name by name, with what the dry run showed."""

import json
import os

import pytest

KEY = "k-" + "x" * 30
SHA = "5" * 40
SECRET = {"HUGGING_FACE_HUB_TOKEN": "hf_the_real_token", "VLLM_SERVER_API_KEY": KEY,
          "MODAL_PROXY_TOKEN_ID": "wk-real", "MODAL_PROXY_TOKEN_SECRET": "ws-real"}
RUNTIME = {"PATH": "/usr/local/bin:/usr/bin", "MODAL_TASK_ID": "ta-1"}  # what the image and Modal's runtime set


class Started(Exception):
    """Raised where the container would start vLLM: the environment it would pass is taken instead."""


def _container_start(monkeypatch, settings, home, *, pinned: bool) -> dict[str, str]:
    """The GPU container's start hook run as Modal runs it, up to the point where vLLM's process is made: returns the
    environment the supervisor would give that process (``Launch.child_env``, as ``Supervisor.start`` calls it)."""
    from llmodal.modal import container
    from llmodal.modal.spec import container_env
    from llmodal.plan.planner import plan_for_settings

    if pinned:  # what `download` leaves in the volume
        checkpoint = plan_for_settings(settings).chosen.checkpoint
        snap = home / "hub" / f"models--{checkpoint.replace('/', '--')}" / "snapshots" / SHA
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
        (snap / "model.safetensors").write_bytes(b"w")
        (home / container.PINS_FILE).write_text(json.dumps({checkpoint: SHA}))
    seen: dict[str, str] = {}

    def take(launch):
        seen.update(launch.child_env())
        raise Started

    # Modal's environment for the container: the image's and the runtime's, the App's env, the secret; the volume
    # mount moved to a temp dir (HF_HOME).
    environ = {**RUNTIME, **container_env(settings), **SECRET, "HF_HOME": str(home)}
    with monkeypatch.context() as mp, pytest.raises(Started):
        mp.setattr(os, "environ", environ)
        mp.setattr(container, "has_gpu", lambda: True)
        mp.setattr(container, "FastBoot", lambda prep, gpu: take(prep.launch))
        mp.setattr(container, "Supervisor", lambda launch, **kw: take(launch))
        (container.start_fast_boot if settings.snapshot else container.start_server)()
    return seen


@pytest.mark.parametrize("fast_boot", ["snapshot", "off"])
def test_the_dry_run_shows_every_variable_the_container_gives_vllm(tmp_path, monkeypatch, fast_boot):
    from llmodal.core.config import load_settings
    from llmodal.modal.preflight import rehearse
    from llmodal.modal.spec import HF_CACHE_PATH, deploy_settings

    for k in [k for k in os.environ if k.startswith(("VLLM_", "LLMODAL_", "HF_", "HUGGING_FACE", "MODAL_"))]:
        monkeypatch.delenv(k)
    settings = deploy_settings(load_settings(None, fast_boot=fast_boot, server_api_key=KEY))
    doc = rehearse(settings)
    shown, notes = doc["vllm_env"], doc["vllm_env_notes"]

    got = _container_start(monkeypatch, settings, tmp_path / "a", pinned=True)
    got = {k: v for k, v in got.items() if RUNTIME.get(k) != v}  # the image's and Modal's own: named in a note
    assert got.pop("HF_HOME") == str(tmp_path / "a")
    got["HF_HOME"] = HF_CACHE_PATH  # the volume's mount path, as deployed
    assert set(shown) == set(got), (set(shown) ^ set(got))
    for name, value in got.items():
        if "hidden" in shown[name]:  # a secret: named, never shown
            assert value not in json.dumps(doc) and value in {*SECRET.values()} | {got.get("LLMODAL_CONTROL_KEY")}
        else:
            assert shown[name] == value, name
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LLMODAL_CONTROL_KEY"):
        assert name not in shown or "hidden" in shown[name]
    assert {"HF_HUB_OFFLINE", "HF_TOKEN"} <= set(shown)
    assert ({"NCCL_SOCKET_IFNAME", "TORCH_NCCL_ASYNC_ERROR_HANDLING"} <= set(shown)) == (fast_boot == "snapshot")
    assert "PATH" in notes["*"] and "vllm-secrets" in notes["*"]

    # Without the pinned weights in the volume the container stays online: the one variable the note says so of.
    cold = _container_start(monkeypatch, settings, tmp_path / "b", pinned=False)
    assert set(shown) - set(cold) == {"HF_HUB_OFFLINE"}
    assert "pinned weights are in the volume" in notes["HF_HUB_OFFLINE"]


def test_the_text_dry_run_lists_each_variable_with_its_condition(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LLMODAL_", "MODAL_", "HF_"))}
    env.update(HOME=str(tmp_path), VLLM_SERVER_API_KEY=KEY, MODAL_PROXY_TOKEN_ID="wk-a",
               MODAL_PROXY_TOKEN_SECRET="ws-b")
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", "", "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.startswith("  HF_HUB_OFFLINE=1  (only when the pinned weights are in the volume") for ln in lines)
    assert "  TORCHINDUCTOR_COMPILE_THREADS=1" in lines and "  LLMODAL_CONTROL_KEY=<set, hidden>" in lines
    assert KEY not in r.stdout


@pytest.mark.parametrize("layout, expected", [
    ({"consolidated.safetensors": b"c", "model.safetensors": b"w", "params.json": b"{}"},
     ["--load-format", "mistral", "--config-format", "mistral"]),
    ({"model.safetensors": b"w"}, []),
])
def test_the_container_passes_vllm_the_formats_of_the_pinned_snapshot(tmp_path, monkeypatch, layout, expected):
    """The GPU container's start hook, the pinned snapshot in Mistral's layout in the volume: vLLM, offline, gets the
    formats it chose online by itself (modal/weights.py); an HF-layout snapshot gets none. VLLM_EXTRA_ARGS may still
    choose the load format (random weights for the GPU benchmarks): it comes last in argv, which vLLM keeps."""
    from llmodal.core.config import load_settings
    from llmodal.modal import container
    from llmodal.plan.planner import plan_for_settings

    for k in [k for k in os.environ if k.startswith(("VLLM_", "LLMODAL_", "HF_", "HUGGING_FACE", "MODAL_"))]:
        monkeypatch.delenv(k)
    settings = load_settings(None, fast_boot="off", server_api_key=KEY, extra_args="--load-format dummy")
    checkpoint = plan_for_settings(settings).chosen.checkpoint
    snap = tmp_path / "hub" / f"models--{checkpoint.replace('/', '--')}" / "snapshots" / SHA
    snap.mkdir(parents=True)
    for name, data in {"config.json": b"{}", **layout}.items():
        (snap / name).write_bytes(data)
    (tmp_path / container.PINS_FILE).write_text(json.dumps({checkpoint: SHA}))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the hook sets it to 1 (weights cached): undone after the test
    argv = container.container_prepare(settings, gpu=True).launch.argv
    got = [a for i, a in enumerate(argv) if a.startswith(("--load-format", "--config-format"))
           or argv[i - 1] in ("--load-format", "--config-format")]
    assert got == [*expected, "--load-format", "dummy"], argv
    assert argv[-2:] == ["--load-format", "dummy"]
    # The dry run, which cannot see the volume, names each flag the container adds and when.
    from llmodal.modal.preflight import rehearse
    from llmodal.modal.spec import deploy_settings

    said = rehearse(deploy_settings(settings))["command_added_in_container"]
    assert {f"{a} {b}" for a, b in zip(expected[::2], expected[1::2])} <= set(said), said
