"""The user's path: the built wheel installed fresh (not editable) and run from an empty folder.

The wheel is built from this checkout, installed with its ``modal`` extra into a new virtual
environment (its dependencies from the package index, as a user gets them), and every command runs
in an empty temporary folder: no checkout, no ``modal_vllm.py`` nearby, nothing on ``sys.path``
but the installed package."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_modal import KEY, deploy_via_fake, sent_functions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's bin folder, an empty folder)."""
    base = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(base / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((base / "dist").glob("llmodal-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=300)
    bin_ = base / "venv" / "bin"
    r = subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"{wheel}[modal]"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    empty = base / "empty"
    empty.mkdir()
    return bin_, empty


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VLLM_", "MODAL_", "LLMODAL_S", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return {**env, **extra}


def _run(installed, *args, **env):
    bin_, empty = installed
    return subprocess.run([str(bin_ / "llmodal"), *args], cwd=empty, env=_env(**env), capture_output=True,
                          text=True, timeout=300)


def test_the_install_is_the_wheel_and_pulls_no_cuda(installed):
    bin_, empty = installed
    r = subprocess.run([str(bin_ / "python"), "-c", "import llmodal, sys; print(llmodal.__file__)"], cwd=empty,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert "site-packages" in r.stdout and str(ROOT) not in r.stdout, r.stdout + r.stderr
    frozen = subprocess.run([str(bin_ / "python"), "-m", "pip", "freeze"], capture_output=True, text=True,
                            timeout=120).stdout.lower()
    assert "torch" not in frozen and "nvidia" not in frozen and "vllm" not in frozen


def test_plan_and_dry_run_from_an_empty_folder(installed):
    r = _run(installed, "plan")
    assert r.returncode == 0 and "AWQ" in r.stdout, r.stdout + r.stderr
    r = _run(installed, "deploy", "--dry-run", "--json", **KEY)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["app"] == "vllm-llama70b" and doc["gateway"]["label"] == "vllm-llama70b-serve-vllm"
    assert "0123456789" not in r.stdout


def test_serve_dry_run_with_the_guides_env_refuses_clearly(installed):
    _, empty = installed
    (empty / ".env").write_text("VLLM_BASE_URL=https://ws--vllm-llama70b-serve-vllm.modal.run/v1\n"
                                "VLLM_MODEL=meta-llama/Llama-3.1-70B-Instruct\nVLLM_API_KEY=your-secret-key\n")
    try:
        r = _run(installed, "serve", "--dry-run")
    finally:
        (empty / ".env").unlink()
    # No GPU and 23 GiB of RAM here: a clear refusal with its fixes, never a traceback or a missing module.
    assert r.returncode == 3 and "131.4 GiB of weights" in r.stderr and "deploy to Modal" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "ModuleNotFoundError" not in r.stderr


def _what_was_sent(calls):
    fns = sent_functions(calls)
    labels = {n: sorted(w.requested_suffix for w in [f.webhook_config, *(d.webhook_config for d in
                                                                            f.method_definitions.values())]
                        if w.type) for n, f in fns.items()}
    images = sorted(cmd for c in calls["ImageGetOrCreate"] for cmd in c.image.dockerfile_commands)
    return [c.description for c in calls["AppCreate"]], labels, images


def test_installed_deploy_sends_what_the_checkout_sends(installed, tmp_path):
    bin_, empty = installed
    r, calls = deploy_via_fake(tmp_path / "a", [str(bin_ / "llmodal"), "deploy", "--env-file", ""], cwd=empty,
                                PATH=_env()["PATH"], **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VLLM_BASE_URL=https://acme--vllm-llama70b-serve-vllm.modal.run/v1" in r.stdout
    checkout, checkout_calls = deploy_via_fake(tmp_path / "b", [sys.executable, "-m", "modal", "deploy",
                                                                 "modal_vllm.py"], **KEY)
    assert checkout.returncode == 0, checkout.stdout + checkout.stderr
    assert _what_was_sent(calls) == _what_was_sent(checkout_calls)
    apps, labels, _ = _what_was_sent(calls)
    assert apps == ["vllm-llama70b"] and labels["serve_vllm"] == ["vllm-llama70b-serve-vllm"]


def test_init_writes_the_guides_files_and_modal_deploy_works_from_there(installed, tmp_path):
    bin_, _ = installed
    folder = tmp_path / "project"
    folder.mkdir()
    env = _env()
    r = subprocess.run([str(bin_ / "llmodal"), "init"], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (folder / "modal_vllm.py").read_text() == (ROOT / "modal_vllm.py").read_text()  # one text, two places
    assert "# VLLM_MAX_MODEL_LEN=8192" in (folder / ".env").read_text()
    (folder / ".env").write_text("mine\n")
    again = subprocess.run([str(bin_ / "llmodal"), "init"], cwd=folder, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "kept" in again.stdout and ".env" in again.stdout, again.stdout + again.stderr
    assert (folder / ".env").read_text() == "mine\n"  # never overwritten without --force
    (folder / "modal_vllm.py").unlink()  # a folder with the guide's client .env only: the missing file is written
    third = subprocess.run([str(bin_ / "llmodal"), "init"], cwd=folder, env=env, capture_output=True, text=True,
                           timeout=60)
    assert third.returncode == 0 and (folder / "modal_vllm.py").read_text() == (ROOT / "modal_vllm.py").read_text()
    assert (folder / ".env").read_text() == "mine\n"
    (folder / ".env").unlink()
    r, calls = deploy_via_fake(tmp_path / "h", [str(bin_ / "python"), "-m", "modal", "deploy", "modal_vllm.py"],
                                cwd=folder, PATH=env["PATH"], **KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "https://acme--vllm-llama70b-serve-vllm.modal.run" in r.stdout
