"""Read the authors' checkpoints (CLAIRE-Labo/RAT) and turn them into ratlm models.

Their file is a `torch.save` pickle: a dict whose "task" entry is the state dict (the rest is the
training config, optimizer and scheduler state, which we never need). It is read with
`torch.load(weights_only=True)`: nothing the file names is imported or called. The only non-torch
class their checkpoints hold, `easydict.EasyDict`, and any other class the file names, are mapped to
inert placeholders of ours, so their contents are loaded as data and ignored.

Sizes, the number of query/key groups and the vocabulary come from the tensor shapes; head width,
chunk length, window and position encoding are not stored in shapes and are options (paper values by
default). See the spec, "The authors' checkpoint format".

    load_official(path)                      -> their state dict, `_orig_mod.` dropped
    official_config(sd, **options)           -> RATConfig (validates shapes against the options)
    map_state_dict(sd, config)               -> state dict of RATForCausalLM
    official_to_model(path, **options)       -> RATForCausalLM, in memory
    convert_official(path, out, **options)   -> writes a model directory (safetensors + config)
"""
from __future__ import annotations

import collections
import os
import pickle
import re
import zipfile
from typing import TYPE_CHECKING

import torch

from .configuration_rat import RATConfig

if TYPE_CHECKING:
    from .modeling_rat import RATForCausalLM

MIXERS = ("rat", "attention", "rnn")
DEFAULTS = dict(mixer=None, hybrid=False, head_dim=128, chunk_size=16, window=1024, position_encoding="rope")
_LAYER = re.compile(r"^backbone\.layers\.(\d+)\.(.+)$")
# their name (inside backbone.layers.N.) -> ours (inside model.layers.N.)
_LAYER_NAMES = {
    "seq_layer.input_norm.weight": "input_norm.weight",
    "seq_layer.in_proj.weight": "mixer.in_proj.weight",
    "seq_layer.gate_bias": "mixer.gate_bias",
    "seq_layer.out_proj.weight": "mixer.out_proj.weight",
    "hidden_layer.ln.weight": "ffn_norm.weight",
    "hidden_layer.fc1.weight": "mlp.fc1.weight",
    "hidden_layer.fc1.bias": "mlp.fc1.bias",
    "hidden_layer.fc2.weight": "mlp.fc2.weight",
    "hidden_layer.fc2.bias": "mlp.fc2.bias",
}
_TOP_NAMES = {"embedding.wte.weight": "model.embed_tokens.weight", "backbone.ln.weight": "model.norm.weight",
              "head.lm_head.weight": "lm_head.weight"}


class ConversionError(ValueError):
    """The file is not one of the authors' checkpoints, or contradicts the options."""


# --------------------------------------------------------------------------------------------- loading
class _Placeholder:
    """Stands in for any class or function a checkpoint names: built from anything, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self._state = state


class _PlaceholderDict:
    """Stands in for easydict.EasyDict, a dict subclass: unpickles as a plain OrderedDict (torch's loader
    fills in items only for exact dict types), keeping its items as data."""

    def __new__(cls, *args, **kwargs):
        return collections.OrderedDict()


def _placeholders(path):
    """(placeholder, "module.name") pairs for EasyDict and every other global the file names that
    torch's weights_only loader does not already allow."""
    pairs = [(_PlaceholderDict, "easydict.EasyDict")]
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) format: only the known allow-list
        names = []
    for name in names:
        if name != "easydict.EasyDict":
            pairs.append((type("Placeholder", (_Placeholder,), {"__qualname__": name}), name))
    return pairs


