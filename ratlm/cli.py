"""The `ratlm` command: one entry point, one subcommand per job.

Each subcommand lives in its job's package and registers itself here; this module only parses
arguments, turns expected errors into one line on stderr (exit 2), and never shows a traceback
unless RATLM_DEBUG=1.
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import UserError


def csv_list(kind):
    """argparse type: a comma-separated list of `kind`."""
    def parse(s):
        try:
            return [kind(v) for v in s.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {kind.__name__}, got {s!r}") from None
    return parse


def _command_modules():
    """Each job package has a `cli` module with `register(subparsers)`; the order is the help order."""
    from . import reproduce
    from .bench import cli as bench
    from .eval import cli as evaluate
    from .models import cli as models
    from .serve import cli as serve
    from .train import cli as train

    return [train, models, evaluate, bench, serve, reproduce]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with where to look), not the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser():
    parser = Parser(prog="ratlm",
                    description="RAT language models: train, generate, serve, evaluate, benchmark, reproduce.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`ratlm generate ... | head -c 1`): stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 0
    except (UserError, ValueError, FileNotFoundError, OSError) as e:
        if os.environ.get("RATLM_DEBUG"):
            raise
        print(f"ratlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ratlm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still one line, with the way to see more
        if os.environ.get("RATLM_DEBUG"):
            raise
        print(f"ratlm: internal error: {type(e).__name__}: {e} (set RATLM_DEBUG=1 to see the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
