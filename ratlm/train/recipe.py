"""Training recipes: YAML files of flat `key: value` pairs, shipped ones in `ratlm/recipes/`, overridden
on the command line by `--key value` (underscores written as hyphens).

A recipe may start from another with `base: NAME`, and list keys the user must give with
`required: [key, ...]`. Unknown keys and bad values are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from importlib import resources

import yaml

from ..errors import UserError

DEFAULT_RECIPE = "tiny-rat"


class RecipeError(UserError):
    """A recipe problem the user can fix (one line)."""


def _bool(v):
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(v, str) and v.lower() in ("false", "no", "off", "0"):
        return False
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError("expected true or false")


def _int(v):
    if isinstance(v, bool):
        raise ValueError("expected an integer")
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        v = v.replace("_", "")
        try:
            return int(v)
        except ValueError:
            f = float(v)  # 1e6
            if f.is_integer():
                return int(f)
            raise
    if isinstance(v, int):
        return v
    raise ValueError("expected an integer")


def _float(v):
    if isinstance(v, bool):
        raise ValueError("expected a number")
    return float(v)


def _floats(v):
    if isinstance(v, str):
        v = [x for x in v.replace("(", "").replace(")", "").split(",") if x.strip()]
    if not isinstance(v, (list, tuple)):
        raise ValueError("expected a comma-separated list of numbers")
    return [_float(x) for x in v]


def _str(v):
    if isinstance(v, (dict, list)):
        raise ValueError("expected a single value")
    return str(v)


def _int_or_auto(v):
    return "auto" if v in ("auto", None) else _int(v)


def _ints_or_int(v):
    if isinstance(v, str) and "," in v:
        return [_int(x) for x in v.split(",") if x.strip()]
    if isinstance(v, list):
        return [_int(x) for x in v]
    return _int(v)


def _options(v):
    if isinstance(v, dict):
        return ",".join(f"{k}={x}" for k, x in v.items())
    return _str(v)


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    parse: object
    group: str
    help: str
    choices: tuple = ()
    metavar: str = None
    default: object = None  # what the loop uses when no recipe sets the key (see Recipe)


O = Option
OPTIONS = [
    # run
    O("out", _str, "run", "output folder (default: runs/NAME with --name, else runs/RECIPE-TIMESTAMP, or with "
      "--resume auto the newest runs/RECIPE-*); one run at a time: a second run on the same folder is refused",
      metavar="DIR"),
    O("name", _str, "run", "run name: the output folder is runs/NAME (ignored with --out)"),
    O("resume", _str, "run", "none, auto (the newest checkpoint in the output folder, or start fresh), or a checkpoint "
      "file; a resumed run keeps its saved recipe, with the options given here on top",
      metavar="none|auto|FILE", default="none"),
    O("seed", _int, "run", "seed of the initialisation and the data order", default=0),
    O("device", _str, "run", "auto, cpu, cuda or cuda:N (under torchrun: each process's own GPU)",
      metavar="DEV", default="auto"),
    O("threads", _int, "run", "CPU threads for torch (0: torch's choice)", default=0),
    O("log_every", _int, "run", "write training metrics every N steps", metavar="N", default=10),
    O("eval_every", _int, "run", "validation loss every N steps (0: only at the end)", metavar="N", default=0),
    O("eval_batches", _int, "run", "validation micro-batches per process", metavar="N", default=8),
    O("save_every", _int, "run", "checkpoint every N steps (0: only at the end)", metavar="N", default=0),
    O("keep_last", _int, "run", "checkpoints kept (older ones are deleted)", metavar="N", default=3),
    O("progress", _bool, "run", "show a progress bar (else one line per --log-every)", default=True),
    # model
    O("model", _str, "model", "model preset: VARIANT-SIZE, e.g. rat-tiny, attention-tiny, rnn-tiny, rat-swa-tiny, "
      "attention-swa-xl, rat64-small (see ratlm.models.presets)", metavar="PRESET", default="rat-tiny"),
    O("init_from", _str, "model", "start from this model folder (a `from_pretrained` folder, e.g. for SFT) "
      "instead of a fresh initialisation; the model keys below are then ignored", metavar="DIR"),
    O("hidden_size", _int, "model", "model width D"),
    O("num_hidden_layers", _int, "model", "number of layers"),
    O("num_attention_heads", _int, "model", "heads per mixer"),
    O("intermediate_size", _int_or_auto, "model", "FFN width (auto: 4 D)", default="auto"),
    O("chunk_size", _ints_or_int, "model", "RAT chunk length L (one value, or one per layer)", metavar="L"),
    O("qk_groups", _int, "model", "RAT query/key groups G"),
    O("sliding_window", _int, "model", "window W of sliding-window attention layers", metavar="W"),
    O("position_encoding", _str, "model", "rope or nope", ("rope", "nope")),
    O("vocab_size", _int_or_auto, "model", "model vocabulary (auto: the tokenizer's size)", default="auto"),
    # data
    O("data", _str, "data", "stdlib (the Python standard library, offline default), text files/folders/globs "
      "(comma-separated), a `ratlm prepare` folder, hf:NAME (Hugging Face datasets), synthetic:TASK, or "
      "prompt/response .jsonl for SFT", metavar="SPEC", default="stdlib"),
    O("data_options", _options, "data", "k=v,k=v options of hf: (split, val_split, text_field, streaming, "
      "data_files, config, val_docs: documents of the split held out for validation when there is no val_split, "
      "default 200, at most a tenth of a small dataset) and synthetic: (n, val_n, task options)", metavar="K=V,..."),
    O("val_data", _str, "data", "validation files, read with the run's tokenizer, for any --data; then nothing of "
      "--data is held out (default: files held out of --data by name, or the prepared/hf data's own validation "
      "split)", metavar="SPEC"),
    O("val_fraction", _float, "data", "share of files (or of a single file's tokens) held out for validation "
      "(0: none, no validation loss without --val-data)", default=0.02),
    O("text_errors", _str, "data", "bytes of --data/--val-data files that are not UTF-8 text: strict (refuse, naming "
      "the file and the byte offset) or replace (read them as U+FFFD)", ("strict", "replace"), default="strict"),
    O("tokenizer", _str, "data", "byte, bpe:N (train a byte-level BPE of N tokens here), or a local tokenizer "
      "folder (default: the prepared data's or --init-from's, else byte)", metavar="TOK"),
    O("seq_len", _int, "data", "tokens per training row", metavar="T"),
    O("sft", _str, "data", "auto (prompt/response data), true or false: loss on response tokens only",
      ("auto", "true", "false"), default="auto"),
    # optimisation
    O("max_steps", _int, "optim", "optimizer steps", metavar="N"),
    O("batch_size", _int, "optim", "global batch in rows (all processes, all accumulation steps)", metavar="ROWS"),
    O("micro_batch_size", _int, "optim", "rows per forward pass per process; gradient accumulation makes up the rest",
      metavar="ROWS"),
    O("lr", _float, "optim", "peak learning rate (AdamW)"),
    O("min_lr", _float, "optim", "learning rate at the end of the cosine schedule", default=0.0),
    O("warmup_fraction", _float, "optim", "share of max_steps spent in linear warmup", metavar="F", default=0.0),
    O("warmup_steps", _int_or_auto, "optim", "warmup steps (auto: warmup_fraction x max_steps)",
      metavar="N", default="auto"),
    O("betas", _floats, "optim", "AdamW betas", metavar="B1,B2", default=(0.9, 0.95)),
    O("weight_decay", _float, "optim", "AdamW weight decay (matrices only; not norms, biases, gate biases)",
      default=0.0),
    O("grad_clip", _float, "optim", "clip the global gradient norm (0: off)", default=0.0),
    # speed and memory
    O("precision", _str, "speed", "auto (bf16 autocast on GPU, fp32 on CPU), fp32 or bf16",
      ("auto", "fp32", "bf16"), default="auto"),
    O("compile", _bool, "speed", "torch.compile the model", default=False),
    O("gradient_checkpointing", _bool, "speed", "recompute activations in the backward pass (less memory)",
      default=False),
    O("fsdp", _bool, "speed", "under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP",
      default=False),
]
BY_NAME = {o.name: o for o in OPTIONS}
# the keys that size the model (a --model preset given on the command line replaces the recipe's)
MODEL_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "chunk_size",
              "qk_groups", "sliding_window", "position_encoding")
_TYPES = {_bool: bool, _int: int, _float: float, _str: str, _floats: list, _int_or_auto: "int | str",
          _ints_or_int: "int | list", _options: str}
Recipe = dataclasses.make_dataclass(
    "Recipe", [("recipe", str, dataclasses.field(default=DEFAULT_RECIPE))]
    + [(o.name, _TYPES[o.parse], dataclasses.field(default=o.default)) for o in OPTIONS], frozen=True)
Recipe.__doc__ = ("A resolved recipe as the training loop reads it: every key of OPTIONS as an attribute, with "
                  "Option.default where the recipe leaves it unset (None for keys without a default).")


def typed(r):
    """The Recipe of a resolved recipe dict (ratlm.train.recipe.load): unset keys get their defaults."""
    names = {f.name for f in dataclasses.fields(Recipe)}
    return Recipe(**{k: v for k, v in r.items() if k in names and v is not None})
META_KEYS = ("base", "required", "required_hint", "description")


def recipe_dir():
    return resources.files("ratlm") / "recipes"


def shipped_recipes():
    """{name: first description line} of the recipes shipped with ratlm."""
    out = {}
    for f in sorted(recipe_dir().iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            data = yaml.safe_load(f.read_text()) or {}
            desc = str(data.get("description") or "").strip()
            out[f.name[:-5]] = desc.splitlines()[0] if desc else ""
    return out


def _read(name_or_path, seen=()):
    if os.path.isfile(os.path.expanduser(name_or_path)):
        path, text = os.path.expanduser(name_or_path), open(os.path.expanduser(name_or_path)).read()
    else:
        f = recipe_dir() / f"{name_or_path}.yaml"
        if not f.is_file():
            close = difflib.get_close_matches(name_or_path, list(shipped_recipes()), n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; shipped: {', '.join(shipped_recipes())}"
            raise RecipeError(f"no recipe {name_or_path!r}: not a file and not a shipped recipe{hint}")
        path, text = str(f), f.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of key: value")
    if "base" in data:
        if data["base"] in seen:
            raise RecipeError(f"recipe {path}: base recipes loop through {data['base']!r}")
        parent = _read(str(data["base"]), (*seen, str(data["base"])))
        required = list(parent.get("required", [])) + list(data.get("required", []))
        merged = {**parent, **data, "required": list(dict.fromkeys(required))}
        merged.pop("base", None)
        return _check_keys(merged, path)
    return _check_keys(data, path)


def _check_keys(data, where):
    for key in data:
        if key not in BY_NAME and key not in META_KEYS:
            close = difflib.get_close_matches(str(key), list(BY_NAME), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"recipe {where}: unknown key {key!r}{hint}; `ratlm train --help` lists the keys")
    return data


def parse_value(key, value, where="recipe"):
    opt = BY_NAME[key]
    if value is None:
        return None
    try:
        v = opt.parse(value)
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where} key {key!r}: bad value {value!r} ({e})") from None
    if opt.choices and v not in opt.choices:
        raise RecipeError(f"{where} key {key!r}: {v!r} is not one of {', '.join(opt.choices)}")
    return v


def load(name_or_path=DEFAULT_RECIPE, overrides=None, check_required=True):
    """The resolved recipe: a dict with every key of OPTIONS (None where unset), plus "recipe" (its name).
    `overrides` (e.g. from the command line) replace recipe values; a `model` preset among them replaces
    the recipe's model keys (MODEL_KEYS) too, except those also among the overrides.
    check_required=False skips the recipe's `required` keys (to print a recipe)."""
    raw = _read(name_or_path or DEFAULT_RECIPE)
    out = {o.name: None for o in OPTIONS}
    where = f"recipe {name_or_path}"
    for key, value in raw.items():
        if key in BY_NAME:
            out[key] = parse_value(key, value, where)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key in overrides:
        if key not in BY_NAME:
            raise RecipeError(f"unknown option {key!r}")
    if "model" in overrides:  # the preset's own sizes, not the recipe's
        for key in MODEL_KEYS:
            out[key] = None
    for key, value in overrides.items():
        out[key] = parse_value(key, value, "option")
    base = os.path.basename(name_or_path or DEFAULT_RECIPE)
    out["recipe"] = base[:-5] if base.endswith(".yaml") else base
    missing = [k for k in raw.get("required", []) if out.get(k) is None]
    if missing and check_required:
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in missing)
        hint = raw.get("required_hint") or "see `ratlm train --help`"
        raise RecipeError(f"recipe {out['recipe']} needs {flags}: {hint}")
    validate(out)
    return out


