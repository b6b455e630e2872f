"""The evaluation commands as Python functions: `ratlm eval ppl|length|retrieval` are these functions
with their keyword arguments taken from the command line (the same names, `--max-tokens` -> max_tokens).
Each loads the models one at a time, prints the command's table, writes its JSON (and PNG) under `out`,
and returns what it wrote. Bad arguments raise ratlm.errors.UserError."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from ..errors import UserError
from .common import labels, read_documents, table, write_json


def progress():
    """A tqdm factory on stderr for the library functions' `progress` argument."""
    from tqdm import tqdm

    return lambda **kw: tqdm(**kw, file=sys.stderr, leave=False)


def load_models(paths: Sequence[str], device: str | None = None, dtype: str | None = None,
                tokenizer: str | None = None) -> Iterator[tuple[str, object, object]]:
    """Yield (name, model, tokenizer), loading each model only when its turn comes."""
    from ..runtime import load, pick_device

    device = pick_device(device)
    for path, name in zip(paths, labels(paths)):
        loaded = load(path, device, dtype, tokenizer)
        for note in loaded.notes:
            print(f"ratlm: {note}", file=sys.stderr)
        yield name, loaded.model, loaded.tokenizer


def model_config(path: str):
    """The config of a model directory, without loading the weights."""
    from transformers import AutoConfig

    from .. import models  # noqa: F401  (registers the Auto classes)

    if not os.path.exists(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} has no config.json; give a directory written by save_pretrained")
    return AutoConfig.from_pretrained(path)


def check_positive(**values):
    """UserError naming the option (as on the command line) of the first value below 1."""
    for k, v in values.items():
        if v is not None and v < 1:
            raise UserError(f"--{k.replace('_', '-')} must be at least 1, got {v}")


