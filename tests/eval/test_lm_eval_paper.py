"""`ratlm eval lm-eval --tasks paper`: the alias for the paper's six short-context tasks (no lm_eval needed)."""
from ratlm.cli import build_parser
from ratlm.eval.harness import PAPER_TASKS, expand_tasks


def test_paper_alias():
    assert len(PAPER_TASKS) == 6
    assert expand_tasks(["paper"]) == list(PAPER_TASKS)
    assert expand_tasks(["ratlm_passkey", "paper", "piqa"]) == ["ratlm_passkey", *PAPER_TASKS]


def test_paper_alias_is_documented(capsys):
    parser = build_parser()
    try:
        parser.parse_args(["eval", "lm-eval", "-h"])
    except SystemExit:
        pass
    text = " ".join(capsys.readouterr().out.split())
    assert "'paper'" in text and "hellaswag" in text and "network" in text
