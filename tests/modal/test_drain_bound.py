"""LLMODAL_DRAIN_TIMEOUT on Modal: the exit hook (drain, then vLLM's stop) must end inside Modal's exit grace, or
Modal kills the container mid-drain. A longer drain is refused on every deploy path; `llmodal serve` keeps 600."""

import sys
import time

import pytest

# "The exit handler is given a grace period of 30 seconds to finish, and it will be killed if it takes longer than
# that to complete." https://modal.com/docs/guide/lifecycle-functions (read 2026-12-07)
MODAL_EXIT_GRACE_S = 30
PROXY = {"MODAL_PROXY_TOKEN_ID": "wk-a", "MODAL_PROXY_TOKEN_SECRET": "ws-b"}


def _settings(monkeypatch, drain):
    from llmodal.core.config import load_settings

    for k, v in PROXY.items():
        monkeypatch.setenv(k, v)
    return load_settings(None, drain_timeout_s=drain, server_api_key="k" * 32)


def test_a_drain_modal_would_cut_is_refused_with_the_variable_the_value_and_the_range(monkeypatch):
    from llmodal.core.errors import ConfigError, PreflightError
    from llmodal.modal.preflight import preflight, rehearse
    from llmodal.modal.spec import app_spec

    too_long = _settings(monkeypatch, 60)
    with pytest.raises(PreflightError) as e:  # `llmodal deploy` and its dry run
        preflight(too_long, need_token=False, env_file=None)
    with pytest.raises(ConfigError) as spec_e:  # `modal deploy modal_vllm.py`, and the container importing the app
        app_spec(too_long)
    for text in (str(e.value), str(spec_e.value)):
        assert "LLMODAL_DRAIN_TIMEOUT=60 is invalid on Modal: expected 0 to " in text, text
        assert "30 s after its exit hook starts" in text and "nothing was sent" in str(e.value)
    limit = int(str(spec_e.value).split("expected 0 to ")[1].split()[0])
    assert 15 <= limit < MODAL_EXIT_GRACE_S  # the default (20) deploys
    ok = _settings(monkeypatch, limit)
    assert preflight(ok, need_token=False, env_file=None) is not None and rehearse(ok)["app"]
    with pytest.raises(ConfigError, match=f"LLMODAL_DRAIN_TIMEOUT={limit + 1} is invalid on Modal"):
        app_spec(_settings(monkeypatch, limit + 1))
    assert _settings(monkeypatch, 600).drain_timeout_s == 600  # `llmodal serve` has no such grace


def test_the_longest_drain_allowed_and_the_stop_fit_in_modals_grace(monkeypatch, tmp_path):
    """The exit hook's worst case: a server that ignores SIGTERM is waited on for the drain, then killed. Measured
    here with a drain of 0 on a real process; the longest drain allowed plus that must stay inside the grace."""
    from conftest import free_port
    from llmodal.engine.launch import Launch
    from llmodal.modal.container import stop_server
    from llmodal.modal.spec import MAX_DRAIN_S
    from llmodal.run.supervisor import Supervisor

    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(600)"]
    sup = Supervisor(Launch(stubborn, {}, "127.0.0.1", free_port()), log_path=tmp_path / "log")
    sup.start()
    deadline = time.monotonic() + 60
    while "up" not in sup.tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sup.alive() and "up" in sup.tail(), sup.tail()
    t0 = time.monotonic()
    stop_server(sup, _settings(monkeypatch, 0))
    stop = time.monotonic() - t0
    assert not sup.alive()
    assert MAX_DRAIN_S + stop < MODAL_EXIT_GRACE_S, (MAX_DRAIN_S, stop)
