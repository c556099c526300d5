"""Hub adapters pinned to commits: `download` resolves and records them, `deploy` hands the container the
same commits, the container serves a pinned snapshot from the volume offline."""

import json

import pytest

from fake_hub import FakeHub
from llmodal.core.config import load_settings
from llmodal.core.errors import PreflightError
from llmodal.modal.adapter_pins import pinned_modules

SHA = "0" * 40  # what the fake hub says every revision is


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hc

    h = FakeHub(children={"org/sql-lora": (1, {"r": 8}), "org/poet-lora": (1, {"r": 16})})
    monkeypatch.setattr(hc, "ENDPOINT", h.url)
    yield h
    h.close()


def _adapters(text):
    return load_settings(None, lora_modules=text).adapters


def test_download_resolves_each_revision_to_a_commit_and_keeps_pins(hub):
    got = pinned_modules(_adapters(f"sql=org/sql-lora,poet=org/poet-lora@v2,fixed=org/x@{'1' * 40}"), fresh=True)
    assert got == f"sql=org/sql-lora@{SHA},poet=org/poet-lora@{SHA},fixed=org/x@{'1' * 40}"
    asked = [r for r in hub.requests if r.startswith("/api/models/")]
    assert any("org/poet-lora/revision/v2" in r for r in asked)
    assert not any("org/x" in r for r in asked)  # a commit is already a pin: the hub is not asked


def test_deploy_reuses_the_commits_download_recorded_even_with_the_hub_gone(hub, monkeypatch):
    import huggingface_hub.constants as hc

    pinned_modules(_adapters("sql=org/sql-lora"), fresh=True)
    hub.close()
    monkeypatch.setattr(hc, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert pinned_modules(_adapters("sql=org/sql-lora"), fresh=False) == f"sql=org/sql-lora@{SHA}"
    with pytest.raises(PreflightError, match="did not say which commit org/poet-lora@main is.*nothing was sent"):
        pinned_modules(_adapters("sql=org/sql-lora,poet=org/poet-lora"), fresh=False)


def test_unknown_repo_and_folder_are_refused(hub, tmp_path):
    with pytest.raises(PreflightError, match="org/missing does not exist on the hub"):
        pinned_modules(_adapters("m=org/missing"), fresh=True)
    with pytest.raises(PreflightError, match="is a folder on this machine.*push it to the hub"):
        pinned_modules(_adapters(f"f={tmp_path}"), fresh=True)


def test_app_env_hands_the_pinned_adapters_to_modal(hub):
    from llmodal.cli.modal_commands import _app_env

    s = load_settings(None, lora_modules="sql=org/sql-lora")
    env = _app_env(s, None, "", fresh_adapters=True)
    assert env["VLLM_LORA_MODULES"] == f"sql=org/sql-lora@{SHA}"
    # The container re-validates what it is handed.
    assert load_settings(None, lora_modules=env["VLLM_LORA_MODULES"]).adapters[0].pinned


def test_container_serves_a_pinned_adapter_from_the_volume_offline(tmp_path, monkeypatch):
    """The snapshot `download` left in the HF cache is what vLLM reads; an adapter not there is named."""
    import huggingface_hub.constants as hc

    from llmodal.engine.prepare import adapter_path
    from llmodal.modal.container import adapters_missing

    snap = tmp_path / "hub" / "models--org--sql-lora" / "snapshots" / SHA
    snap.mkdir(parents=True)
    (snap / "adapter_config.json").write_text(json.dumps({"r": 8}))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    s = load_settings(None, lora_modules=f"sql=org/sql-lora@{SHA},poet=org/poet-lora@{'2' * 40}")
    sql, poet = s.adapters
    assert adapter_path(sql, fetch=False) == str(snap)
    assert adapter_path(poet, fetch=False) == f"org/poet-lora@{'2' * 40}"  # a dry run names it, fetches nothing
    assert adapters_missing(s) == ["poet"]


def test_llmodal_deploy_hands_the_container_pinned_adapters(tmp_path):
    """The real `llmodal deploy` against the fake Modal and a fake hub holding one adapter on `main`: the one
    settings value the container gets names the adapter at its commit; a folder adapter sends nothing."""
    import sys

    from fake_modal import KEY, deploy_via_fake

    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "meta-llama/Llama-3.1-70B-Instruct"}
    h = FakeHub(children={"org/sql-lora": (1, {"r": 16})},
                files={"org/sql-lora": {"adapter_config.json": json.dumps(cfg).encode()}})
    argv = [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""]
    try:
        r, calls = deploy_via_fake(tmp_path / "a", argv, HF_ENDPOINT=h.url, VLLM_LORA_MODULES="sql=org/sql-lora",
                                   **KEY)
    finally:
        h.close()
    assert r.returncode == 0, r.stdout + r.stderr
    handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
              if "LLMODAL_SETTINGS" in c.env_dict][0]
    assert handed["lora_modules"] == f"sql=org/sql-lora@{SHA}"
    r, calls = deploy_via_fake(tmp_path / "b", argv, VLLM_LORA_MODULES=f"mine={tmp_path}", **KEY)
    assert r.returncode == 2 and "is a folder on this machine" in r.stdout + r.stderr
    assert not calls.get("FunctionCreate")


