"""The authors' checkpoint format -> ratlm, checked against an independent forward written from the spec."""
import os
import subprocess

import pytest
import torch
from official_format import official_state_dict, reference_logits, save_checkpoint, with_orig_mod
from transformers import AutoModelForCausalLM

from ratlm import RATForCausalLM
from ratlm.models.convert_official import (
    ConversionError,
    convert_official,
    load_official,
    official_config,
    official_to_model,
)

HD, L, W = 8, 4, 5  # head width, chunk, window of the synthetic checkpoints (D = 32: 4 heads)
OPTS = dict(head_dim=HD, chunk_size=L, window=W)

# name: (their layer shapes, the reference's layer kinds, converter options, state-dict options, _orig_mod.)
VARIANTS = {
    "rat": (["rat"] * 2, ["rat"] * 2, {}, {}, "top"),
    "rat-nope-g1": (["rat"] * 2, ["rat"] * 2, {"position_encoding": "nope"}, {"groups": 1}, None),
    "attention": (["attention"] * 2, ["attention"] * 2, {"mixer": "attention"}, {"tied": False}, "layer"),
    "rnn": (["rnn"] * 2, ["rnn"] * 2, {"mixer": "rnn"}, {"ffn_bias": True}, None),
    "rat-swa": (["rat", "attention"] * 2, ["rat", "window"] * 2, {"hybrid": True}, {"groups": 4}, "top"),
    "attention-swa": (["attention"] * 3, ["attention", "window", "attention"],
                      {"mixer": "attention", "hybrid": True, "position_encoding": "nope"}, {}, None),
}


def _ids(B=2, T=3 * L + 2, vocab=61, seed=3):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_the_reference(name, tmp_path):
    shapes, kinds, opts, sd_opts, orig = VARIANTS[name]
    sd = official_state_dict(shapes, head_dim=HD, chunk=L, **sd_opts)
    path = save_checkpoint(tmp_path / "ckpt.pt", with_orig_mod(sd, orig))
    out = tmp_path / "model"
    cfg = convert_official(path, out, **OPTS, **opts)
    assert cfg.num_hidden_layers == len(shapes) and cfg.hidden_size == 32 and cfg.vocab_size == 61
    model = AutoModelForCausalLM.from_pretrained(out)  # after `import ratlm`, no trust_remote_code
    assert isinstance(model, RATForCausalLM)
    assert model.config.tie_word_embeddings == sd_opts.get("tied", True)
    ids = _ids()
    rope = opts.get("position_encoding", "rope") == "rope"
    ref = reference_logits(sd, ids, kinds, head_dim=HD, chunk=L, window=W, rope=rope)
    with torch.no_grad():
        got = model(ids).logits
    assert ref.abs().max() > 1  # non-trivial logits
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-4)  # fp32 vs the float64 reference
    with torch.no_grad():
        exact = model.double()(ids).logits
    torch.testing.assert_close(exact, ref, rtol=0, atol=1e-9)


