"""The Modal App, checked offline through the modal SDK's own objects, and its serve body run here."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


from conftest import Listener
from fake_modal import KEY, TOKEN, deploy_via_fake, sent_functions

ROOT = Path(__file__).resolve().parents[2]
modal = pytest.importorskip("modal")
from modal_proto import api_pb2  # noqa: E402


def load_app(monkeypatch, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("modal_vllm", None)
    sys.modules.pop("llmodal.modal.app", None)  # the shim re-imports the packaged app with this env
    return importlib.import_module("modal_vllm")


def sdk_view(fn):
    """What modal would send for a function: its info(), web config and autoscaler settings."""
    from modal._utils.async_utils import synchronizer

    impl = synchronizer._translate_in(fn)
    loader = impl._load
    closure = dict(zip(loader.__code__.co_freevars, (c.cell_contents for c in loader.__closure__)))
    return fn.info(), impl._webhook_config, closure["autoscaler_settings"], closure


def server_view(m):
    """The GPU server class as modal would send it: its service function's view, and serve_gpu's web config."""
    from modal._utils.async_utils import synchronizer

    impl = synchronizer._translate_in(m.Server)
    info, _, autoscale, raw = sdk_view(synchronizer._translate_out(impl._get_class_service_function()))
    return info, impl._get_partial_functions()["serve_gpu"].params.webhook_config, autoscale, raw


def test_default_on_one_gpu_is_the_fast_boot_class(monkeypatch):
    m = load_app(monkeypatch)
    assert m.settings.snapshot and hasattr(m, "Server")
    assert m.spec.snapshot_kwargs == {"enable_memory_snapshot": True,
                                      "experimental_options": {"enable_gpu_snapshot": True}}


def test_function_server_is_the_guides(monkeypatch):
    m = load_app(monkeypatch, LLMODAL_FAST_BOOT="off")
    assert m.app.name == "vllm-llama70b" and m.spec.snapshot_kwargs == {}
    info, web, autoscale, raw = server_view(m)
    assert raw["tag"] == "Server.*" and web.requires_proxy_auth and web.requested_suffix == "vllm-llama70b-serve-vllm-gpu"
    gate, gate_web, _, _ = sdk_view(m.serve_vllm)  # the guide's URL: https://WS--vllm-llama70b-serve-vllm.modal.run
    assert gate_web.requested_suffix == "vllm-llama70b-serve-vllm" and not gate.gpus
    assert info.gpus == [("A100-80GB", 1)]
    assert info.timeout == 24 * 3600
    assert autoscale.scaledown_window == 15 * 60 and autoscale.min_containers == 0 and autoscale.max_containers == 1
    assert web.web_server_port == 8000 and web.web_server_startup_timeout == 1200
    assert info.concurrency_info.max_inputs == 165  # 1.5 × the plan's queue limit, as every deploy path sends
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
    info, web, autoscale, _ = server_view(m)
    assert info.gpus == [("H100", 2)] and autoscale.scaledown_window == 300
    assert info.concurrency_info.max_inputs == 16
    env = m.spec.container_env
    assert not any("must-not-travel" in v for v in env.values())
    # The container reads the same settings back from the one value, whatever its own env says.
    from llmodal.core.config import from_handoff

    monkeypatch.setenv("VLLM_MODEL", "something-else")
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "from-the-secret-1234")
    s = from_handoff(env["LLMODAL_SETTINGS"])
    assert (s.model, s.gpu, s.gpu_count, s.tp, s.max_model_len, s.host) == (
        "Qwen/Qwen2.5-72B-Instruct", "H100", 2, 2, 16384, "0.0.0.0")
    assert s.api_key() == "from-the-secret-1234"


def test_every_setting_travels_including_the_deployers_choices(monkeypatch):
    m = load_app(monkeypatch, LLMODAL_FAST_BOOT="off", LLMODAL_FORCE="true", LLMODAL_PUBLIC="true", LLMODAL_MAX_BODY_BYTES="4096",
                 LLMODAL_METRICS_PUBLIC="true")
    from llmodal.core.config import Settings, from_handoff

    handed = json.loads(m.spec.container_env["LLMODAL_SETTINGS"])
    assert set(handed) == set(Settings.model_fields) - {"server_api_key"}
    s = from_handoff(m.spec.container_env["LLMODAL_SETTINGS"])
    assert (s.force, s.public, s.max_body_bytes, s.metrics_public) == (True, True, 4096, True)


@pytest.mark.parametrize("text,needle", [
    ('{"max_model_len": 3}', "VLLM_MAX_MODEL_LEN"), ("[1]", "JSON object"), ("{nope", "JSON object"),
    ('{"flux_capacitor": 1}', "unknown fields")])
def test_a_bad_handoff_fails_with_the_fields_message(text, needle):
    from llmodal.core.errors import ConfigError
    from llmodal.core.config import from_handoff

    with pytest.raises(ConfigError, match=needle):
        from_handoff(text)


def test_image_requirements_resolve_for_the_image_platform():
    from conftest import image_resolution

    proc, d = image_resolution()  # started at collection (conftest): it waits on the registry
    assert proc.wait(timeout=900) == 0, (d / "stderr").read_text()[-2000:]
    import json

    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in json.loads((d / "r.json").read_text())["install"]}
    assert installs["vllm"] == "0.32.0" and "torch" in installs


def _deploy(tmp_path, listener, extra_env, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"), MODAL_SERVER_URL=listener.url,
               **extra_env)
    return subprocess.run([sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", "", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)




@pytest.mark.parametrize("extra,needle", [
    (KEY, "modal token new"),
    ({**TOKEN, "VLLM_SERVER_API_KEY": KEY["VLLM_SERVER_API_KEY"]}, "MODAL_PROXY_TOKEN_ID and MODAL_PROXY_TOKEN_SECRET"),
    ({**TOKEN, **KEY, "VLLM_QUANTIZATION": "none"}, "the plan does not fit"),
    (TOKEN, "no server key"),
])
def test_deploy_refuses_before_sending_anything(tmp_path, extra, needle):
    listener = Listener()
    r = _deploy(tmp_path, listener, extra)
    listener.stop = True
    assert r.returncode == 2 and needle in r.stderr and "nothing was sent" in r.stderr, r.stderr
    assert listener.connections == 0




# --- the real `modal deploy` against a fake control plane (tests/fake_modal.py) ---

@pytest.mark.parametrize("fast_boot", ["auto", "off"])
def test_modal_deploy_sends_the_guides_app(tmp_path, fast_boot):
    r, calls = deploy_via_fake(tmp_path, [sys.executable, "-m", "modal", "deploy", "modal_vllm.py"],
                                LLMODAL_FAST_BOOT=fast_boot, **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "https://acme--vllm-llama70b-serve-vllm.modal.run" in r.stdout
    assert [c.description for c in calls["AppCreate"]] == ["vllm-llama70b"]
    fns = sent_functions(calls)
    serve = fns["Server.*"]  # both kinds: one class, started by @modal.enter, drained by @modal.exit
    web = serve.method_definitions["serve_gpu"].webhook_config
    if fast_boot == "auto":  # the default on one GPU: with memory and GPU snapshots
        assert serve.checkpointing_enabled and dict(serve.experimental_options) == {"enable_gpu_snapshot": "True"}
    else:
        assert not serve.checkpointing_enabled and not serve.experimental_options
    # The GPU server: its own label, closed by Modal's proxy auth (no GPU starts without the proxy token).
    assert web.requested_suffix == "vllm-llama70b-serve-vllm-gpu" and web.requires_proxy_auth
    # The guide's URL belongs to the key-checking gateway: public, on a CPU, no volumes.
    gate = fns["serve_vllm"]
    assert gate.webhook_config.requested_suffix == "vllm-llama70b-serve-vllm"
    assert not gate.webhook_config.requires_proxy_auth and gate.webhook_config.type == api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert not gate.resources.gpu_config.count and not gate.volume_mounts and not gate.checkpointing_enabled
    # The gateway's Modal concurrency derives from the plan: twice the 110 generations it relays (a burst is told 429).
    assert gate.max_concurrent_inputs == 220 and gate.autoscaler_settings.min_containers == 0
    public = {n for n, f in fns.items() for w in [f.webhook_config, *(d.webhook_config for d in
              f.method_definitions.values())] if w.type and not w.requires_proxy_auth}
    assert public == {"serve_vllm"}  # the one function a stranger can reach has no GPU
    assert serve.resources.gpu_config.gpu_type == "A100-80GB" and serve.resources.gpu_config.count == 1
    assert serve.timeout_secs == 86400 and serve.autoscaler_settings.scaledown_window == 900
    assert (serve.autoscaler_settings.min_containers, serve.autoscaler_settings.max_containers) == (0, 1)
    assert web.web_server_port == 8000 and web.web_server_startup_timeout == 1200
    assert serve.max_concurrent_inputs == 165  # the plan's queue limit (110) and half as much again, as llmodal deploy
    secrets = {c.deployment_name: c for c in calls["SecretGetOrCreate"]}
    assert "vllm-secrets" in secrets and not secrets["vllm-secrets"].env_dict  # by name only
    vols = {c.deployment_name for c in calls["VolumeGetOrCreate"]}
    assert vols == {"llmodal-hf-cache", "llmodal-vllm-cache"}
    assert sorted(v.mount_path for v in serve.volume_mounts) == ["/root/.cache/huggingface", "/root/.cache/vllm"]
    pip = " ".join(cmd for c in calls["ImageGetOrCreate"] for cmd in c.image.dockerfile_commands)
    assert "vllm==0.32.0" in pip and "python:3.12" in pip
    uploaded = {f.filename for c in calls["MountGetOrCreate"] for f in c.files}
    assert any(f.endswith("llmodal/engine/prepare.py") for f in uploaded), sorted(uploaded)[:5]
    envs = [dict(c.env_dict) for c in calls["SecretGetOrCreate"] if "LLMODAL_SETTINGS" in c.env_dict]
    assert envs and json.loads(envs[0]["LLMODAL_SETTINGS"])["model"] == "meta-llama/Llama-3.1-70B-Instruct"
    everything = r.stdout + r.stderr + "".join(str(c) for v in calls.values() for c in v)
    assert KEY["VLLM_SERVER_API_KEY"] not in everything  # the key was never sent, only the secret's name


def test_llmodal_deploy_prints_the_url_and_client_env(tmp_path):
    r, calls = deploy_via_fake(tmp_path, [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""], **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VLLM_BASE_URL=https://acme--vllm-llama70b-serve-vllm.modal.run/v1" in r.stdout
    assert "VLLM_MODEL=meta-llama/Llama-3.1-70B-Instruct" in r.stdout and "0123456789" not in r.stdout
    # The plan's queue limit travels, and Modal routes half as much again to a container: the guard says 429.
    handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
              if "LLMODAL_SETTINGS" in c.env_dict][0]
    assert handed["queue_limit"] == 110 and sent_functions(calls)["Server.*"].max_concurrent_inputs == 165


def test_deploy_force_and_env_file_travel(tmp_path):
    envf = tmp_path / "deploy.env"
    envf.write_text("VLLM_QUANTIZATION=none\nVLLM_MAX_MODEL_LEN=4096\n")
    r, calls = deploy_via_fake(tmp_path, [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", str(envf),
                                           "--force"], **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
              if "LLMODAL_SETTINGS" in c.env_dict][0]
    assert (handed["quantization"], handed["max_model_len"], handed["force"]) == ("none", 4096, True)


def test_deploy_dry_run_json_sends_nothing(tmp_path):
    listener = Listener()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    env.update(HOME=str(tmp_path), MODAL_SERVER_URL=listener.url, **KEY)
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", "", "--dry-run", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    listener.stop = True
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["app"] == "vllm-llama70b" and doc["url"] == "https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1"
    assert doc["secrets"] == ["vllm-secrets"] and doc["timeout"] == 86400 and doc["gpu"] == "A100-80GB"
    assert "--enable-sleep-mode" in doc["command"]  # what the fast-boot container runs
    assert doc["function"] == "Server.serve_gpu" and doc["fast_boot"] == {
        "mode": "auto", "snapshot": True, "enable_memory_snapshot": True,
        "experimental_options": {"enable_gpu_snapshot": True}}
    assert "--kv-cache-memory-bytes" in doc["command"] and "--tool-call-parser llama3_json" in doc["command"]
    assert "0123456789" not in r.stdout and listener.connections == 0


def test_fast_boot_deploy_sends_snapshot_options_and_keeps_the_url(tmp_path):
    r, calls = deploy_via_fake(tmp_path, [sys.executable, "-m", "modal", "deploy", "modal_vllm.py"],
                                LLMODAL_FAST_BOOT="snapshot", **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    server = sent_functions(calls)["Server.*"]
    assert server.is_class and server.checkpointing_enabled  # enable_memory_snapshot
    assert dict(server.experimental_options) == {"enable_gpu_snapshot": "True"}
    web = server.method_definitions["serve_gpu"].webhook_config
    assert web.requested_suffix == "vllm-llama70b-serve-vllm-gpu" and web.web_server_port == 8000
    assert web.requires_proxy_auth
    assert server.resources.gpu_config.gpu_type == "A100-80GB" and server.timeout_secs == 86400
    assert "https://acme--vllm-llama70b-serve-vllm.modal.run" in r.stdout  # the guide's URL: the gateway's


def test_fast_boot_refuses_multi_gpu(monkeypatch):
    from llmodal.core.errors import ConfigError
    from llmodal.core.config import load_settings

    monkeypatch.setenv("LLMODAL_FAST_BOOT", "snapshot")
    monkeypatch.setenv("LLMODAL_GPU_COUNT", "2")
    with pytest.raises(ConfigError, match="LLMODAL_FAST_BOOT.*single-GPU"):
        load_settings(None)


def test_llmodal_deploy_pins_the_build_it_found_on_the_hub(tmp_path):
    from fake_hub import BASE, FakeHub

    hub = FakeHub()
    try:
        r, calls = deploy_via_fake(tmp_path, [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""],
                                    VLLM_MODEL=BASE, HF_ENDPOINT=hub.url, **KEY)
    finally:
        hub.close()
    assert r.returncode == 0, r.stdout + r.stderr
    handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
              if "LLMODAL_SETTINGS" in c.env_dict][0]
    # The container plans what the preflight showed, whatever the hub says by then.
    assert (handed["model"], handed["checkpoint"]) == (BASE, "hugging-quants/Big-Chat-70B-AWQ-INT4")


def test_a_long_app_name_gets_the_url_modal_prints(tmp_path):
    """Modal shortens a subdomain past 63 characters: the .env `llmodal deploy` prints takes the URL Modal
    printed for the gateway, not a formula."""
    name = "a-very-long-application-name-for-the-llama-endpoint-x"
    r, _ = deploy_via_fake(tmp_path, [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""],
                            LLMODAL_APP_NAME=name, **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    url = next(ln.split("=", 1)[1] for ln in r.stdout.splitlines() if "VLLM_BASE_URL=" in ln)
    host = url.removeprefix("https://").split(".modal.run")[0]
    assert len(host) <= 63 and url.endswith(".modal.run/v1") and name not in url, url


def test_another_environment_adds_its_name_to_the_url(tmp_path):
    r, _ = deploy_via_fake(tmp_path, [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""],
                            MODAL_ENVIRONMENT="staging", **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VLLM_BASE_URL=https://acme-staging--vllm-llama70b-serve-vllm.modal.run/v1" in r.stdout


def test_download_pins_the_same_hub_found_build_as_deploy(tmp_path):
    """`llmodal download` and `llmodal deploy` plan once each, the same way: both hand the container the
    build the hub showed (what `modal run` does after the app is sent is Modal's; the fake stops there)."""
    from fake_hub import BASE, FakeHub

    hub = FakeHub()
    handed = {}
    try:
        for cmd in ("download", "deploy"):
            r, calls = deploy_via_fake(tmp_path / cmd, [sys.executable, "-m", "llmodal.cli", cmd, "--env-file", ""],
                                        VLLM_MODEL=BASE, HF_ENDPOINT=hub.url, **KEY)
            sent = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
                    if "LLMODAL_SETTINGS" in c.env_dict]
            assert sent, r.stdout[-2000:] + r.stderr[-2000:]
            handed[cmd] = (sent[0]["model"], sent[0]["checkpoint"])
    finally:
        hub.close()
    assert handed["download"] == handed["deploy"] == (BASE, "hugging-quants/Big-Chat-70B-AWQ-INT4")