def test_a_gpu_container_with_pinned_adapters_in_the_volume_never_asks_the_hub(tmp_path, monkeypatch):
    """The GPU container's start hook, run as Modal runs it up to the point where vLLM's process is made: the base's
    weights and two pinned adapters are in the volume (as `download` leaves them), the hub counts every request it
    gets. Planning, the adapters' checks and the launch read the volume alone: no request, and vLLM starts offline
    with each adapter from its snapshot."""
    import os

    import huggingface_hub.constants as hc

    from llmodal.modal import container
    from llmodal.modal.spec import container_env
    from llmodal.plan.planner import plan_for_settings

    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "meta-llama/Llama-3.1-70B-Instruct"}
    repos = {"org/sql-lora": "1" * 40, "org/poet-lora": "2" * 40}
    hub = FakeHub(children={r: (1, {"r": 16}) for r in repos},
                  files={r: {"adapter_config.json": json.dumps(cfg).encode()} for r in repos})
    home = tmp_path / "hf"
    settings = load_settings(None, server_api_key="k-" + "x" * 30, fast_boot="off",
                             lora_modules=",".join(f"{r.split('/')[1]}={r}@{c}" for r, c in repos.items()))
    snaps = {}
    for repo, commit in repos.items():  # what `download` leaves in the volume
        snaps[repo.split("/")[1]] = snap = home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
        snap.mkdir(parents=True)
        (snap / "adapter_config.json").write_text(json.dumps(cfg))
    seen = {}

    class Started(Exception):
        pass

    def take(launch, **kw):
        seen.update(argv=launch.argv, env=launch.child_env())
        raise Started

    environ = {**container_env(settings), "VLLM_SERVER_API_KEY": "k-" + "x" * 30, "HF_HOME": str(home),
               "HF_ENDPOINT": hub.url, "PATH": os.environ.get("PATH", "")}
    try:
        with monkeypatch.context() as mp:
            mp.setattr(hc, "ENDPOINT", hub.url)  # huggingface_hub read HF_ENDPOINT at import: its two constants
            mp.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
            mp.setattr(hc, "HF_HUB_CACHE", str(home / "hub"))
            mp.setattr(hc, "HF_HUB_OFFLINE", False)  # as imported in a container: the hub reachable
            checkpoint = plan_for_settings(settings).chosen.checkpoint  # the base's weights, pinned in the volume
            snap = home / "hub" / f"models--{checkpoint.replace('/', '--')}" / "snapshots" / SHA
            snap.mkdir(parents=True)
            (snap / "config.json").write_text("{}")
            (snap / "model.safetensors").write_bytes(b"w")
            (home / container.PINS_FILE).write_text(json.dumps({checkpoint: SHA}))
            hub.requests.clear()  # from here on, the container
            mp.setattr(os, "environ", environ)
            mp.setattr(container, "has_gpu", lambda: True)
            mp.setattr(container, "Supervisor", take)
            with pytest.raises(Started):
                container.start_server()
    finally:
        hub.close()
    assert hub.requests == []
    assert seen["env"].get("HF_HUB_OFFLINE") == "1"
    argv = seen["argv"]
    i = argv.index("--lora-modules")
    assert argv[i + 1:i + 3] == [f"{n}={p}" for n, p in snaps.items()]


