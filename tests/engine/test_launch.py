import os

import pytest

from llmodal.core.config import load_settings
from llmodal.engine.launch import build_launch


def _arg(argv, flag):
    return argv[argv.index(flag) + 1]


def test_argv_from_settings_and_key_only_in_env(monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "super-secret-key-1234")
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--enforce-eager --seed 8")
    s = load_settings(None)
    launch = build_launch(s, checkpoint="hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4", python="py")
    argv = launch.argv
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert _arg(argv, "--model") == "hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4"
    assert _arg(argv, "--served-model-name") == "meta-llama/Llama-3.1-70B-Instruct"
    assert _arg(argv, "--max-model-len") == "8192"
    assert _arg(argv, "--gpu-memory-utilization") == "0.95"
    assert _arg(argv, "--tensor-parallel-size") == "1"
    assert _arg(argv, "--host") == "127.0.0.1" and _arg(argv, "--port") == "8000"
    assert _arg(argv, "--middleware") == "llmodal.engine.auth.BearerAuthMiddleware"
    assert argv[-3:] == ["--enforce-eager", "--seed", "8"]
    assert "--quantization" not in argv  # the AWQ checkpoint says so itself
    assert not any("super-secret" in a for a in argv) and "--api-key" not in argv
    assert "super-secret" not in launch.shell() and "super-secret" not in repr(launch)
    env = launch.child_env({"VLLM_SERVER_API_KEY": "x", "VLLM_MODEL": "m", "PATH": "/bin"})
    assert env["LLMODAL_API_KEYS"] == "super-secret-key-1234"
    assert "VLLM_SERVER_API_KEY" not in env and "VLLM_MODEL" not in env and env["PATH"] == "/bin"


def test_no_key_means_no_key_in_child_env():
    launch = build_launch(load_settings(None), api_key="")
    env = launch.child_env({"VLLM_API_KEY": "stale-client-key", "LLMODAL_API_KEYS": "stale"})
    assert "VLLM_API_KEY" not in env and "LLMODAL_API_KEYS" not in env


def test_on_the_fly_quantization_and_revision(monkeypatch):
    monkeypatch.setenv("VLLM_MODEL_REVISION", "abc123")
    s = load_settings(None, model="mistralai/Mistral-7B-Instruct-v0.3", gpu_count=2)
    argv = build_launch(s, quantization="fp8").argv
    assert _arg(argv, "--quantization") == "fp8"
    assert _arg(argv, "--revision") == "abc123"
    assert _arg(argv, "--tensor-parallel-size") == "2"
    # The revision pins the user's repo, not a swapped-in checkpoint.
    assert "--revision" not in build_launch(s, checkpoint="other/repo").argv


def test_base_url_for_wildcard_bind():
    assert build_launch(load_settings(None, host="0.0.0.0", port=9000)).base_url == "http://127.0.0.1:9000/v1"


def test_flag_table_generates_argv_and_kv_bytes_from_the_plan(monkeypatch):
    from llmodal.engine.prepare import prepare

    monkeypatch.setenv("VLLM_SERVER_API_KEY", "k-0123456789")
    prep = prepare(load_settings(None, gpu="H100"), gpu=True)
    argv = prep.launch.argv
    plan = prep.resolution.chosen
    assert int(_arg(argv, "--kv-cache-memory-bytes")) == plan.kv_cache_bytes > 30 * 2**30
    assert _arg(argv, "--tool-call-parser") == "llama3_json" and "--enable-auto-tool-choice" in argv
    assert "--enable-force-include-usage" in argv


def test_every_reserved_flag_in_every_spelling_is_refused(monkeypatch):
    from llmodal.core import vllm_flags as flags
    from llmodal.core.errors import ConfigError

    for flag, owner in flags.reserved().items():
        spellings = [flag] if not flag.startswith("--") else [flag, "--" + flag[2:].replace("-", "_")]
        for sp in spellings:
            for text in (f"--enforce-eager {sp} 1", f"{sp}=1"):
                monkeypatch.setenv("VLLM_EXTRA_ARGS", text)
                with pytest.raises(ConfigError) as e:
                    load_settings(None)
                assert "VLLM_EXTRA_ARGS" in str(e.value) and owner in str(e.value), (text, str(e.value))


def test_extra_args_abbreviation_and_negation_are_refused(monkeypatch):
    from llmodal.core.errors import ConfigError

    for text in ("--api-k=abc", "--max-model 4096", "--no-enable-force-include-usage", "--GPU_MEMORY_UTILIZATION 0.5"):
        monkeypatch.setenv("VLLM_EXTRA_ARGS", text)
        with pytest.raises(ConfigError):
            load_settings(None)


def test_extra_args_that_are_not_ours_pass(monkeypatch):
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--enable-prefix-caching --seed=-1 --limit-mm-per-prompt '{\"image\": 0}'")
    assert load_settings(None).extra_argv[-1] == '{"image": 0}'


def test_the_key_cannot_reach_argv_even_through_extra(monkeypatch):
    from llmodal.core.errors import ConfigError

    monkeypatch.setenv("VLLM_SERVER_API_KEY", "sekrit-1234567")
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--api_key=sekrit-1234567")
    with pytest.raises(ConfigError) as e:
        load_settings(None)
    assert "sekrit" not in str(e.value)


def test_parser_names_are_read_from_vllms_source_as_vllm_registers_them():
    """The container validates VLLM_TOOL_CALL_PARSER / VLLM_REASONING_PARSER before launching vLLM:
    from vLLM's registry tables read as text, which must list what vLLM itself registers."""
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    from llmodal.engine.prepare import installed_parsers

    tools, reasoning = installed_parsers()
    assert tools == set(ToolParserManager.tool_parsers) | set(ToolParserManager.lazy_parsers)
    assert reasoning == set(ReasoningParserManager.reasoning_parsers) | set(ReasoningParserManager.lazy_parsers)
    assert "llama3_json" in tools and "hermes" in tools


def test_preparing_a_start_does_not_import_vllm():
    """Importing vLLM and torch took 9–12 s on this CPU, in front of every container start."""
    import subprocess
    import sys

    code = ("import sys; from llmodal.core.config import load_settings; from llmodal.engine.prepare import prepare;"
            "s = load_settings(None, server_api_key='k' * 24, gpu='H200', tool_call_parser='hermes');"
            "prepare(s, gpu=True); print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}).stdout
    assert out.strip() == "[]"


def test_a_parser_vllm_does_not_offer_is_refused_before_launch():
    from llmodal.core.errors import ConfigError
    from llmodal.engine.prepare import prepare

    s = load_settings(None, server_api_key="k" * 24, gpu="H200", tool_call_parser="no_such_parser")
    with pytest.raises(ConfigError, match="VLLM_TOOL_CALL_PARSER='no_such_parser' is invalid.*hermes"):
        prepare(s, gpu=True)
