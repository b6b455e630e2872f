"""Every step of the plan runs through a Python function (Step.call) and records a `ratlm` command
(Step.argv): the command, parsed by the real command-line parser, must give that function exactly the
arguments the call gives it."""
import argparse
import functools
import inspect

import pytest

from ratlm import cli, reproduce
from ratlm.bench import api as bench_api
from ratlm.errors import UserError
from ratlm.eval import api as eval_api
from ratlm.eval.longbench import api as longbench_api
from ratlm.options import parse_pairs
from ratlm.reproduce.plan import Step
from ratlm.reproduce.run import run_step
from ratlm.train import api as train_api
from ratlm.train import recipe as rc


def _plan(quick, device="cpu", threads=None):
    s = reproduce.settings(quick=quick)
    widths, _ = reproduce.equalise(s.lm_variants, s)
    return reproduce.plan(s, "work", "out", widths, reproduce.timing_model(s, {}), device, threads)


def _subparser(words):
    """The argparse parser of `ratlm WORDS`."""
    p = cli.build_parser()
    for w in words:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[w]
    return p


def _given(parser, argv):
    """The destinations of the options written in argv."""
    return {parser._option_string_actions[t].dest for t in argv if t in parser._option_string_actions}


def _check_train(step):
    args = cli.build_parser().parse_args(step.argv)
    overrides = {o.name: getattr(args, o.name) for o in rc.OPTIONS if getattr(args, o.name) is not None}
    call = step.call
    assert call.func is train_api.run and not call.args
    assert {k: v for k, v in call.keywords.items() if k != "recipe"} == overrides
    assert call.keywords.get("recipe") == args.recipe
    # and both resolve to the same recipe (the command's values are the call's)
    assert rc.load(args.recipe, overrides) == rc.load(call.keywords.get("recipe"), overrides)


def _check_eval(step):
    words = step.argv[:2]
    parser = _subparser(words)
    args = cli.build_parser().parse_args(step.argv)
    call = step.call
    assert call.func is getattr(eval_api, words[1])
    assert call.args == (args.models,)
    option = getattr(args, "option", [])  # retrieval's -o NAME=VALUE, the call's options
    given = _given(parser, step.argv) - {"option"}
    assert given | ({"options"} if option else set()) == set(call.keywords)
    for k, v in call.keywords.items():
        if k == "options":
            assert parse_pairs(option, "-o") == v
        elif k == "data":
            assert args.data == [v]
        else:
            assert getattr(args, k) == v, k


def _check_longbench(step):
    """`ratlm eval longbench-mini DIR ...` and `ratlm eval generate MODEL... --data FILE ...`."""
    words = step.argv[:2]
    args = cli.build_parser().parse_args(step.argv)
    call = step.call
    assert call.func is getattr(longbench_api, words[1].replace("-", "_"))
    assert call.args == ((args.folder,) if words[1] == "longbench-mini" else (args.models,))
    assert _given(_subparser(words), step.argv) == set(call.keywords)
    for k, v in call.keywords.items():
        assert getattr(args, k) == v, k


def _check_bench(step):
    words = step.argv[:2]
    args = cli.build_parser().parse_args(step.argv)
    call = step.call
    assert call.func is getattr(bench_api, words[1]) and not call.args
    options = dict(call.keywords)
    assert options.pop("command") == step.command  # what the JSON records
    assert _given(_subparser(words), step.argv) == set(options)
    for k, v in options.items():
        assert getattr(args, k) == v, k


@pytest.mark.parametrize("quick,device,threads", [(False, "cpu", None), (True, "cpu", 2), (True, "cuda", None)])
def test_every_command_matches_its_call(quick, device, threads):
    steps = _plan(quick, device, threads)
    kinds = {"train": _check_train, "eval": _check_eval, "bench": _check_bench}
    for step in steps:
        assert isinstance(step.call, functools.partial)
        if step.argv[:2] in (["eval", "generate"], ["eval", "longbench-mini"]):
            _check_longbench(step)
        else:
            kinds[step.argv[0]](step)
    assert {st.argv[1] for st in steps if st.stage == "sft"} >= {"longbench-mini", "generate"}
    assert {st.argv[0] for st in steps} == set(kinds)
    assert all(("--threads" in st.argv) == bool(threads) for st in steps if st.argv[0] == "train")


def test_a_failing_step_is_one_error_naming_its_log(tmp_path):
    def broken():
        print("some output")
        raise ValueError("no such thing")

    step = Step("x", "lm", "a step that fails", ["train", "--max-steps", "1"], broken, 1.0)
    with pytest.raises(UserError, match=r"step x failed \(ValueError: no such thing\); its log is .*x\.log"):
        run_step(step, str(tmp_path))
    log = (tmp_path / "x.log").read_text()
    assert log.startswith("$ ratlm train --max-steps 1\n") and "some output" in log and "Traceback" in log


def test_a_step_runs_its_call_and_then_its_after_hook(tmp_path):
    done = []
    step = Step("y", "lm", "a step", ["train"], lambda: print("trained"), 1.0, after=lambda: done.append(1))
    assert run_step(step, str(tmp_path)) >= 0
    assert done == [1] and "trained" in (tmp_path / "y.log").read_text()


COMMANDS = [(["eval", "ppl"], eval_api.ppl), (["eval", "length"], eval_api.length),
            (["eval", "retrieval"], eval_api.retrieval), (["eval", "generate"], longbench_api.generate),
            (["eval", "longbench-mini"], longbench_api.longbench_mini), (["bench", "layer"], bench_api.layer),
            (["bench", "generate"], bench_api.generate)]


@pytest.mark.parametrize("words,func", COMMANDS, ids=lambda x: "-".join(x) if isinstance(x, list) else "")
def test_functions_default_as_their_commands(words, func):
    """A keyword left out of a call means what the option left off the command line means."""
    defaults = {a.dest: a.default for a in _subparser(words)._actions}
    defaults["options"] = defaults.pop("option", None) or None  # -o NAME=VALUE, repeatable: none is []
    for name, param in inspect.signature(func).parameters.items():
        if param.default is inspect.Parameter.empty or name == "command":
            continue
        expected = list(param.default) if isinstance(param.default, tuple) else param.default
        assert defaults[name] == expected, name