def test_incremental_decode_of_a_converted_hybrid_matches_the_reference(tmp_path):
    sd = official_state_dict(["rat", "attention"] * 2, head_dim=HD, chunk=L)
    path = save_checkpoint(tmp_path / "ckpt.pt", sd)
    model = official_to_model(path, hybrid=True, **OPTS).double()
    ids = _ids(B=1, T=2 * W + 3)
    ref = reference_logits(sd, ids, ["rat", "window"] * 2, head_dim=HD, chunk=L, window=W)
    with torch.no_grad():
        out = model(ids[:, :3], use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        steps = [out.logits] + [model(ids[:, t : t + 1], cache=cache).logits for t in range(3, ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), ref, rtol=0, atol=1e-9)


def test_loading_is_safe_and_strips_orig_mod(tmp_path):
    sd = official_state_dict(["rat"], head_dim=HD)
    for where in ("top", "layer", None):
        got = load_official(save_checkpoint(tmp_path / f"{where}.pt", with_orig_mod(sd, where)))
        assert set(got) == set(sd)
    bare = tmp_path / "bare.pt"
    torch.save(with_orig_mod(sd, "top"), bare)  # a bare state dict is accepted too
    assert set(load_official(bare)) == set(sd)
    legacy = tmp_path / "legacy.pt"
    torch.save({"task": sd}, legacy, _use_new_zipfile_serialization=False)
    assert set(load_official(legacy)) == set(sd)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


class _CallsOsSystem:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_nothing_in_the_file_is_executed(tmp_path):
    marker = tmp_path / "executed"
    sd = official_state_dict(["rnn"], head_dim=HD)
    # a callable from a module torch refuses: the file is rejected
    torch.save({"task": sd, "config": _CallsOsSystem(marker)}, tmp_path / "a.pt")
    with pytest.raises(ConversionError, match="weights-only loader"):
        load_official(tmp_path / "a.pt")
    # any other callable becomes an inert placeholder: the weights load, nothing runs
    torch.save({"task": sd, "config": _RunsACommand(marker)}, tmp_path / "b.pt")
    assert set(load_official(tmp_path / "b.pt")) == set(sd)
    assert not marker.exists()


@pytest.mark.parametrize("setup, match", [
    ("text", "not a torch checkpoint"),
    ("list", "not one of the authors' RAT checkpoints"),
    ("no_task", "not one of the authors' RAT checkpoints"),
    ("hf_names", "unexpected parameter names"),
    ("layernorm", "LayerNorm"),
    ("missing_layer", r"layers \[1\] are missing"),
    ("bad_shape", r"out_proj.weight has shape \[32, 16\]"),
    ("no_final_norm", "missing parameter backbone.ln.weight"),
])
def test_bad_files(tmp_path, setup, match):
    path = tmp_path / "x.pt"
    sd = official_state_dict(["rat"] * 3, head_dim=HD)
    if setup == "text":
        path.write_text("not a checkpoint")
    elif setup == "list":
        torch.save([1, 2, 3], path)
    elif setup == "no_task":
        torch.save({"model": {"a": torch.zeros(1)}}, path)
    elif setup == "hf_names":
        torch.save({"task": {"model.embed_tokens.weight": torch.zeros(4, 2)}}, path)
    elif setup == "layernorm":
        sd["backbone.ln.bias"] = torch.zeros(32)
        torch.save({"task": sd}, path)
    elif setup == "missing_layer":
        torch.save({"task": {k: v for k, v in sd.items() if ".layers.1." not in k}}, path)
    elif setup == "bad_shape":
        sd["backbone.layers.2.seq_layer.out_proj.weight"] = torch.zeros(32, 16)
        torch.save({"task": sd}, path)
    elif setup == "no_final_norm":
        del sd["backbone.ln.weight"]
        torch.save({"task": sd}, path)
    with pytest.raises(ConversionError, match=match):
        official_to_model(path, **OPTS)


@pytest.mark.parametrize("shapes, opts, match", [
    (["rat"] * 2, {"mixer": "attention"}, "--mixer attention contradicts the checkpoint: layer 0 is a RAT layer"),
    (["rat"] * 2, {"mixer": "rnn"}, "use --mixer rat"),
    (["attention"] * 2, {"mixer": "rat"}, "layer 0 is an attention layer"),
    (["rnn"] * 2, {"mixer": "rat"}, "layer 0 is an RNN layer"),
    (["rat"] * 2, {"hybrid": True}, "--hybrid puts sliding-window attention on odd layers, but layer 1 is a RAT"),
    (["rat", "attention"], {}, "pass --hybrid"),
    (["rnn", "attention"], {"hybrid": True}, "no rnn hybrid"),
    (["rat"], {"head_dim": 12}, "not divisible by --head-dim 12"),
    (["rat"], {"head_dim": 16}, "not 2 x G x head_dim"),  # 3 groups of 8: 48 extra rows, not a multiple of 32
    (["rat"], {"chunk_size": 0}, "--chunk-size must be a positive integer"),
])
def test_contradictory_options(tmp_path, shapes, opts, match):
    sd = official_state_dict(shapes, head_dim=HD, groups=3 if "head_dim" in opts and opts["head_dim"] == 16 else 2)
    with pytest.raises(ConversionError, match=match):
        official_config(sd, **{**OPTS, **opts})


def test_shapes_give_sizes_groups_vocab_and_tying():
    sd = official_state_dict(["rat", "attention"] * 2, head_dim=HD, groups=4, vocab=77, ffn_bias=True, tied=False)
    cfg = official_config(sd, hybrid=True, **OPTS)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (77, 32, 4, 128)
    assert cfg.qk_groups == 4 and cfg.mlp_bias and not cfg.tie_word_embeddings
    assert cfg.layer_types == ["rat", "sliding_attention"] * 2 and cfg.sliding_window == W and cfg.chunk_size == L
    # the head dim decides the group count: 2*G*dh extra rows = 64 -> G = 2 at dh = 16 (2 heads)
    cfg16 = official_config(sd, hybrid=True, head_dim=16, chunk_size=L, window=W)
    assert cfg16.num_attention_heads == 2 and cfg16.qk_groups == 2
    # the mixer is read from the shapes when not given
    assert official_config(official_state_dict(["rnn"] * 2, head_dim=HD), **OPTS).layer_types == ["rnn", "rnn"]


def test_tokenizer_is_copied_and_checked(tmp_path):
    from ratlm.data.tokenizer import byte_tokenizer

    tok_dir = tmp_path / "tok"
    byte_tokenizer().save_pretrained(tok_dir)
    path = save_checkpoint(tmp_path / "ckpt.pt", official_state_dict(["rat"], head_dim=HD, vocab=300))
    convert_official(path, tmp_path / "out", tokenizer=tok_dir, **OPTS)
    assert (tmp_path / "out" / "tokenizer.json").exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert model.config.eos_token_id == 258 and model.generation_config.eos_token_id == 258
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert_official(path, tmp_path / "out", **OPTS)
    small = save_checkpoint(tmp_path / "small.pt", official_state_dict(["rat"], head_dim=HD, vocab=100))
    with pytest.raises(ConversionError, match="has 259 tokens but the checkpoint's vocabulary has 100"):
        convert_official(small, tmp_path / "out2", tokenizer=tok_dir, **OPTS)
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("variant", ["rat", "attention", "rnn", "rat-swa", "attention-swa"])
def test_paper_sized_checkpoints_give_the_paper_presets(variant):
    """Shapes of the 1.3B models (meta tensors: no memory) -> the same config as the xl preset."""
    from ratlm import RATConfig

    preset = RATConfig.from_preset(f"{variant}-xl")
    D, F, dh, G = 2048, 8192, 128, 2
    sd = {"embedding.wte.weight": torch.empty(32000, D, device="meta"),
          "backbone.ln.weight": torch.empty(D, device="meta")}
    for i, kind in enumerate(preset.layer_types):
        p = f"_orig_mod.backbone.layers.{i}."
        rows = 3 * D + (2 * G * dh if kind == "rat" else 0)
        sd[p + "seq_layer.input_norm.weight"] = torch.empty(D, device="meta")
        sd[p + "seq_layer.in_proj.weight"] = torch.empty(rows, D, device="meta")
        if kind in ("rat", "rnn"):
            sd[p + "seq_layer.gate_bias"] = torch.empty(D, device="meta")
        sd[p + "seq_layer.out_proj.weight"] = torch.empty(D, D, device="meta")
        sd[p + "hidden_layer.ln.weight"] = torch.empty(D, device="meta")
        sd[p + "hidden_layer.fc1.weight"] = torch.empty(F, D, device="meta")
        sd[p + "hidden_layer.fc2.weight"] = torch.empty(D, F, device="meta")
    sd = {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    opts = {"hybrid": True} if variant.endswith("swa") else {}
    if variant.startswith("attention"):
        opts["mixer"] = "attention"
    cfg = official_config(sd, **opts)  # the paper's defaults: head_dim 128, L 16, W 1024, rope
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "layer_types",
            "chunk_size", "qk_groups", "sliding_window", "position_encoding", "tie_word_embeddings", "mlp_bias")
    assert {k: getattr(cfg, k) for k in keys} == {k: getattr(preset, k) for k in keys}
