from llmodal.config import load_settings
from llmodal.vllm_args import build_launch


def _arg(argv, flag):
    return argv[argv.index(flag) + 1]


def test_argv_from_settings_and_key_only_in_env(monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_API_KEY", "super-secret-key-1234")
    monkeypatch.setenv("VLLM_EXTRA_ARGS", "--enforce-eager --max-num-seqs 8")
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
    assert _arg(argv, "--middleware") == "llmodal.auth.BearerAuthMiddleware"
    assert argv[-3:] == ["--enforce-eager", "--max-num-seqs", "8"]
    assert "--quantization" not in argv  # the AWQ checkpoint says so itself
    assert not any("super-secret" in a for a in argv) and "--api-key" not in argv
    assert "super-secret" not in launch.shell() and "super-secret" not in repr(launch)
    env = launch.child_env({"VLLM_SERVER_API_KEY": "x", "VLLM_MODEL": "m", "PATH": "/bin"})
    assert env["VLLM_API_KEY"] == "super-secret-key-1234"
    assert "VLLM_SERVER_API_KEY" not in env and "VLLM_MODEL" not in env and env["PATH"] == "/bin"


def test_no_key_means_no_key_in_child_env():
    launch = build_launch(load_settings(None), api_key="")
    assert "VLLM_API_KEY" not in launch.child_env({"VLLM_API_KEY": "stale-client-key"})


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
