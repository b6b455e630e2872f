"""RATConfig, presets, save/load and the Auto classes (transformers 5.x)."""
import json
import os

import pytest
import torch
from hf_tiny import KINDS, fresh_model, tiny_config
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import ratlm
from ratlm import RATConfig, RATForCausalLM, RATModel
from ratlm.models.presets import preset_kwargs


@pytest.mark.parametrize("name", ratlm.preset_names() + ["rat64-swa-tiny", "rat32-xl"])
def test_presets_build_valid_configs_that_round_trip(name, tmp_path):
    cfg = RATConfig.from_preset(name)
    assert len(cfg.layer_types) == cfg.num_hidden_layers
    cfg.save_pretrained(tmp_path)
    back = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(back, RATConfig)
    drop = ("_name_or_path",)
    assert {k: v for k, v in back.to_dict().items() if k not in drop} == \
        {k: v for k, v in cfg.to_dict().items() if k not in drop}


def test_paper_presets():
    for variant, types in [("attention", {"attention"}), ("rat", {"rat"}), ("rnn", {"rnn"}),
                           ("attention-swa", {"attention", "sliding_attention"}),
                           ("rat-swa", {"rat", "sliding_attention"})]:
        cfg = RATConfig.from_preset(f"{variant}-xl")
        sizes = (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.vocab_size)
        assert sizes == (2048, 24, 16, 32000)
        assert cfg.hidden_size // cfg.num_attention_heads == 128 and cfg.intermediate_size == 4 * 2048
        assert set(cfg.layer_types) == types and cfg.chunk_size == 16 and cfg.qk_groups == 2
        assert cfg.sliding_window == 1024 and cfg.tie_word_embeddings and cfg.position_encoding == "rope"
        if "swa" in variant:
            assert cfg.layer_types[0] != "sliding_attention" and cfg.layer_types[1] == "sliding_attention"
    assert RATConfig.from_preset("rat64-small").chunk_size == 64
    assert preset_kwargs("rat-tiny", num_hidden_layers=3)["layer_types"] == ["rat"] * 3
    with pytest.raises(ValueError, match="unknown preset"):
        RATConfig.from_preset("rat-huge")


def test_config_fields_and_json(tmp_path):
    cfg = RATConfig(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                    layer_types=["rat", "attention", "rnn"], chunk_size=[4, 1, 1], qk_groups=1,
                    position_encoding="nope", rope_theta=500000, hidden_act="gelu_new")
    assert cfg.intermediate_size == 256 and cfg.per_layer("chunk_size", 0) == 4 and cfg.per_layer("qk_groups", 2) == 1
    assert cfg.rope_theta == 500000.0 and isinstance(cfg.rope_theta, float)
    cfg.save_pretrained(tmp_path)
    raw = json.load(open(tmp_path / "config.json"))
    assert raw["model_type"] == "ratlm" and raw["layer_types"] == ["rat", "attention", "rnn"]
    raw["rope_theta"] = 10000  # hand-written configs use ints for floats
    json.dump(raw, open(tmp_path / "config.json", "w"))
    back = AutoConfig.from_pretrained(tmp_path)
    assert back.layer_types == cfg.layer_types and back.chunk_size == [4, 1, 1] and back.rope_theta == 10000.0
    assert AutoConfig.for_model("ratlm").__class__ is RATConfig


@pytest.mark.parametrize("kw, match", [
    (dict(hidden_size=100, num_attention_heads=16), "not divisible by num_attention_heads"),
    (dict(layer_types=["rat", "mamba"], num_hidden_layers=2), "layer_types entries must be among"),
    (dict(layer_types=["rat"], num_hidden_layers=2), "give one entry per layer"),
    (dict(position_encoding="alibi"), "position_encoding must be 'rope' or 'nope'"),
    (dict(qk_groups=3), "not divisible by qk_groups 3"),
    (dict(chunk_size=0), "chunk_size must be >= 1"),
    (dict(chunk_size=[4, 4], num_hidden_layers=3), "chunk_size has 2 entries"),
    (dict(hidden_act="swishy"), "unknown hidden_act"),
    (dict(vocab_size=0), "vocab_size must be >= 1"),
    (dict(hidden_size=48, num_attention_heads=16), "RoPE needs an even head width"),
    (dict(hidden_size="big"), "hidden_size"),
])
def test_config_validation(kw, match):
    with pytest.raises(Exception, match=match):
        RATConfig(**kw)


@pytest.mark.parametrize("tie", [True, False])
def test_save_load_round_trip(tmp_path, tie):
    m = fresh_model("rat-swa", tie_word_embeddings=tie)
    assert (m.lm_head.weight is m.model.embed_tokens.weight) == tie
    m.save_pretrained(tmp_path)
    assert {"model.safetensors", "config.json", "generation_config.json"} <= set(os.listdir(tmp_path))
    with safe_open(os.path.join(tmp_path, "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.layers.0.mixer.gate_bias" in keys and "model.layers.1.mixer.in_proj.weight" in keys
    assert ("lm_head.weight" in keys) == (not tie)
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)  # no trust_remote_code
    assert type(m2) is RATForCausalLM and not m2.training
    assert (m2.lm_head.weight is m2.model.embed_tokens.weight) == tie
    for k, v in m.state_dict().items():
        torch.testing.assert_close(m2.state_dict()[k], v, rtol=0, atol=0, msg=k)
    ids = torch.randint(0, 259, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(m2(ids).logits, m(ids).logits, rtol=0, atol=0)
    base = AutoModel.from_pretrained(tmp_path)
    assert type(base) is RATModel
    torch.testing.assert_close(base.embed_tokens.weight, m.model.embed_tokens.weight)
    half = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert half.model.layers[0].mixer.gate_bias.dtype == torch.bfloat16
    with torch.no_grad():
        torch.testing.assert_close(half(ids).logits.float(), m(ids).logits, rtol=0.1, atol=0.15)


def test_auto_classes_from_config():
    cfg = tiny_config("rnn")
    assert type(AutoModel.from_config(cfg)) is RATModel
    assert type(AutoModelForCausalLM.from_config(cfg)) is RATForCausalLM


@pytest.mark.parametrize("kind", list(KINDS))
def test_outputs_loss_and_hidden_states(kind):
    m = fresh_model(kind)
    ids = torch.randint(0, 259, (2, 9))
    out = m(ids, labels=ids, output_hidden_states=True)
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 9, 259)
    assert len(out.hidden_states) == m.config.num_hidden_layers + 1
    base = m.model(ids, output_hidden_states=True)
    torch.testing.assert_close(base.hidden_states[-1], base.last_hidden_state)  # as transformers models do
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert m(ids, logits_to_keep=1).logits.shape == (2, 1, 259)
    tup = m(ids, return_dict=False, use_cache=False)
    assert isinstance(tup, tuple) and tup[0].shape == (2, 9, 259)
