"""The benchmark commands as Python functions: `ratlm bench layer|generate` with keyword arguments named
as their options (`--qk-groups` -> qk_groups, `--prompt-len` -> prompt_len) and typed as the command
line parses them (lists for --mixers/--lengths/--modes); options left out take the command's defaults.
Each prints the command's table, writes its JSON and PNG under `out` and returns the JSON's contents.

They run the command's own code (ratlm/bench/cli.py) on an argument namespace made of the command's
defaults and the keywords, so a call and the command line cannot differ. The JSON's meta.command is
still taken from sys.argv there (the process's command line)."""
from __future__ import annotations

import argparse
import json
import os
from typing import Any


def layer(**options: Any) -> dict:
    """`ratlm bench layer`: train / prefill / decode latency of each mixer (OUT/bench_layer.json)."""
    return _run("layer", "bench_layer.json", options)


def generate(**options: Any) -> dict:
    """`ratlm bench generate`: whole-model generation throughput (OUT/bench_generate.json)."""
    return _run("generate", "bench_generate.json", options)


def _namespace(command: str, options: dict) -> argparse.Namespace:
    from . import cli

    parser = argparse.ArgumentParser(prog="ratlm")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["bench", command])  # the defaults of every option
    known = set(vars(args)) - {"func", "bench_cmd"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"bench {command}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for k, v in options.items():
        setattr(args, k, v)
    return args


def _run(command: str, filename: str, options: dict) -> dict:
    args = _namespace(command, options)
    args.func(args)
    with open(os.path.join(args.out, filename)) as f:
        return json.load(f)
