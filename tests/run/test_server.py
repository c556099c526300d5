"""End to end against a real vLLM process on the CPU engine, through the real openai SDK."""

import os
import subprocess
import sys

import openai
import pytest

from conftest import TEST_KEY, TEST_VLLM_ARGS, free_port

LLMODAL = [sys.executable, "-m", "llmodal.cli"]
pytestmark = pytest.mark.server


def _oa(server, key=TEST_KEY):
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def test_models_chat_and_stream_through_openai_sdk(server):
    oa = _oa(server)
    assert [m.id for m in oa.models.list().data] == [server.model]
    r = oa.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "你好，请介绍一下你自己"}],
                                   temperature=0.7, max_tokens=32)
    assert r.choices[0].message.content and r.usage.completion_tokens == 32
    chunks = [c.choices[0].delta.content for c in oa.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "hello"}], max_tokens=16, stream=True)
        if c.choices and c.choices[0].delta.content]
    assert len(chunks) > 1


def test_wrong_key_is_401_for_the_sdk(server):
    with pytest.raises(openai.AuthenticationError):
        _oa(server, key="nope").models.list()


def _smoke(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update(env_extra or {})
    return subprocess.run([*LLMODAL, "smoke", "--env-file", "", "--max-tokens", "32", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def test_smoke_passes_against_the_server(server):
    r = _smoke("--base-url", server.base_url, "--api-key", TEST_KEY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "7/7 checks passed" in r.stdout


def test_smoke_reads_the_client_env(server, tmp_path):
    from llmodal.core.envfile import write_env

    write_env(tmp_path / ".env", {"VLLM_BASE_URL": server.base_url, "VLLM_MODEL": server.model,
                                  "VLLM_API_KEY": TEST_KEY})
    r = subprocess.run([*LLMODAL, "smoke", "--max-tokens", "16"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path, env={k: v for k, v in os.environ.items() if not k.startswith("VLLM_")})
    assert r.returncode == 0, r.stdout + r.stderr
    assert TEST_KEY not in r.stdout + r.stderr


def test_smoke_fails_with_wrong_key(server):
    r = _smoke("--base-url", server.base_url, "--api-key", "wrong-key")
    assert r.returncode != 0 and "FAIL" in r.stdout


def test_smoke_fails_against_a_dead_port():
    r = _smoke("--base-url", f"http://127.0.0.1:{free_port()}/v1", "--api-key", "k")
    assert r.returncode != 0 and "0/7 checks passed" in r.stdout


def test_serve_bad_model_path_exits_with_the_cause(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--model", str(empty), "--port", str(free_port()),
                        "--max-restarts", "0"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0
    assert "model could not be loaded" in r.stderr and "not-a-model" in r.stderr


def test_serve_refuses_a_port_in_use(server):
    port = server.base_url.rsplit(":", 1)[1].split("/")[0]
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--port", port], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "already in use" in r.stderr


@pytest.mark.parametrize("env_extra,needle", [
    ({"VLLM_GPU_MEMORY_UTILIZATION": "0.00001"}, "out of memory: run `llmodal plan`"),
    # All of RAM for KV: vLLM's CPU engine refuses it against one NUMA node's free memory before allocating.
    ({"VLLM_GPU_MEMORY_UTILIZATION": "0.99", "LLMODAL_FORCE": "true"}, "does not fit this NUMA node's free memory"),
])
def test_serve_startup_failures_are_classified(tiny_model, env_extra, needle):
    env = dict(os.environ, HF_HUB_OFFLINE="1", VLLM_EXTRA_ARGS=TEST_VLLM_ARGS, **env_extra)
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--model", str(tiny_model), "--max-model-len", "2048",
                        "--port", str(free_port()), "--max-restarts", "0"], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 4  # one cause, not a traceback


def test_extra_args_that_override_the_plan_are_refused_before_start(tiny_model):
    env = dict(os.environ, VLLM_EXTRA_ARGS="--max_model_len=4096")
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--dry-run"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 2 and "VLLM_EXTRA_ARGS" in r.stderr and "VLLM_MAX_MODEL_LEN" in r.stderr, r.stderr


def test_dry_run_prints_the_command_and_masks_the_key(tiny_model):
    env = dict(os.environ, VLLM_SERVER_API_KEY="dry-run-key-0123456789")
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--dry-run"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "vllm.entrypoints.openai.api_server" in r.stdout and "--tool-call-parser llama3_json" in r.stdout
    assert "LLMODAL_API_KEYS=<set, hidden>" in r.stdout and "0123456789" not in r.stdout
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--dry-run", "--gpu"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0 and "--kv-cache-memory-bytes" in r.stdout and "fits" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("key", ["auto", "llama", "8000", "your-secret-key"])
def test_any_key_without_whitespace_or_commas_starts(tiny_model, key):
    """A key that happens to be a word of the command line is not "on" it; a short one starts with a warning."""
    env = dict(os.environ, VLLM_SERVER_API_KEY=key)
    r = subprocess.run([*LLMODAL, "serve", "--env-file", "", "--dry-run"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("warning: VLLM_SERVER_API_KEY")]
    assert len(warnings) == 1 and f"has {len(key)} characters" in warnings[0] and key not in warnings[0]


def test_serve_passes_every_rotation_key_to_the_guard(tiny_model):
    """`llmodal serve` with k1,k2: the guard gets both (the real server accepting each is test_auth's)."""
    from rich.console import Console

    from llmodal.core.config import load_settings
    from llmodal.run.local import prepare_local

    settings = load_settings(None, server_api_key="first-key-0000000000,second-key-000000000")
    local = prepare_local(settings, model_given=False, gpu=False, console=Console(quiet=True), env_file=None,
                          dry_run=True)
    assert local.prep.launch.env["LLMODAL_API_KEYS"] == "first-key-0000000000,second-key-000000000"
    assert local.api_key == "first-key-0000000000"  # what llmodal's own client sends
