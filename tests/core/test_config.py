import pytest
from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.core.config import load_settings
from llmodal.core.errors import ConfigError

BAD = [
    ("VLLM_MAX_MODEL_LEN", "abc", "an integer from 16 to 1048576"),
    ("VLLM_MAX_MODEL_LEN", "0", "an integer from 16 to 1048576"),
    ("VLLM_GPU_MEMORY_UTILIZATION", "1.5", "greater than 0 and at most 1"),
    ("VLLM_GPU_MEMORY_UTILIZATION", "0", "greater than 0 and at most 1"),
    ("VLLM_TENSOR_PARALLEL_SIZE", "0", "an integer from 1 to 8"),
    ("LLMODAL_GPU", "Z100", "A100-80GB"),
    ("VLLM_QUANTIZATION", "int3", "auto, none, fp8"),
    ("LLMODAL_SCALEDOWN_WINDOW", "-5", "seconds from 2 to 3600"),
    ("VLLM_PORT", "70000", "1 to 65535"),
]


@pytest.mark.parametrize("var,value,allowed", BAD)
def test_bad_value_names_variable_value_and_range(monkeypatch, var, value, allowed):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as e:
        load_settings(None)
    msg = str(e.value)
    assert var in msg and repr(value) in msg and allowed in msg


@pytest.mark.parametrize("var,value,allowed", BAD)
def test_bad_value_exits_2_before_anything_starts(monkeypatch, var, value, allowed):
    monkeypatch.setenv(var, value)
    r = CliRunner().invoke(app, ["plan", "--env-file", ""])
    assert r.exit_code == 2, r.output
    assert var in r.output


def test_defaults_are_the_guides():
    s = load_settings(None)
    assert (s.model, s.max_model_len, s.gpu_memory_utilization, s.tp) == (
        "meta-llama/Llama-3.1-70B-Instruct", 8192, 0.95, 1)
    assert (s.app_name, s.secret_name, s.scaledown_window_s, s.timeout_s) == (
        "vllm-llama70b", "vllm-secrets", 900, 86400)


def test_tp_above_gpu_count_is_refused(monkeypatch):
    monkeypatch.setenv("VLLM_TENSOR_PARALLEL_SIZE", "2")
    with pytest.raises(ConfigError, match="VLLM_TENSOR_PARALLEL_SIZE.*LLMODAL_GPU_COUNT"):
        load_settings(None)


def test_key_is_never_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "sekrit-value-with-space ")
    with pytest.raises(ConfigError) as e:
        load_settings(None)
    assert "sekrit" not in str(e.value) and "VLLM_SERVER_API_KEY" in str(e.value)


def test_empty_key_means_no_key(monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "")
    assert load_settings(None).api_key() is None


def test_env_file_is_read_and_environment_wins(tmp_path, monkeypatch):
    f = tmp_path / ".env"
    f.write_text("VLLM_MAX_MODEL_LEN=4096\nVLLM_MODEL=from-file\n")
    monkeypatch.setenv("VLLM_MODEL", "from-env")
    s = load_settings(str(f))
    assert s.max_model_len == 4096 and s.model == "from-env"


def test_extra_args_cannot_smuggle_the_key(monkeypatch):
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--enforce-eager --api-key=abc")
    with pytest.raises(ConfigError, match="--api-key"):
        load_settings(None)