def validate(r, world=1):
    """Range and consistency checks; world: number of processes (batch divisibility)."""
    def bad(key, why):
        raise RecipeError(f"{key} = {r[key]!r}: {why}")

    positive = ["max_steps", "batch_size", "micro_batch_size", "seq_len", "keep_last", "eval_batches", "log_every"]
    for k in positive:
        if r.get(k) is not None and r[k] < 1:
            bad(k, "must be >= 1")
    for k in ("eval_every", "save_every", "threads"):
        if r.get(k) is not None and r[k] < 0:
            bad(k, "must be >= 0")
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "qk_groups", "sliding_window"):
        if r.get(k) is not None and r[k] < 1:
            bad(k, "must be >= 1")
    for k in ("max_steps", "batch_size", "micro_batch_size", "seq_len", "lr"):
        if r.get(k) is None:
            raise RecipeError(f"the recipe sets no {k}; give --{k.replace('_', '-')}")
    if r["seq_len"] < 2:
        bad("seq_len", "must be >= 2")
    if not r["lr"] > 0:
        bad("lr", "must be > 0")
    if r.get("min_lr") is not None and not 0 <= r["min_lr"] <= r["lr"]:
        bad("min_lr", f"must be between 0 and lr ({r['lr']})")
    if r.get("warmup_fraction") is not None and not 0 <= r["warmup_fraction"] < 1:
        bad("warmup_fraction", "must be in [0, 1)")
    if isinstance(r.get("warmup_steps"), int) and not 0 <= r["warmup_steps"] <= r["max_steps"]:
        bad("warmup_steps", f"must be between 0 and max_steps ({r['max_steps']})")
    if r.get("betas") is not None and (len(r["betas"]) != 2 or not all(0 <= b < 1 for b in r["betas"])):
        bad("betas", "must be two numbers in [0, 1), e.g. 0.9,0.95")
    if r.get("weight_decay") is not None and r["weight_decay"] < 0:
        bad("weight_decay", "must be >= 0")
    if r.get("grad_clip") is not None and r["grad_clip"] < 0:
        bad("grad_clip", "must be >= 0 (0: off)")
    if r.get("val_fraction") is not None and not 0 <= r["val_fraction"] <= 0.5:
        bad("val_fraction", "must be in [0, 0.5]")
    if r.get("resume") not in (None, "none", "auto") and not os.path.isfile(os.path.expanduser(r["resume"])):
        raise RecipeError(f"--resume {r['resume']}: no such checkpoint file (use none, auto or a checkpoint path)")
    per = r["micro_batch_size"] * world
    if r["batch_size"] % per:
        raise RecipeError(f"batch_size {r['batch_size']} is not a multiple of micro_batch_size x processes "
                          f"({r['micro_batch_size']} x {world} = {per}); change one of them")
    return r


def to_yaml(r):
    """The resolved recipe as YAML (what a run records next to its checkpoints)."""
    keys = ["recipe"] + [o.name for o in OPTIONS]
    return yaml.safe_dump({k: r.get(k) for k in keys if r.get(k) is not None}, sort_keys=False,
                          default_flow_style=None)