def check_out(out: str) -> None:
    """`out` must be a folder that can be written (checked before any model is loaded)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file; give a folder for the JSON and PNG files")
    parent = out
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent or ".", os.W_OK):
        raise UserError(f"--out {out}: cannot write in {parent or '.'}; choose another folder")


def _as_list(x):
    return [x] if isinstance(x, str) else list(x)


def ppl(models: Sequence[str], data: str | Sequence[str], *, text_field: str = "text", context: int | None = None,
        stride: int | None = None, max_tokens: int | None = None, bos: bool = False, batch_size: int = 8,
        device: str | None = None, dtype: str | None = None, tokenizer: str | None = None,
        out: str = "runs/eval") -> dict:
    """`ratlm eval ppl`: perplexity and bits per byte of each model on the documents of `data`; writes
    OUT/ppl.json. Returns its contents."""
    from .ppl import perplexity

    models, data = _as_list(models), _as_list(data)
    check_positive(context=context, stride=stride, batch_size=batch_size, max_tokens=max_tokens)
    check_out(out)
    docs = read_documents(data, text_field)
    rows = []
    for name, model, tok in load_models(models, device, dtype, tokenizer):
        r = perplexity(model, tok, docs, context or model.config.train_length, stride, batch_size, bos, max_tokens,
                       progress=progress())
        rows.append({"name": name, **r})
    print(table(["model", "context", "stride", "tokens", "loss", "ppl", "bits/byte"],
                [[r["name"], r["context"], r["stride"], r["tokens"], r["nll"], r["ppl"], r["bits_per_byte"]]
                 for r in rows]))
    result = {"data": data, "results": rows}
    path = write_json(os.path.join(out, "ppl.json"), result)
    print(f"wrote {path}")
    return result


def length(models: Sequence[str], data: str | Sequence[str], *, text_field: str = "text",
           factors: Sequence[int] = (1, 2, 4), train_length: int | None = None, bucket: int | None = None,
           windows: int = 16, batch_size: int = 8, device: str | None = None, dtype: str | None = None,
           tokenizer: str | None = None, out: str = "runs/eval") -> dict:
    """`ratlm eval length`: loss by position on sequences of factor x the training length; writes
    OUT/length.json and OUT/length.png. Returns the JSON's contents."""
    from .length import buckets, mean_upto, plot, position_losses

    models, data, factors = _as_list(models), _as_list(data), list(factors)
    check_positive(train_length=train_length, bucket=bucket, windows=windows, batch_size=batch_size)
    check_out(out)
    if not factors or min(factors) < 1:
        raise UserError("--factors must be positive integers, e.g. 1,2,4")
    docs = read_documents(data, text_field)
    train_length = train_length or max(model_config(p).train_length for p in models)
    longest = max(factors) * train_length
    width = bucket or max(train_length // 4, 1)
    results = []
    for name, model, tok in load_models(models, device, dtype, tokenizer):
        losses, n = position_losses(model, tok, docs, longest, windows, batch_size, progress())
        results.append({"name": name, "train_length": model.config.train_length,
                        "position_encoding": getattr(model.config, "position_encoding", None),
                        "windows": n, "eval_lengths": [f * train_length for f in factors],
                        "mean_loss": [mean_upto(losses, f * train_length) for f in factors],
                        "buckets": buckets(losses, width), "position_loss": losses})
    print(f"# mean loss (nats/token) over sequences of each length; training length {train_length}")
    print(table(["model", "train len", "windows", *[f"{f}x ({f * train_length})" for f in factors]],
                [[r["name"], r["train_length"], r["windows"], *r["mean_loss"]] for r in results]))
    print("\n# loss by position")
    print(table(["positions", *[r["name"] for r in results]],
                [[f"{a}-{b}", *[r["buckets"][k][2] for r in results]]
                 for k, (a, b, _) in enumerate(results[0]["buckets"])]))
    os.makedirs(out, exist_ok=True)
    result = {"data": data, "train_length": train_length, "factors": factors, "bucket": width, "results": results}
    path = write_json(os.path.join(out, "length.json"), result)
    png = os.path.join(out, "length.png")
    plot(results, png, train_length)
    print(f"wrote {path} and {png}")
    return result


def retrieval(models: Sequence[str], task: str, *, lengths: Sequence[int] | None = None,
              depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), examples: int = 20, seed: int = 0,
              options: dict | Sequence[str] | None = None, bos: bool = False, batch_size: int = 8,
              device: str | None = None, dtype: str | None = None, tokenizer: str | None = None,
              out: str = "runs/eval") -> dict:
    """`ratlm eval retrieval`: answer accuracy on generated `task` examples by length and depth; writes
    OUT/retrieval_TASK.json and a heatmap PNG. `options`: the task's options (a dict, or NAME=VALUE
    strings as after -o). Lengths default to 1, 2 and 4 x the first model's train_length. Returns the
    JSON's contents."""
    from ..options import parse_pairs
    from .retrieval import evaluate, heatmap, mean_accuracy

    models, depths = _as_list(models), list(depths)
    check_positive(examples=examples, batch_size=batch_size)
    check_out(out)
    options = parse_pairs(options, "--option")
    if any(not 0 <= d <= 1 for d in depths):
        raise UserError("--depths must be between 0 and 1")
    results = []
    for name, model, tok in load_models(models, device, dtype, tokenizer):
        lengths = list(lengths or [f * model.config.train_length for f in (1, 2, 4)])  # then the same for all
        bos_id = tok.bos_token_id if bos else None
        if bos and bos_id is None:
            raise UserError("the tokenizer has no BOS token; leave out --bos")
        r = evaluate(model, tok, task, lengths, depths, examples, seed, options, batch_size, bos_id, progress())
        results.append({"name": name, **r})
    opts = ", ".join(f"{k}={v}" for k, v in options.items())
    print(f"# {task}{' (' + opts + ')' if opts else ''}: answer accuracy by length (mean over depths)")
    print(table(["length", *[r["name"] for r in results]],
                [[L, *[mean_accuracy(r, i) for r in results]] for i, L in enumerate(lengths)]))
    for r in results:
        print(f"\n# {r['name']}: accuracy by length (rows) and depth (columns); exact = all answers of an example")
        print(table(["length", *[f"{d:g}" for d in r["depths"]], "exact", "tokens"],
                    [[L, *r["accuracy"][i], r["exact"][i], round(r["mean_tokens"][i])]
                     for i, L in enumerate(r["lengths"])]))
    os.makedirs(out, exist_ok=True)
    result = {"results": results}
    path = write_json(os.path.join(out, f"retrieval_{task}.json"), result)
    png = os.path.join(out, f"retrieval_{task}.png")
    heatmap(results, png, f"ratlm eval retrieval: {task}{' (' + opts + ')' if opts else ''}")
    print(f"wrote {path} and {png}")
    return result
