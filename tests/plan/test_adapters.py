"""Adapters checked against the base before anyone pays, and charged by the planner before the KV cache."""

import json

import pytest
from typer.testing import CliRunner

from llmodal.cli import app
from llmodal.core.config import load_settings
from llmodal.core.errors import ConfigError
from llmodal.engine.prepare import prepare
from llmodal.engine.tiny_adapter import write_adapter
from llmodal.engine.tiny_model import SERVED_NAME
from llmodal.plan.planner import plan_for_settings

BASE70 = "meta-llama/Llama-3.1-70B-Instruct"


def _point_hub_at(monkeypatch, url):
    """huggingface_hub reads HF_ENDPOINT once, at import: its two module constants are what it uses."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "ENDPOINT", url)
    monkeypatch.setattr(hc, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def _config_only(path, **cfg):
    """An adapter folder with its config and no weights (the 70B's weights are not needed to plan)."""
    path.mkdir(parents=True, exist_ok=True)
    doc = {"peft_type": "LORA", "r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": BASE70}
    (path / "adapter_config.json").write_text(json.dumps({**doc, **cfg}))
    return path


def _cpu(tiny_model, modules, **kw):
    s = load_settings(None, lora_modules=modules, **kw)
    return prepare(s, gpu=False, tiny_model=str(tiny_model), tiny_name=SERVED_NAME, api_key="k")


def _argv_value(argv, flag):
    return argv[argv.index(flag) + 1]


def test_a_good_folder_adapter_sets_vllms_limits(tiny_model, tmp_path):
    a = write_adapter(tmp_path / "a", tiny_model, rank=12, base_name=SERVED_NAME)
    argv = _cpu(tiny_model, f"a={a}").launch.argv
    assert _argv_value(argv, "--max-lora-rank") == "16"  # 12 rounded up to a rank vLLM takes
    assert _argv_value(argv, "--lora-modules") == f"a={a}"


@pytest.mark.parametrize("kw,says", [
    (dict(targets=("q_proj", "w_proj")), "targets ['w_proj'], which"),
    (dict(config={"peft_type": "IA3"}), "vLLM serves LoRA adapters only"),
    (dict(config={"use_dora": True}), "DoRA"),
    (dict(config={"modules_to_save": ["lm_head"]}), "modules_to_save"),
    # what vLLM 0.32's PEFTHelper refuses at load (vllm/lora/peft_helper.py)
    (dict(config={"bias": "all"}), "bias='all'; vLLM serves no adapter bias: retrain with bias=\"none\""),
    (dict(config={"bias": "lora_only"}), "bias='lora_only'"),
    (dict(config={"lora_bias": True}), "lora_bias=True; vLLM serves no LoRA bias"),
    (dict(config={"init_lora_weights": "pissa"}), "init_lora_weights='pissa'"),
    (dict(config={"init_lora_weights": "olora"}), "path_initial_model_for_weight_conversion"),
    (dict(config={"layer_replication": [[0, 2]]}), "layer_replication=[[0, 2]]"),
    (dict(config={"alora_invocation_tokens": [5]}), "aLoRA"),
    (dict(config={"use_bdlora": {"nblocks": 2}}), "BD-LoRA"),
    (dict(config={"use_qalora": True}), "QALoRA"),
    (dict(config={"r": True}), "rank must be a positive integer: r=True"),
    (dict(config={"r": 8.0}), "rank must be a positive integer: r=8.0"),
    (dict(config={"rank_pattern": {"q_proj": 0}}), "rank_pattern={'q_proj': 0}"),
    (dict(config={"rank_pattern": {"q_proj": 600}}), "rank 600 (r=8, rank_pattern={'q_proj': 600}), above vLLM's "
                                                       "largest LoRA rank 512"),
    (dict(base_name="someone/Other-7B"), "LLMODAL_LORA_ANY_BASE=true"),
])
def test_adapters_the_base_cannot_serve_are_refused(tiny_model, tmp_path, kw, says):
    kw.setdefault("base_name", SERVED_NAME)
    targets = kw.pop("targets", ("q_proj",))
    a = tmp_path / "a"
    if "w_proj" in targets:
        write_adapter(a, tiny_model, base_name=SERVED_NAME)
        cfg = json.loads((a / "adapter_config.json").read_text())
        (a / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": list(targets)}))
    else:
        write_adapter(a, tiny_model, targets=targets, **kw)
    with pytest.raises(ConfigError) as e:
        _cpu(tiny_model, f"mine={a}")
    assert "VLLM_LORA_MODULES" in str(e.value) and "'mine'" in str(e.value) and says in str(e.value), str(e.value)


@pytest.mark.parametrize("key", ["lora_alpha", "target_modules"])
def test_a_config_without_a_field_vllm_requires_is_refused(tiny_model, tmp_path, key):
    a = write_adapter(tmp_path / "a", tiny_model, base_name=SERVED_NAME)
    cfg = json.loads((a / "adapter_config.json").read_text())
    del cfg[key]
    (a / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=f"'a'.*lacks {key}, which vLLM requires"):
        _cpu(tiny_model, f"a={a}")


def test_plain_settings_vllm_serves_are_allowed(tiny_model, tmp_path):
    a = write_adapter(tmp_path / "a", tiny_model, base_name=SERVED_NAME,
                      config={"init_lora_weights": "gaussian", "modules_to_save": [], "lora_bias": False})
    _cpu(tiny_model, f"a={a}")  # no refusal


def test_rank_pattern_sets_the_rank_as_vllm_does(tmp_path):
    """vLLM sizes an adapter by max(r, *rank_pattern.values()): the planner's slots and the limit check too."""
    a = _config_only(tmp_path / "a", r=16, rank_pattern={"v_proj": 64})
    res = plan_for_settings(load_settings(None, lora_modules=f"a={a}"))
    assert res.lora.max_rank == 64 and res.chosen.lora.max_rank == 64
    with pytest.raises(ConfigError, match="rank 64, above VLLM_MAX_LORA_RANK=16: raise it to 64"):
        plan_for_settings(load_settings(None, lora_modules=f"a={a}", max_lora_rank=16))


def test_rank_pattern_weights_are_checked_at_their_own_rank(tiny_model, tmp_path):
    """An adapter whose q_proj is rank 32 and v_proj rank 8 loads in vLLM: its shapes must pass here."""
    import torch
    from safetensors.torch import load_file, save_file

    a = write_adapter(tmp_path / "a", tiny_model, rank=8, base_name=SERVED_NAME,
                      config={"rank_pattern": {"q_proj": 32}})
    t = load_file(str(a / "adapter_model.safetensors"))
    t = {k: (torch.zeros(32, v.shape[1]) if "q_proj.lora_A" in k else torch.zeros(v.shape[0], 32)
             if "q_proj.lora_B" in k else v) for k, v in t.items()}
    save_file(t, str(a / "adapter_model.safetensors"))
    argv = _cpu(tiny_model, f"a={a}").launch.argv
    assert _argv_value(argv, "--max-lora-rank") == "32"


@pytest.mark.parametrize("r", [600, 513])
def test_rank_above_vllms_largest_exits_2_with_a_refusal(tmp_path, r):
    a = _config_only(tmp_path / "a", r=r)
    out = CliRunner().invoke(app, ["plan", "--env-file", ""], env={"VLLM_LORA_MODULES": f"x={a}"})
    said = " ".join(out.output.split())  # the console wraps long lines
    assert out.exit_code == 2 and isinstance(out.exception, SystemExit), out.output
    assert "adapter 'x'" in said and f"has rank {r}" in said and "largest LoRA rank 512" in said, said
    assert "Traceback" not in said


def test_an_adapter_of_another_shape_is_refused_by_its_weights(tiny_model, tmp_path):
    """adapter_config.json can say anything; the tensors' shapes are what vLLM would load."""
    other = tmp_path / "other-base"
    other.mkdir()
    cfg = json.loads((tiny_model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "hidden_size": 128}))
    a = write_adapter(tmp_path / "a", other, base_name=SERVED_NAME)
    with pytest.raises(ConfigError, match=r"shape \[8, 128\].*needs \[8, 256\].*another model"):
        _cpu(tiny_model, f"a={a}")


def test_another_base_is_allowed_when_asked_and_said(tiny_model, tmp_path):
    a = write_adapter(tmp_path / "a", tiny_model, base_name="someone/renamed-tiny")
    s = load_settings(None, lora_modules=f"a={a}", lora_any_base=True)
    prepare(s, gpu=False, tiny_model=str(tiny_model), tiny_name=SERVED_NAME, api_key="k")  # no refusal


def test_rank_above_the_limit_is_refused(tiny_model, tmp_path):
    a = write_adapter(tmp_path / "a", tiny_model, rank=16, base_name=SERVED_NAME)
    with pytest.raises(ConfigError, match="rank 16, above VLLM_MAX_LORA_RANK=8: raise it to 16"):
        _cpu(tiny_model, f"a={a}", max_lora_rank=8)


def test_a_missing_folder_is_refused(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="has no adapter_config.json"):
        _cpu(tiny_model, f"a={tmp_path}/nothing")


def test_served_name_cannot_be_an_adapter_name(tiny_model, tmp_path):
    a = write_adapter(tmp_path / "a", tiny_model, base_name=SERVED_NAME)
    with pytest.raises(ConfigError, match="served model's name"):
        _cpu(tiny_model, f"{SERVED_NAME}={a}")


def test_hub_adapter_offline_is_read_from_the_cache_else_left_unchecked(tmp_path, monkeypatch):
    """A container with HF_HUB_OFFLINE=1 reads a pinned adapter from the volume's cache; one not there is
    said to be unchecked (not a crash, not a hang), and the rank limit falls back with a note."""
    import huggingface_hub.constants as hc  # imported before HF_HUB_OFFLINE is set: it reads it once, then

    sha = "a" * 40
    snap = tmp_path / "hub" / "models--org--cached-lora" / "snapshots" / sha
    _config_only(snap, r=32)
    (tmp_path / "hub" / "models--org--cached-lora" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--cached-lora" / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    res = plan_for_settings(load_settings(None, lora_modules=f"c=org/cached-lora@{sha}"))
    assert res.lora.max_rank == 32 and res.chosen.lora.max_rank == 32
    res = plan_for_settings(load_settings(None, lora_modules=f"c=org/cached-lora@{sha},u=org/uncached-lora"))
    assert res.lora.max_rank == 32  # the readable one's rank, above the fallback 16
    notes = " ".join(res.chosen.notes)
    assert "adapter u: adapter_config.json not checked: offline (HF_HUB_OFFLINE) and not in the local cache" in notes
    assert "set VLLM_MAX_LORA_RANK" in notes


def test_a_hub_that_drops_connections_is_asked_once_then_the_cache_answers(tmp_path, monkeypatch):
    """A hub that accepts and drops every connection (a broken proxy): the adapter in the local cache is read from
    there, one not cached is left unchecked — each after one try, not huggingface_hub's ~23 s of retries. (Before:
    `plan` stopped with a traceback, httpcore's RemoteProtocolError; a refused port took 23 s an adapter.)"""
    import huggingface_hub.constants as hc

    from conftest import Listener

    sha = "b" * 40
    _config_only(tmp_path / "hub" / "models--org--cached-lora" / "snapshots" / sha, r=32)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hub = Listener()
    try:
        _point_hub_at(monkeypatch, hub.url)
        res = plan_for_settings(load_settings(None, lora_modules=f"c=org/cached-lora@{sha},u=org/some-lora"))
    finally:
        hub.stop = True
    assert res.lora.max_rank == 32  # the cached adapter's config was read
    assert any("adapter u: adapter_config.json not checked: the hub did not answer" in n for n in res.chosen.notes), \
        res.chosen.notes
    assert hub.connections <= 4, hub.connections  # 2 for each adapter (4 seen), not a retry loop


def test_planner_charges_lora_slots_before_kv(tmp_path):
    """The 70B on one A100 picks its AWQ build; two rank-16 adapters take their slots out of the KV cache, and
    an adapter trained on the BF16 base is served on the AWQ build with a note saying so."""
    a, b = _config_only(tmp_path / "a"), _config_only(tmp_path / "b", r=64)
    plain = plan_for_settings(load_settings(None)).chosen
    one = plan_for_settings(load_settings(None, lora_modules=f"a={a}")).chosen
    two = plan_for_settings(load_settings(None, lora_modules=f"a={a},b={b}")).chosen
    assert plain.quantization == one.quantization == "awq" and plain.lora is None and plain.lora_gib_per_gpu == 0
    assert (one.lora.max_loras, one.lora.max_rank, two.lora.max_loras, two.lora.max_rank) == (1, 16, 2, 64)
    # Slots scale with --max-loras × --max-lora-rank: 2 × 64 is 8 × 1 × 16 (buffers aside).
    assert 7.9 < two.lora_gib_per_gpu / one.lora_gib_per_gpu < 8.01
    assert plain.kv_cache_bytes - one.kv_cache_bytes == pytest.approx(one.lora_gib_per_gpu * 2**30, abs=2)
    assert two.kv_tokens < one.kv_tokens < plain.kv_tokens
    assert any("served on the AWQ build" in n and "trained on" in n for n in one.notes)


def test_lora_bytes_match_vllms_buffers_for_the_70b():
    """By hand, from vLLM 0.32's create_lora_weights (vllm/lora/layers): 70B, TP 1, one slot at rank 16, bf16.
    qkv: A 3×8192, B 8192+2×1024; o: A 8192, B 8192; gate_up: A 2×8192, B 2×28672; down: A 28672, B 8192;
    embedding: A 128256, B 8192; LM head: A 8192, B 128256; plus 8192 tokens × 16 × 3 slices × 4 bytes."""
    from llmodal.plan.catalog import lookup
    from llmodal.plan.planner import LoraSlots, lora_bytes

    per_layer = 3 * 8192 + 8192 + 2 * 1024 + 8192 + 8192 + 2 * 8192 + 2 * 28672 + 28672 + 8192
    want = 16 * (80 * per_layer + 2 * 128256 + 2 * 8192) * 2 + 8192 * 16 * 3 * 4
    assert lora_bytes(lookup(BASE70), LoraSlots(1, 1, 16), 1, 8192) == want


def test_plan_shows_the_adapters(tmp_path):
    a = _config_only(tmp_path / "a")
    r = CliRunner().invoke(app, ["plan", "--env-file", ""], env={"VLLM_LORA_MODULES": f"a={a}"})
    assert r.exit_code == 0, r.output
    assert "LoRA adapters" in r.output and "1 served, 1 resident" in r.output and "before the KV cache" in r.output


def _hub_with(tmp_path, monkeypatch, tiny_model, **adapter_kw):
    """A fake hub holding one adapter made for the tiny model (its config and its safetensors)."""
    import huggingface_hub.constants as hc

    from fake_hub import FakeHub

    d = write_adapter(tmp_path / "made", tiny_model, base_name=SERVED_NAME, **adapter_kw)
    hub = FakeHub(children={}, files={"org/tiny-lora": {
        "adapter_config.json": (d / "adapter_config.json").read_bytes(),
        "adapter_model.safetensors": (d / "adapter_model.safetensors").read_bytes()}})
    _point_hub_at(monkeypatch, hub.url)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    return hub


def test_hub_adapter_is_read_and_checked_by_its_config_and_header(tiny_model, tmp_path, monkeypatch):
    from llmodal.core.lora import Adapter
    from llmodal.plan.adapters import read

    hub = _hub_with(tmp_path, monkeypatch, tiny_model, rank=16, targets=("q_proj", "o_proj"))
    try:
        facts = read(Adapter("t", "org/tiny-lora", "v1"))
        assert facts.rank == 16 and facts.shapes["base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"] \
            == [16, 256]
        assert any("/org/tiny-lora/resolve/v1/adapter_config.json" in r for r in hub.requests)
        argv = _cpu(tiny_model, "t=org/tiny-lora@v1").launch.argv  # a dry run: the repo, not fetched
        assert _argv_value(argv, "--max-lora-rank") == "16" and _argv_value(argv, "--lora-modules") == \
            "t=org/tiny-lora@v1"
        with pytest.raises(ConfigError, match="org/tiny-lora revision 'no-such-branch' does not exist"):
            read(Adapter("t", "org/tiny-lora", "no-such-branch"))
        with pytest.raises(ConfigError, match="org/not-there does not exist"):
            read(Adapter("t", "org/not-there"))
    finally:
        hub.close()


def test_hub_adapter_of_another_shape_is_refused_from_its_header(tmp_path, monkeypatch, tiny_model):
    other = tmp_path / "other-base"
    other.mkdir()
    cfg = json.loads((tiny_model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 384}))
    hub = _hub_with(tmp_path, monkeypatch, other, targets=("down_proj",))
    try:
        with pytest.raises(ConfigError, match=r"down_proj.lora_A.weight has shape \[8, 384\].*needs \[8, 512\]"):
            _cpu(tiny_model, "t=org/tiny-lora")
    finally:
        hub.close()


@pytest.mark.parametrize("model,named", [("meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Meta-Llama-3.1-70B-Instruct"),
                                         ("meta-llama/Meta-Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-70B-Instruct")])
def test_an_adapter_naming_the_base_by_another_of_its_names_is_the_same_base(tmp_path, model, named):
    """Meta renamed its Llama 3.1 repos (Meta-Llama-3.1-… → Llama-3.1-…); adapters trained before name the old one.
    The catalog holds both names as the same weights, so the base check does too: no refusal, no 'trained on' note."""
    a = _config_only(tmp_path / "a", base_model_name_or_path=named)
    p = plan_for_settings(load_settings(None, model=model, lora_modules=f"a={a}")).chosen
    assert not [n for n in p.notes if "trained on" in n and "LLMODAL_LORA_ANY_BASE" in n], p.notes


def test_targets_written_as_module_paths_are_the_modules_they_end_in(tiny_model, tmp_path):
    """PEFT matches a target_modules entry against the end of a module's path at a '.' (its check_target_module_exists),
    so "self_attn.q_proj" is q_proj, and vLLM 0.32 serves such an adapter (it reads the tensors' names): accepted. The
    last part is what must be a module of the base."""
    a = write_adapter(tmp_path / "a", tiny_model, base_name=SERVED_NAME, targets=("q_proj", "v_proj"))
    cfg = json.loads((a / "adapter_config.json").read_text())
    (a / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": [
        "self_attn.q_proj", "model.layers.1.self_attn.v_proj"]}))
    _cpu(tiny_model, f"a={a}")  # no refusal
    (a / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["self_attn.q_proj", "attn.w_proj"]}))
    with pytest.raises(ConfigError, match=r"targets \['attn.w_proj'\], which"):
        _cpu(tiny_model, f"a={a}")


