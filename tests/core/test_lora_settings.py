"""VLLM_LORA_MODULES and vLLM's LoRA limits: parsed, refused with the variable, the value and the fix,
rendered by the flag table only."""

import pytest
from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.core.config import load_settings
from llmodal.core.errors import ConfigError
from llmodal.engine.launch import build_launch

SHA = "0123456789abcdef0123456789abcdef01234567"

BAD = [
    # (environment, what the message must say)
    ({"VLLM_LORA_MODULES": "a=org/x,a=org/y"}, "'a' is listed twice"),
    ({"VLLM_LORA_MODULES": "meta-llama/Llama-3.1-70B-Instruct=org/x"}, "VLLM_MODEL's name"),
    ({"VLLM_MODEL": "m1", "VLLM_LORA_MODULES": "m1=org/x"}, "VLLM_MODEL's name"),
    ({"VLLM_LORA_MODULES": "a=org/x@0123abc"}, "shortened commit"),
    ({"VLLM_LORA_MODULES": "a=org/x@"}, "empty revision"),
    ({"VLLM_LORA_MODULES": "a=org/x@bad..ref"}, "not a branch, tag or full 40-hex commit"),
    ({"VLLM_LORA_MODULES": "a=org/x@" + SHA.upper()}, "lower-case hex"),
    ({"VLLM_LORA_MODULES": "a=/no/such/folder@main"}, "has no @revision"),
    ({"VLLM_LORA_MODULES": "a=just-a-name"}, "neither a hub repo id"),
    # the hub's own repo-id rule (huggingface_hub.validate_repo_id) and git's ref rules
    ({"VLLM_LORA_MODULES": "a=org/x--y"}, "is not a hub repo id"),
    ({"VLLM_LORA_MODULES": "a=org/x..y"}, "is not a hub repo id"),
    ({"VLLM_LORA_MODULES": "a=org/x."}, "is not a hub repo id"),
    ({"VLLM_LORA_MODULES": "a=o/x.git"}, "is not a hub repo id"),
    ({"VLLM_LORA_MODULES": "a=org/" + "x" * 97}, "maximum length is 96"),
    ({"VLLM_LORA_MODULES": "a=org/x@feature/"}, "git's ref rules"),
    ({"VLLM_LORA_MODULES": "a=org/x@a.lock"}, "git's ref rules"),
    ({"VLLM_LORA_MODULES": "a=org/x@rel/.hidden"}, "git's ref rules"),
    ({"VLLM_LORA_MODULES": "org/x"}, "is not name=source"),
    ({"VLLM_LORA_MODULES": "a b=org/x"}, "is not a model name"),
    ({"VLLM_LORA_MODULES": "a=org/x,,b=org/y"}, "empty entry"),
    ({"VLLM_LORA_MODULES": "a=org/x", "VLLM_MAX_LORA_RANK": "24"}, "one of 1, 8, 16, 32, 64, 128, 256, 320, 512"),
    ({"VLLM_LORA_MODULES": "a=org/x", "VLLM_MAX_LORAS": "2"}, "expected at most 1"),
    ({"VLLM_LORA_MODULES": "a=org/x", "VLLM_MAX_LORAS": "0"}, "an integer from 1 to 256"),
    ({"VLLM_MAX_LORAS": "2"}, "VLLM_LORA_MODULES lists no adapter"),
    ({"VLLM_MAX_LORA_RANK": "16"}, "VLLM_LORA_MODULES lists no adapter"),
]


@pytest.mark.parametrize("env,says", BAD, ids=[str(e) for e, _ in BAD])
def test_bad_lora_settings_name_the_variable_value_and_fix(monkeypatch, env, says):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as e:
        load_settings(None)
    msg = str(e.value)
    var = next(k for k in ("VLLM_MAX_LORA_RANK", "VLLM_MAX_LORAS", "VLLM_LORA_MODULES") if k in env)
    assert var in msg and repr(env[var]) in msg and says in msg, msg


def test_bad_lora_setting_exits_2_before_anything(monkeypatch):
    monkeypatch.setenv("VLLM_LORA_MODULES", "a=org/x,a=org/y")
    r = CliRunner().invoke(app, ["serve", "--dry-run", "--env-file", ""])
    assert r.exit_code == 2 and "VLLM_LORA_MODULES" in r.output, r.output


@pytest.mark.parametrize("spelled", ["org/x--y", "org/x.", "o/x.git", "org/x@feature/", "org/x@a.lock"])
def test_bad_hub_ids_exit_2_naming_the_variable(monkeypatch, spelled):
    monkeypatch.setenv("VLLM_LORA_MODULES", f"a={spelled}")
    r = CliRunner().invoke(app, ["plan", "--env-file", ""])
    assert r.exit_code == 2 and "VLLM_LORA_MODULES" in r.output and "Traceback" not in r.output, r.output


def test_good_entries_parse(tmp_path):
    s = load_settings(None, lora_modules=f"sql=org/sql-lora, poet=org/poet@v2 ,br=org/a-b.c_d@feature/x-1.2,pin=org/p@{SHA},local={tmp_path}")
    got = [(a.name, a.source, a.revision, a.is_folder, a.pinned) for a in s.adapters]
    assert got == [("sql", "org/sql-lora", None, False, False), ("poet", "org/poet", "v2", False, False),
                   ("br", "org/a-b.c_d", "feature/x-1.2", False, False),
                   ("pin", "org/p", SHA, False, True), ("local", str(tmp_path), None, True, False)]


def test_lora_flags_come_from_the_table_and_only_with_adapters():
    s = load_settings(None)
    plain = build_launch(s).argv
    assert not any("lora" in a for a in plain[1:])
    argv = build_launch(s, lora_modules=("a=/x", "b=/y"), max_loras=2, max_lora_rank=16,
                        served_models="m,a,b").argv
    assert argv[argv.index("--lora-modules") + 1:argv.index("--lora-modules") + 3] == ["a=/x", "b=/y"]
    assert argv[argv.index("--max-loras") + 1] == "2" and argv[argv.index("--max-lora-rank") + 1] == "16"
    assert argv[argv.index("--max-cpu-loras") + 1] == "2" and "--enable-lora" in argv


@pytest.mark.parametrize("flag,owner", [("--lora-modules", "VLLM_LORA_MODULES"), ("--max-loras", "VLLM_MAX_LORAS"),
                                        ("--max_lora_rank", "VLLM_MAX_LORA_RANK"), ("--enable-lora", "VLLM_LORA_MODULES"),
                                        ("--fully-sharded-loras", "the planner"), ("--lora-dtype", "the planner"),
                                        ("--lora-target-modules", "the planner"),
                                        ("--lora_target_modules", "the planner"),
                                        ("--specialize-active-lora", "the planner"),
                                        ("--enable-mixed-moe-lora-format", "the planner"),
                                        ("--enable-moe-shared-loras", "the planner")])
def test_extra_args_cannot_set_lora_flags(monkeypatch, flag, owner):
    monkeypatch.setenv("VLLM_EXTRA_ARGS", f"{flag} 8")
    with pytest.raises(ConfigError) as e:
        load_settings(None)
    assert owner in str(e.value)


def test_runtime_lora_loading_is_never_inherited():
    """An operator's VLLM_ALLOW_RUNTIME_LORA_UPDATING=1 would register the load/unload routes: the launch
    drops it from the child's environment."""
    launch = build_launch(load_settings(None), lora_modules=("a=/x",), max_loras=1, max_lora_rank=8)
    env = launch.child_env({"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1", "PATH": "/bin"})
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in env and env["PATH"] == "/bin"