def _why(e):
    """The useful line of a torch.load error (its weights_only message is long and generic)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        rest = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the documentation"))]
        reason = rest[0].replace("WeightsUnpickler error:", "").strip() if rest else "unknown reason"
        return f"refused by the weights-only loader ({reason[:200]})"
    return lines[0][:200] if lines else type(e).__name__


def load_official(path: str) -> dict:
    """The state dict of one of the authors' checkpoints (names with `_orig_mod.` dropped, tensors
    on the CPU). Raises ConversionError if the file is not such a checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConversionError(f"{path} is a directory; give the checkpoint file (a .pt/.pth written by the "
                              "authors' trainer)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path}")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as f:
            head = f.read(2)
        if len(head) < 2 or head[0] != 0x80:  # neither torch's zip format nor its legacy pickle
            raise ConversionError(f"{path} is not a torch checkpoint (neither a zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(_placeholders(path)):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, AttributeError, TypeError,
            IndexError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{path} is not a readable torch checkpoint: {_why(e)}") from None
    if isinstance(obj, dict) and "task" in obj:
        sd = obj["task"]
    elif isinstance(obj, dict) and any(isinstance(k, str) and k.replace("_orig_mod.", "").startswith("embedding.")
                                       for k in obj):
        sd = obj  # a bare state dict
    else:
        what = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise ConversionError(f"{path} is not one of the authors' RAT checkpoints: expected a dict with a 'task' "
                              f"state dict, found {what}")
    if not isinstance(sd, dict) or not sd:
        raise ConversionError(f"{path}: the 'task' entry is not a state dict")
    out = {}
    for k, v in sd.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            raise ConversionError(f"{path}: the 'task' entry is not a state dict of tensors (entry {k!r} is "
                                  f"{type(v).__name__})")
        name = k.replace("_orig_mod.", "")
        if name in out:
            raise ConversionError(f"{path}: parameter {name} appears twice (with and without _orig_mod.)")
        out[name] = v
    return out


# --------------------------------------------------------------------------------------------- shapes
def _shape(sd, name):
    t = sd.get(name)
    return None if t is None else tuple(t.shape)


def _need(sd, name, shape, hint=""):
    got = _shape(sd, name)
    if got is None:
        raise ConversionError(f"missing parameter {name}{hint}; this is not a complete RAT-family checkpoint")
    if shape is not None and got != tuple(shape):
        raise ConversionError(f"{name} has shape {list(got)}, expected {list(shape)}{hint}")
    return got


def _layer_kind(sd, i, D, head_dim):
    """('rat', G) / ('rnn', None) / ('attention', None) from layer i's shapes."""
    p = f"backbone.layers.{i}.seq_layer."
    rows = _need(sd, p + "in_proj.weight", None)
    if len(rows) != 2 or rows[1] != D:
        raise ConversionError(f"{p}in_proj.weight has shape {list(rows)}, expected [rows, {D}]")
    rows = rows[0]
    gated = p + "gate_bias" in sd
    if gated:
        _need(sd, p + "gate_bias", (D,))
    if rows == 3 * D:
        return ("rnn", None) if gated else ("attention", None)
    if gated and rows > 3 * D:
        extra = rows - 3 * D
        if extra % (2 * head_dim):
            raise ConversionError(f"layer {i}: in_proj has {rows} rows = 3*{D} + {extra}, and {extra} is not 2 x G x "
                                  f"head_dim for head_dim {head_dim}; check --head-dim")
        return "rat", extra // (2 * head_dim)
    kind = "with" if gated else "without"
    raise ConversionError(f"layer {i}: in_proj has {rows} rows {kind} a gate_bias; expected 3*{D} (attention, or "
                          f"rnn with gate_bias) or 3*{D} + 2*G*head_dim with a gate_bias (rat)")


def official_config(sd: dict, mixer: str | None = None, hybrid: bool = False, head_dim: int = 128,
                    chunk_size: int = 16, window: int = 1024, position_encoding: str = "rope") -> RATConfig:
    """A RATConfig for the authors' state dict `sd`, checked against the options.

    mixer: "rat", "attention" or "rnn" (None: read from layer 0's shapes). hybrid: layers alternate
    with sliding-window attention (window `window`), mixer on even layers. head_dim, chunk_size,
    position_encoding: what the shapes cannot tell.
    """
    if mixer is not None and mixer not in MIXERS:
        raise ConversionError(f"--mixer must be one of {', '.join(MIXERS)}, got {mixer!r}")
    if position_encoding not in ("rope", "nope"):
        raise ConversionError(f"--position-encoding must be rope or nope, got {position_encoding!r}")
    for name, v in (("--head-dim", head_dim), ("--chunk-size", chunk_size), ("--window", window)):
        if not isinstance(v, int) or v < 1:
            raise ConversionError(f"{name} must be a positive integer, got {v!r}")
    unknown = sorted(k for k in sd if not (k in _TOP_NAMES or (_LAYER.match(k) and _LAYER.match(k)[2] in _LAYER_NAMES)))
    if unknown:
        hint = ""
        if any(k.endswith(("ln.bias", "input_norm.bias")) for k in unknown):
            hint = " (norm biases: a LayerNorm model; ratlm models use RMSNorm)"
        elif any(k.endswith(("in_proj.bias", "out_proj.bias")) for k in unknown):
            hint = " (biases in the mixer projections; the paper's models have none)"
        raise ConversionError(f"unexpected parameter names{hint}: {', '.join(unknown[:5])}"
                              f"{' ...' if len(unknown) > 5 else ''}; this is not a RAT-family checkpoint")
    wte = _need(sd, "embedding.wte.weight", None)
    if len(wte) != 2:
        raise ConversionError(f"embedding.wte.weight has shape {list(wte)}, expected [vocab, hidden]")
    vocab, D = wte
    ids = sorted({int(_LAYER.match(k)[1]) for k in sd if _LAYER.match(k)})
    if not ids:
        raise ConversionError("no backbone.layers.N parameters; this is not a RAT-family checkpoint")
    if ids != list(range(len(ids))):
        missing = sorted(set(range(ids[-1] + 1)) - set(ids))
        raise ConversionError(f"layers {missing} are missing (found backbone.layers.{ids[0]}..{ids[-1]})")
    n = len(ids)
    _need(sd, "backbone.ln.weight", (D,))
    fc1 = _need(sd, "backbone.layers.0.hidden_layer.fc1.weight", None)
    F = fc1[0]
    bias = "backbone.layers.0.hidden_layer.fc1.bias" in sd
    for i in range(n):
        p = f"backbone.layers.{i}."
        _need(sd, p + "seq_layer.input_norm.weight", (D,))
        _need(sd, p + "seq_layer.out_proj.weight", (D, D))
        _need(sd, p + "hidden_layer.ln.weight", (D,))
        _need(sd, p + "hidden_layer.fc1.weight", (F, D))
        _need(sd, p + "hidden_layer.fc2.weight", (D, F))
        for b, size in (("fc1.bias", F), ("fc2.bias", D)):
            if (p + "hidden_layer." + b in sd) != bias:
                raise ConversionError(f"layer {i}: FFN biases are inconsistent ({p}hidden_layer.{b} "
                                      f"{'missing' if bias else 'present'})")
            if bias:
                _need(sd, p + "hidden_layer." + b, (size,))
    head = _shape(sd, "head.lm_head.weight")
    if head is not None and head != (vocab, D):
        raise ConversionError(f"head.lm_head.weight has shape {list(head)}, expected {[vocab, D]}")
    tied = head is None or torch.equal(sd["head.lm_head.weight"], sd["embedding.wte.weight"])

    rnn_only = all(f"backbone.layers.{i}.seq_layer.gate_bias" in sd and
                   _shape(sd, f"backbone.layers.{i}.seq_layer.in_proj.weight") == (3 * D, D) for i in range(n))
    if D % head_dim and not rnn_only:
        raise ConversionError(f"hidden size {D} is not divisible by --head-dim {head_dim}")
    kinds = [_layer_kind(sd, i, D, head_dim) for i in range(n)]
    mixer = mixer or kinds[0][0]
    if hybrid and mixer == "rnn":
        raise ConversionError("--hybrid alternates RAT or attention with sliding-window attention; there is no "
                              "rnn hybrid")
    layer_types = []
    for i, (kind, _) in enumerate(kinds):
        window_layer = hybrid and i % 2 == 1
        want = "attention" if window_layer else mixer
        if kind != want:
            what = {"rat": "a RAT layer (gate_bias, in_proj 3D + 2*G*head_dim rows)",
                    "rnn": "an RNN layer (gate_bias, in_proj 3D rows)",
                    "attention": "an attention layer (no gate_bias, in_proj 3D rows)"}[kind]
            if window_layer:
                tip = "; drop --hybrid" if kind == mixer else ""
                raise ConversionError(f"--hybrid puts sliding-window attention on odd layers, but layer {i} is "
                                      f"{what}{tip}")
            if mixer == "rat" and kind == "attention" and i % 2 == 1 and not hybrid:
                raise ConversionError(f"layer {i} is {what} while layer 0 is RAT: this looks like the hybrid model; "
                                      "pass --hybrid")
            raise ConversionError(f"--mixer {mixer} contradicts the checkpoint: layer {i} is {what}; "
                                  f"use --mixer {kind}" + (" --hybrid" if hybrid else ""))
        layer_types.append("sliding_attention" if window_layer else kind)
    groups = [g for k, g in kinds if k == "rat"]
    attn_like = not rnn_only
    heads = 1 if D % head_dim else D // head_dim  # (indivisible only for a pure RNN, which has no heads)
    for i, (k, g) in enumerate(kinds):
        if k == "rat" and (g < 1 or heads % g):
            raise ConversionError(f"layer {i}: {g} query/key groups (from in_proj's shape with head_dim {head_dim}) "
                                  f"do not divide the {heads} heads; check --head-dim")
    if position_encoding == "rope" and attn_like and head_dim % 2:
        raise ConversionError(f"RoPE needs an even --head-dim, got {head_dim}; use --position-encoding nope")
    qk_groups = 2 if not groups else (groups[0] if len(set(groups)) == 1 else
                                      [g if k == "rat" else 1 for k, g in kinds])
    return RATConfig(vocab_size=vocab, hidden_size=D, num_hidden_layers=n, num_attention_heads=heads,
                     intermediate_size=F, hidden_act="gelu", mlp_bias=bias, rms_norm_eps=1e-6,
                     tie_word_embeddings=tied, layer_types=layer_types, chunk_size=chunk_size, qk_groups=qk_groups,
                     sliding_window=window,
                     position_encoding=position_encoding if attn_like or (D // heads) % 2 == 0 else "nope",
                     rope_theta=10000.0, train_length=4096, initializer_range=0.02)


def map_state_dict(sd, config):
    """Their names -> RATForCausalLM's (the tied head is left out: from_pretrained re-ties it)."""
    out = {}
    for k, v in sd.items():
        m = _LAYER.match(k)
        if m:
            out[f"model.layers.{m[1]}.{_LAYER_NAMES[m[2]]}"] = v
        elif k == "head.lm_head.weight":
            if not config.tie_word_embeddings:
                out["lm_head.weight"] = v
        else:
            out[_TOP_NAMES[k]] = v
    return out


# --------------------------------------------------------------------------------------------- models
def _options(options):
    bad = sorted(set(options) - set(DEFAULTS))
    if bad:
        raise TypeError(f"unknown conversion options: {', '.join(bad)}")
    return {**DEFAULTS, **options}


def _build(sd, config):
    from .modeling_rat import RATForCausalLM

    mapped = map_state_dict(sd, config)
    with torch.device("meta"):
        model = RATForCausalLM(config)
    model.load_state_dict(mapped, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:  # cannot happen after official_config's checks; kept as a guard
        raise ConversionError(f"parameters missing after conversion: {', '.join(missing[:5])}")
    return model, next(iter(mapped.values())).dtype


def official_to_model(path: str, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                      **options) -> RATForCausalLM:
    """The authors' checkpoint at `path` as a RATForCausalLM (eval mode), without writing anything.
    options: mixer, hybrid, head_dim, chunk_size, window, position_encoding (see official_config)."""
    sd = load_official(path)
    model, stored = _build(sd, official_config(sd, **_options(options)))
    return model.to(device=device or "cpu", dtype=dtype or stored).eval()


def _load_tokenizer(tokenizer_dir, vocab):
    from transformers import AutoTokenizer

    if not os.path.isdir(tokenizer_dir):
        raise FileNotFoundError(f"no such tokenizer directory: {tokenizer_dir}")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"cannot load a tokenizer from {tokenizer_dir}: {first[:200]}") from None
    if len(tok) > vocab:
        raise ConversionError(f"the tokenizer in {tokenizer_dir} has {len(tok)} tokens but the checkpoint's vocabulary "
                              f"has {vocab}; it is not this model's tokenizer")
    # bos/eos for generation (no pad: the Llama-2 tokenizer has none, and the model would treat it as padding_idx)
    extra = {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id") if getattr(tok, k, None) is not None}
    return tok, extra


def convert_official(path: str, out: str, tokenizer: str | None = None, overwrite: bool = False,
                     **options) -> RATConfig:
    """Convert the authors' checkpoint at `path` into a model directory `out` that
    `AutoModelForCausalLM.from_pretrained(out)` loads (after `import ratlm`). tokenizer: a local
    tokenizer directory to copy in. Returns the model's config."""
    from transformers.utils import logging as hf_logging

    out = os.fspath(out)
    if os.path.isfile(out):
        raise ConversionError(f"--out {out} is a file; give a directory")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ConversionError(f"--out {out} exists and is not empty; choose a new directory or pass --overwrite")
    sd = load_official(path)
    config = official_config(sd, **_options(options))
    tok = None
    if tokenizer is not None:
        tok, extra = _load_tokenizer(tokenizer, config.vocab_size)
        for k, v in extra.items():
            setattr(config, k, v)
    model, _ = _build(sd, config)
    os.makedirs(out, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if tok is not None:
        tok.save_pretrained(out)
    return model.config


def describe(config: RATConfig) -> str:
    """One line about a converted model."""
    kinds = sorted(set(config.layer_types), key=config.layer_types.index)
    parts = [f"{'+'.join(kinds)}", f"{config.num_hidden_layers} layers x {config.hidden_size}"]
    if any(t != "rnn" for t in kinds):
        parts.append(f"{config.num_attention_heads} heads x {config.hidden_size // config.num_attention_heads}")
    if "rat" in kinds:
        parts.append(f"L={config.chunk_size}, G={config.qk_groups}")
    if "sliding_attention" in kinds:
        parts.append(f"W={config.sliding_window}")
    if any(t != "rnn" for t in kinds):
        parts.append(config.position_encoding)
    parts.append(f"vocab {config.vocab_size}")
    if not config.tie_word_embeddings:
        parts.append("untied head")
    return ", ".join(parts)


__all__ = ["ConversionError", "load_official", "official_config", "map_state_dict", "official_to_model",
           "convert_official", "describe", "DEFAULTS", "MIXERS"]