def _as_mistral(tiny_model, tmp_path):
    """The tiny Llama's weights as a MistralForCausalLM: vLLM 0.32 gives its embedding and LM head no LoRA."""
    import shutil

    m = tmp_path / "tiny-mistral"
    shutil.copytree(tiny_model, m)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "architectures": ["MistralForCausalLM"]}))
    return m


@pytest.mark.parametrize("targets", [("q_proj", "lm_head"), ("q_proj", "embed_tokens"), ("embed_tokens", "lm_head")])
def test_embedding_and_lm_head_adapters_are_served_where_vllm_takes_them(tiny_model, tmp_path, targets):
    """vLLM 0.32 serves LoRA on the embedding and the LM head of a Llama (its embedding_modules), not of a Mistral:
    llmodal accepts the first and refuses the second saying so (it used to refuse both as modules the base lacks)."""
    a = write_adapter(tmp_path / "a", tiny_model, base_name=SERVED_NAME, targets=targets)
    argv = _cpu(tiny_model, f"a={a}").launch.argv
    assert _argv_value(argv, "--lora-modules") == f"a={a}"
    mistral = _as_mistral(tiny_model, tmp_path)
    s = load_settings(None, lora_modules=f"a={a}")
    with pytest.raises(ConfigError, match=r"targets \[.*'(embed_tokens|lm_head)'.*\]: vLLM serves no LoRA on "
                                          r"MistralForCausalLM's embedding or LM head"):
        prepare(s, gpu=False, tiny_model=str(mistral), tiny_name=SERVED_NAME, api_key="k")


