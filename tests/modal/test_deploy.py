"""doctor and env: the checks say their fix; client settings for Modal and local."""

from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.core.envfile import read_env


def test_doctor_reports_each_failure_with_its_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "VLLM_SERVER_API_KEY",
              "MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET"):
        monkeypatch.delenv(k, raising=False)
    r = CliRunner().invoke(app, ["doctor", "--env-file", ""], env={"COLUMNS": "300"})
    assert r.exit_code == 1
    assert "modal token new" in r.output and "vllm-secrets" in r.output and "plan fits" in r.output
    assert "Modal proxy token" in r.output and "proxy-auth-tokens" in r.output  # named before anything is deployed


def test_doctor_passes_the_proxy_token_from_the_env_file(monkeypatch, tmp_path):
    from llmodal.core.config import load_settings
    from llmodal.modal.preflight import doctor_checks

    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "none.toml"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for k in ("MODAL_PROXY_TOKEN_ID", "MODAL_PROXY_TOKEN_SECRET"):
        monkeypatch.delenv(k, raising=False)
    env = tmp_path / "deploy.env"

    def proxy_check():
        return next(c for c in doctor_checks(load_settings(str(env)), str(env)) if c.name == "Modal proxy token")

    env.write_text("MODAL_PROXY_TOKEN_ID=wk-abc\n")
    half = proxy_check()
    assert half.ok is False and half.detail == "MODAL_PROXY_TOKEN_SECRET not set here", half
    assert "proxy-auth-tokens" in half.fix and "vllm-secrets" in half.fix
    env.write_text("MODAL_PROXY_TOKEN_ID=wk-abc\nMODAL_PROXY_TOKEN_SECRET=ws-def\n")
    whole = proxy_check()
    assert whole.ok is True and "ws-def" not in whole.detail + whole.fix


def test_doctor_catches_a_client_key_that_differs(monkeypatch, tmp_path):
    (tmp_path / ".modal.toml").write_text('[default]\ntoken_id = "ak-x"\ntoken_secret = "as-x"\n')
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / ".modal.toml"))
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "hf_dummy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "server-key-aaaaaaaaaaaa")
    monkeypatch.setenv("VLLM_API_KEY", "client-key-bbbbbbbbbbbb")
    r = CliRunner().invoke(app, ["doctor", "--env-file", ""], env={"COLUMNS": "200"})
    assert r.exit_code == 1 and "differs" in r.output
    assert "server-key-aaaa" not in r.output and "client-key-bbbb" not in r.output


def test_env_for_modal_writes_the_guides_three_lines(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "server-key-0123456789abcdef")
    f = tmp_path / ".env"
    f.write_text("OTHER=1\n")
    r = CliRunner().invoke(app, ["env", "--env-file", "", "--workspace", "acme", "--write", str(f)])
    assert r.exit_code == 0, r.output
    assert read_env(f) == {"OTHER": "1",
                           "VLLM_BASE_URL": "https://acme--vllm-llama70b-serve-vllm.modal.run/v1",
                           "VLLM_MODEL": "meta-llama/Llama-3.1-70B-Instruct",
                           "VLLM_API_KEY": "server-key-0123456789abcdef"}
    shown = CliRunner().invoke(app, ["env", "--env-file", "", "--workspace", "acme"])
    assert "VLLM_API_KEY=****cdef" in shown.output and "0123456789" not in shown.output


def test_status_makes_no_request_to_the_app_without_probe(tmp_path):
    import os
    import subprocess
    import sys

    from conftest import Listener

    app, modal_api = Listener(), Listener()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_"))}
    env.update(HOME=str(tmp_path), MODAL_SERVER_URL=modal_api.url, MODAL_TOKEN_ID="ak-x", MODAL_TOKEN_SECRET="as-x")
    argv = [sys.executable, "-m", "llmodal.cli", "status", "--env-file", "", "--base-url", app.url + "/v1",
            "--api-key", "k"]
    subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert app.connections == 0  # a scaled-to-zero app is not woken (and billed) by `status`
    subprocess.run([*argv, "--probe"], env=env, capture_output=True, text=True, timeout=120)
    assert app.connections > 0