def test_a_container_start_plans_once(monkeypatch):
    """Settings → one resolution → launch: the model's facts are looked up (catalog, hub) once per start, and
    the launch carries the plan that was made, not a second one."""
    from llmodal.core.config import load_settings
    from llmodal.modal import container
    from llmodal.plan import catalog, model_facts, planner

    calls = {"facts": 0, "lookup": 0, "plan": 0}

    def counting(module, name, key):
        real = getattr(module, name)

        def wrapper(*a, **kw):
            calls[key] += 1
            return real(*a, **kw)
        monkeypatch.setattr(module, name, wrapper)

    counting(model_facts, "model_facts", "facts")
    counting(catalog, "lookup", "lookup")
    counting(planner, "make_plan", "plan")
    monkeypatch.setenv("LLMODAL_CPU_REHEARSAL", "")
    settings = load_settings(None, server_api_key="k" * 20)
    prep = container.container_prepare(settings, gpu=True)
    assert calls["facts"] == 1 and calls["lookup"] == 1, calls
    made = calls["plan"]
    assert prep.resolution is not None and f"--kv-cache-memory-bytes {prep.resolution.chosen.kv_cache_bytes}" in \
        prep.launch.shell()
    assert calls["plan"] == made  # building the launch planned nothing more


def test_every_deploy_path_sends_and_shows_one_spec(tmp_path):
    """`modal deploy modal_vllm.py` (the guide's), `llmodal deploy` and `llmodal deploy --dry-run --json`: the same
    functions, concurrency, limits and container settings, field by field."""
    def view(calls):
        fns = sent_functions(calls)
        handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
                  if "LLMODAL_SETTINGS" in c.env_dict][0]
        gpu, gate = fns["Server.*"], fns["serve_vllm"]
        return {"functions": sorted(fns), "gpu_inputs": gpu.max_concurrent_inputs,
                "gateway_inputs": gate.max_concurrent_inputs, "timeout": gpu.timeout_secs,
                "scaledown": gpu.autoscaler_settings.scaledown_window,
                "containers": (gpu.autoscaler_settings.min_containers, gpu.autoscaler_settings.max_containers),
                "gpu": gpu.resources.gpu_config.gpu_type, "settings": handed}

    guide, guide_calls = deploy_via_fake(tmp_path / "g", [sys.executable, "-m", "modal", "deploy", "modal_vllm.py"],
                                         **KEY)
    ours, our_calls = deploy_via_fake(tmp_path / "o", [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""],
                                      **KEY)
    assert guide.returncode == 0 and ours.returncode == 0, guide.stderr + ours.stderr
    a, b = view(guide_calls), view(our_calls)
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"), **KEY)
    r = subprocess.run([sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", "", "--dry-run", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    doc = json.loads(r.stdout)
    shown = {"gpu_inputs": doc["max_concurrent_inputs"], "gateway_inputs": doc["gateway"]["max_concurrent_inputs"],
             "timeout": doc["timeout"], "scaledown": doc["scaledown_window"],
             "containers": (doc["min_containers"], doc["max_containers"]), "gpu": doc["gpu"],
             "settings": json.loads(doc["container_env"]["LLMODAL_SETTINGS"])}
    assert shown == {k: a[k] for k in shown}, {k: (shown[k], a[k]) for k in shown if shown[k] != a[k]}
    assert a["settings"]["queue_limit"] == 110 and a["gpu_inputs"] == 165


def test_the_guides_deploy_names_a_missing_proxy_token(tmp_path):
    """`modal deploy modal_vllm.py` has no preflight: it still deploys, and says what the gateway will lack."""
    no_token = {"VLLM_SERVER_API_KEY": KEY["VLLM_SERVER_API_KEY"], "MODAL_PROXY_TOKEN_ID": "wk-x y"}
    r, _ = deploy_via_fake(tmp_path, [sys.executable, "-m", "modal", "deploy", "modal_vllm.py"], **no_token)
    assert r.returncode == 0, r.stderr
    assert "MODAL_PROXY_TOKEN_ID and MODAL_PROXY_TOKEN_SECRET not set" in r.stderr, r.stderr[-2000:]


def test_the_gateway_never_relays_more_than_modal_routes_to_the_gpus(monkeypatch):
    from llmodal.core.config import load_settings
    from llmodal.modal.spec import app_spec, gateway_limit

    def limits(**env):
        for k in ("LLMODAL_QUEUE_LIMIT", "LLMODAL_MAX_CONCURRENT_INPUTS", "LLMODAL_MAX_CONTAINERS"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s = load_settings(None)
        return gateway_limit(s), app_spec(s).concurrent_inputs

    assert limits(LLMODAL_QUEUE_LIMIT="110") == (110, 165)
    assert limits(LLMODAL_QUEUE_LIMIT="110", LLMODAL_MAX_CONCURRENT_INPUTS="50") == (50, 50)  # Modal's limit binds
    assert limits(LLMODAL_QUEUE_LIMIT="110", LLMODAL_MAX_CONTAINERS="3") == (330, 165)
    assert limits() == (64, 64)  # no plan: the profile's concurrency, never unbounded