def test_the_dry_run_shows_each_adapter_at_the_commit_deploy_sends(tmp_path):
    """`deploy --dry-run` (text and --json) names every hub adapter at its commit, as the real deploy pins it: a
    commit `download` recorded is shown as recorded (the hub is not asked for it), a revision never downloaded is
    resolved now and recorded. The settings and command it shows are the ones `llmodal deploy` then sends."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from fake_modal import KEY, deploy_via_fake

    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "meta-llama/Llama-3.1-70B-Instruct"}
    repos = ("org/sql-lora", "org/poet-lora")
    h = FakeHub(children={r: (1, {"r": 16}) for r in repos},
                files={r: {"adapter_config.json": json.dumps(cfg).encode()} for r in repos})
    cache = tmp_path / "cache"
    cache.mkdir()
    recorded = "4" * 40
    (cache / "adapter-pins.json").write_text(json.dumps({"org/poet-lora@v2": recorded}))  # as download left it
    env = {"HF_ENDPOINT": h.url, "LLMODAL_CACHE_DIR": str(cache), "VLLM_LORA_MODULES":
           "sql=org/sql-lora,poet=org/poet-lora@v2", **KEY}
    argv = [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""]
    root = Path(__file__).resolve().parents[2]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_", "LLMODAL_", "HF_"))}
    try:
        shown = [subprocess.run(argv + ["--dry-run", *extra], env={**base, "HOME": str(tmp_path), **env},
                                cwd=root, capture_output=True, text=True, timeout=180) for extra in (["--json"], [])]
        asked = list(h.requests)
        r, calls = deploy_via_fake(tmp_path / "deploy", argv, **env)
    finally:
        h.close()
    assert all(s.returncode == 0 for s in shown), [s.stderr[-2000:] for s in shown]
    doc, text = json.loads(shown[0].stdout), shown[1].stdout
    assert doc["adapters"] == [
        {"name": "sql", "source": "org/sql-lora", "revision": "main", "commit": SHA,
         "pinned": "main as the hub named it now; recorded, so deploy sends this commit"},
        {"name": "poet", "source": "org/poet-lora", "revision": "v2", "commit": recorded,
         "pinned": "v2 as recorded here (llmodal download, deploy or a dry run)"}]
    want = f"sql=org/sql-lora@{SHA},poet=org/poet-lora@{recorded}"
    assert json.loads(doc["container_env"]["LLMODAL_SETTINGS"])["lora_modules"] == want
    vol = "/root/.cache/huggingface/hub"  # the weights volume, where the container reads each commit's snapshot
    assert (f"--lora-modules sql={vol}/models--org--sql-lora/snapshots/{SHA} "
            f"poet={vol}/models--org--poet-lora/snapshots/{recorded} ") in doc["command"]
    assert "adapters (each at the commit `llmodal deploy` sends):" in text
    assert f"  sql = org/sql-lora@{SHA}  (main as recorded here" in text  # by the --json dry run just before
    assert f"  poet = org/poet-lora@{recorded}  (v2 as recorded here" in text
    assert not any(q.startswith("/api/models/org/poet-lora") for q in asked)  # its commit was not asked for
    assert r.returncode == 0, r.stdout + r.stderr
    handed = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
              if "LLMODAL_SETTINGS" in c.env_dict][0]
    assert handed["lora_modules"] == want  # what the dry run showed is what the deploy sent


def test_the_guides_deploy_pins_adapters_as_llmodal_deploy_does(tmp_path):
    """`modal deploy modal_vllm.py` (the guide's path, no preflight of its own) hands the container the same adapter
    commits as `llmodal deploy`: otherwise each cold start fetches the branch as it is then, with the hub online.
    A folder adapter, which the container does not have, stops that deploy too, before anything is sent."""
    import sys

    from fake_modal import KEY, deploy_via_fake

    cfg = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "meta-llama/Llama-3.1-70B-Instruct"}
    h = FakeHub(children={"org/sql-lora": (1, {"r": 16})},
                files={"org/sql-lora": {"adapter_config.json": json.dumps(cfg).encode()}})
    guide = [sys.executable, "-m", "modal", "deploy", "modal_vllm.py"]
    ours = [sys.executable, "-m", "llmodal.cli", "deploy", "--env-file", ""]
    handed = {}
    try:
        for name, argv in (("guide", guide), ("ours", ours)):
            r, calls = deploy_via_fake(tmp_path / name, argv, HF_ENDPOINT=h.url, VLLM_LORA_MODULES="sql=org/sql-lora",
                                       **KEY)
            assert r.returncode == 0, r.stdout + r.stderr
            handed[name] = [json.loads(c.env_dict["LLMODAL_SETTINGS"]) for c in calls["SecretGetOrCreate"]
                            if "LLMODAL_SETTINGS" in c.env_dict][0]["lora_modules"]
    finally:
        h.close()
    assert handed == {"guide": f"sql=org/sql-lora@{SHA}", "ours": f"sql=org/sql-lora@{SHA}"}
    r, calls = deploy_via_fake(tmp_path / "folder", guide, VLLM_LORA_MODULES=f"mine={tmp_path}", **KEY)
    assert r.returncode != 0 and "is a folder on this machine" in r.stdout + r.stderr
    assert not calls.get("FunctionCreate")
