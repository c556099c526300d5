import stat

from llmodal.core.envfile import mask, read_env, write_env


def test_write_keeps_other_lines_and_replaces_ours(tmp_path):
    f = tmp_path / ".env"
    f.write_text("# my app\nOPENAI_ORG=x\nexport VLLM_BASE_URL=http://old/v1\nVLLM_BASE_URL=dup\nLAST=1")
    write_env(f, {"VLLM_BASE_URL": "http://127.0.0.1:8000/v1", "VLLM_MODEL": "m", "VLLM_API_KEY": "k e y\"q"})
    text = f.read_text()
    assert text.startswith("# my app\nOPENAI_ORG=x\nVLLM_BASE_URL=http://127.0.0.1:8000/v1\nLAST=1\n")
    assert text.count("VLLM_BASE_URL") == 1
    assert read_env(f) == {"OPENAI_ORG": "x", "VLLM_BASE_URL": "http://127.0.0.1:8000/v1", "LAST": "1",
                           "VLLM_MODEL": "m", "VLLM_API_KEY": 'k e y"q'}
    assert stat.S_IMODE(f.stat().st_mode) == 0o600


def test_mask_never_shows_a_short_key():
    assert mask("abcd") == "****" and mask(None) == "(none)"
    assert mask("llmodal-0123456789abcdef") == "****cdef"