@pytest.mark.parametrize("target", ["embed_tokens", "lm_head"])
def test_an_embedding_or_lm_head_adapter_of_another_vocabulary_is_refused_by_its_weights(tiny_model, tmp_path, target):
    other = tmp_path / "other-vocab"
    other.mkdir()
    cfg = json.loads((tiny_model / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "vocab_size": 512}))
    a = write_adapter(tmp_path / "a", other, base_name=SERVED_NAME, targets=("q_proj", target))
    with pytest.raises(ConfigError, match=rf"{target}.* has shape \[.*512.*\], the base's {target} needs .*1024.*"
                                          "another model"):
        _cpu(tiny_model, f"a={a}")


def test_a_hub_adapter_that_cannot_be_fetched_stops_the_start_with_a_reason(tiny_model, tmp_path, monkeypatch):
    """`llmodal serve` (and the container) fetch a hub adapter not in the local cache before vLLM starts; a hub that
    does not answer stops it with the variable, the adapter, the repo and the way out — not huggingface_hub's
    traceback."""
    import huggingface_hub.constants as hc

    _point_hub_at(monkeypatch, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    r = CliRunner().invoke(app, ["serve", "--env-file", ""], env={"VLLM_LORA_MODULES": "my-adapter=org/tiny-lora@v2",
                                                                  "VLLM_SERVER_API_KEY": "sk-" + "x" * 32})
    assert isinstance(r.exception, SystemExit) and r.exit_code != 0, repr(r.exception)  # a refusal, no traceback
    out = " ".join(r.output.split())
    assert "VLLM_LORA_MODULES: adapter 'my-adapter': could not fetch org/tiny-lora@v2" in out, out
    assert "llmodal download" in out or "folder" in out, out
