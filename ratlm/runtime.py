"""The one way every command picks a device and dtype and loads a model with its tokenizer.

`load("runs/x/model")` returns a `Loaded(model, tokenizer, notes)`: MODEL is a model directory
(anything `AutoModelForCausalLM.from_pretrained` reads once ratlm is imported) or one of the authors'
.pt checkpoints, converted in memory. Every failure a user can fix is a one-line `UserError`.
"""
from __future__ import annotations

import os
from typing import Any, NamedTuple

import torch

from .errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1") checked, or CUDA when torch sees one, else the CPU."""
    name = name or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"unknown --device {name!r}; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported --device {name!r}; use cpu or cuda")
    return device


def pick_dtype(name: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """A dtype by name; None or "auto" means float32 on CPU and bfloat16 on CUDA."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; use {', '.join(DTYPES)} or auto")
    return DTYPES[name]


def bf16_note(device: torch.device | str, dtype: torch.dtype | str | None) -> str | None:
    """A note for bfloat16 work on a CPU without native bf16 instructions (AVX512-BF16 or AMX-BF16), where
    torch emulates it and it runs several times slower than float32; None otherwise."""
    if torch.device(device).type != "cpu" or pick_dtype(dtype, device) != torch.bfloat16:
        return None
    from .bench.system import cpu_info

    info = cpu_info()
    if info["isa"].get("bf16"):
        return None
    return (f"this CPU ({info['model']}) has no native bf16 instructions (AVX512-BF16 or AMX): bfloat16 is "
            "emulated and runs several times slower than float32 here")


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def load_model(path: str, device: torch.device | str = "cpu", dtype: torch.dtype | str | None = None,
               official: dict | None = None, notes: list | None = None):
    """A model in eval mode from a model directory or an authors' checkpoint file. `official` holds the
    conversion options for a checkpoint (mixer, hybrid, head_dim, ...; None: the paper's defaults);
    giving any of them with a directory is an error. Conversion notes are appended to `notes`."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from . import models  # noqa: F401  (registers the Auto classes)
    from .models.convert_official import DEFAULTS, describe, official_to_model

    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    given = {k: v for k, v in (official or {}).items() if v is not None}
    if os.path.isdir(path):
        if given:
            names = ", ".join(f"--{k.replace('_', '-')}" for k in given)
            raise UserError(f"{names} {'is' if len(given) == 1 else 'are'} only for the authors' .pt checkpoints, "
                            f"and {path} is a model directory")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise UserError(f"{path} is not a model directory (no config.json); give a directory written by "
                            "save_pretrained (e.g. by `ratlm train`) or convert-official, or an authors' .pt "
                            "checkpoint")
        hf_logging.disable_progress_bar()  # no "Loading weights" bar between our own
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except Exception as e:
            raise UserError(f"cannot load a model from {path}: {_first_line(e)}") from None
        return model.to(device).eval()
    if os.path.isfile(path):
        model = official_to_model(path, dtype=dtype, device=device, **{**DEFAULTS, **given})
        if notes is not None:
            notes.append(f"converted {path} in memory: {describe(model.config)}")
        return model.eval()
    raise UserError(f"no such model directory or checkpoint: {path}")


def load_tokenizer(name: str | None, model: Any = None, model_path: str | None = None,
                   notes: list | None = None):
    """A tokenizer: `name` ('byte' or a directory), else the one saved beside the model, else the byte
    tokenizer (with a note). Refuses a tokenizer larger than the model's vocabulary."""
    from .data.tokenizer import load_tokenizer as _load

    if name is None:
        d = model_path if model_path and os.path.isdir(model_path) else None
        if d and any(os.path.isfile(os.path.join(d, f)) for f in TOKENIZER_FILES):
            name = d
        else:
            if notes is not None:
                where = "the checkpoint" if d is None else d
                notes.append(f"no tokenizer in {where}; using the byte-level tokenizer (pass --tokenizer DIR for "
                             "the model's own)")
            name = "byte"
    elif name not in ("byte", "bytes") and not os.path.isdir(name):
        raise UserError(f"no such tokenizer directory: {name} (or use --tokenizer byte)")
    try:
        tok = _load(name)
    except Exception as e:
        raise UserError(f"cannot load a tokenizer from {name}: {_first_line(e)}") from None
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and len(tok) > vocab:
        raise UserError(f"the tokenizer has {len(tok)} tokens but the model's vocabulary has only {vocab}; pass the "
                        "tokenizer the model was trained with (--tokenizer DIR)")
    return tok


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def pack_for_cpu(model, notes: list | None = None, free: int | None = None) -> bool:
    """Mark the linear layers of `model` for packed weights in CPU inference (`ratlm.ops.linear`: faster
    decode steps, at the cost of a second copy of those weights), unless that copy would take more than
    half of the free memory (`free` bytes; default: what the system reports), in which case a note says
    so. Returns whether they were marked."""
    from .layers.common import Linear, pack_linears
    from .ops.linear import can_pack, packing_enabled

    linears = [m for m in model.modules() if isinstance(m, Linear)]
    if not linears or not packing_enabled() or not can_pack(linears[0].weight.dtype):
        return False
    size = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    free = free_memory(torch.device("cpu")) if free is None else free
    if free is not None and size > free // 2:
        if notes is not None:
            notes.append(f"linear weights not packed for faster CPU decoding: the packed copy ({size / 2**30:.1f} "
                         "GiB) would take more than half of the free memory")
        return False
    return pack_linears(model) > 0


class Loaded(NamedTuple):
    model: Any
    tokenizer: Any
    notes: list  # what the user should be told (conversions, fallbacks)


def load(path: str, device: torch.device | str | None = None, dtype: torch.dtype | str | None = None,
         tokenizer: str | None = None, official: dict | None = None) -> Loaded:
    """Model + tokenizer for a command: device and dtype chosen (see pick_device / pick_dtype), notes for
    the user collected (print them once everything is checked). The model is for inference: on the CPU
    its linear layers are marked for packed weights (`pack_for_cpu`)."""
    notes: list = []
    device = pick_device(device)
    model = load_model(path, device, pick_dtype(dtype, device), official, notes)
    if device.type == "cpu":
        pack_for_cpu(model, notes)
    tok = load_tokenizer(tokenizer, model, path, notes)
    note = bf16_note(device, dtype)
    if note:
        notes.append(note)
    return Loaded(model, tok, notes)
