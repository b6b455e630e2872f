"""The verdict rules and the write-up on the shipped run (docs/results/results.json) and on variations of
it that take every branch of every rule: the verdicts and RESULTS.md must stay what they were when the
golden file was written (`python tests/reproduce/test_claims.py --write` rewrites it, on purpose only)."""
import copy
import hashlib
import json
import pathlib
import sys

import pytest

from ratlm import reproduce

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "docs" / "results" / "results.json"
GOLDEN = pathlib.Path(__file__).with_name("claims_golden.json")


def shipped():
    return json.loads(SHIPPED.read_text())


def _set_ppl(**ppl):
    def change(r):
        for run, value in ppl.items():
            r["lm"][run.replace("_", "-")]["heldout_ppl"] = value
    return change


def _drop_run(run):
    def change(r):
        del r["lm"][run]
    return change


def _length_rise(flat, boom):
    def change(r):
        r["lm"]["rat16-swa-nope"]["length_rise_pct"]["4"] = flat
        r["lm"]["attention"]["length_rise_pct"]["4"] = boom
    return change


def _accuracy(**acc):
    def change(r):
        per = r["retrieval"]["mqar"]["eval"]["mqar"]
        for name, a in acc.items():
            if a is None:
                del per[name]
            else:
                per[name]["accuracy"][0] = a
    return change


def _speed(train=None, generate=None):
    def change(r):
        for x in r["bench"]["layer"]:
            if x["mixer"] == "rat16" and x["mode"] == "train" and train is not None:
                x["ratio_vs_attention"] = train
        for x in r["bench"]["generate"]:
            if x["variant"] == "rat" and generate is not None:
                x["ratio_vs_attention"] = generate
    return change


def _set(path, value):
    def change(r):
        *keys, last = path
        d = r
        for k in keys:
            d = d[k]
        d[last] = value
    return change


def _delete(path):
    def change(r):
        *keys, last = path
        d = r
        for k in keys:
            d = d[k]
        d.pop(last, None)  # (the shipped run may not have it)
    return change


def _sft(rat16, attention, se=1.0, metrics=("code_sim", "exact")):
    """An SFT stage in place of the shipped run's: (base, fine-tuned) code_sim of each variant."""
    def change(r):
        from ratlm.reproduce.plan import FULL

        r["settings"].update({k: v for k, v in FULL.items() if k.startswith("sft_")})
        r["sft"] = {"train": {n: {"steps": 300, "train_loss": 0.4, "train_seconds": 30.0, "val_loss": 0.5}
                              for n in ("rat16", "attention")},
                    "scores": {n: {m: {"base": b if m == "code_sim" else 0.0, "tuned": t if m == "code_sim" else 3.0,
                                       "gap": round((t - b) if m == "code_sim" else 3.0, 2), "se": se, "n": 100,
                                       "mean_new_tokens": [8.0, 5.0]} for m in metrics}
                               for n, (b, t) in (("rat16", rat16), ("attention", attention))}}
    return change


CASES = {
    "shipped": lambda r: None,
    "quick-mode": _set(["mode"], "quick"),
    "no-second-seed": _set(["noise"], {"pairs": [], "spread_pct": None}),
    "not-rejudged": _delete(["rejudged"]),
    "rejudged-no-change": _set(["rejudged"], [{"date": "2026-01-01 00:00 UTC", "git_commit": "abc", "changed": {}}]),
    "step-times": _set(["calibration", "step_ms"], {"attention": 290.0, "rat16": 251.5}),
    "ppl-rat16-worse": _set_ppl(rat16=5.0),
    "ppl-rat16-missing": _drop_run("rat16"),
    "ppl-attention-unscored": _set_ppl(attention=None),
    "hybrid-better": _set_ppl(rat16_swa=3.9),
    "hybrid-worse": _set_ppl(rat16_swa=4.6),
    "hybrid-missing": _drop_run("attention-swa"),
    "chunk-rises": _set_ppl(rat16=4.0, rat64=4.2, rat256=4.5),
    "chunk-falls": _set_ppl(rat16=4.5, rat64=4.2, rat256=4.0),
    "chunk-flat": _set_ppl(rat16=4.0, rat64=4.01, rat256=4.02),
    "chunk-missing": _drop_run("rat256"),
    "length-neither": _length_rise(5.0, 5.0),
    "length-flat-only": _length_rise(-1.0, 5.0),
    "length-boom-only": _length_rise(5.0, 50.0),
    "length-missing": _drop_run("rat16-swa-nope"),
    "retrieval-reproduces": _accuracy(attention=0.9, rat16=0.9, rat64=0.3, rnn=0.3),
    "retrieval-fails": _accuracy(attention=0.9, rat16=0.5, rat64=0.6, rnn=0.6),
    "retrieval-close-only": _accuracy(attention=0.9, rat16=0.9, rat64=0.9, rnn=0.2),
    "retrieval-unlearned": _accuracy(attention=0.1, rat16=0.1, rat64=0.05, rnn=0.0),
    "retrieval-model-missing": _accuracy(rat64=None),
    "retrieval-unscored-length": _accuracy(rnn=None, attention=None),
    "retrieval-no-task": _set(["retrieval"], {}),
    "speed-training-slower": _speed(train=0.5),
    "speed-both-slower": _speed(train=0.5, generate=0.8),
    "speed-no-generation": _set(["bench", "generate"], []),
    "speed-no-layer": _set(["bench", "layer"], []),
    "sft-reproduces": _sft((17.0, 66.2), (17.0, 60.0)),
    "sft-partly": _sft((17.0, 66.2), (17.0, 19.0)),
    "sft-fails": _sft((17.0, 18.0), (17.0, 17.0)),
    "sft-noisy": _sft((17.0, 30.0), (17.0, 60.0), se=8.0),
    "sft-no-metric": _sft((17.0, 66.2), (17.0, 60.0), metrics=("exact",)),
    "sft-not-run": _delete(["sft"]),
}


def case(name):
    """The shipped results changed as the case says, with the verdicts judged again by this version."""
    r = copy.deepcopy(shipped())
    CASES[name](r)
    r["claims"] = reproduce.claims(r)
    return r


def observe(name):
    """What the golden file records of a case: each verdict and reason, and digests of the whole claims
    and of the rendered write-up (or the error rendering raised)."""
    r = case(name)
    try:
        md = reproduce.render(r)
        rendered = hashlib.sha256(md.encode()).hexdigest()
    except Exception as e:  # recorded as behaviour: a refactor must not change it either
        rendered = f"{type(e).__name__}: {e}"
    return {"verdicts": {c["id"]: [c["verdict"], c["reason"]] for c in r["claims"]},
            "claims_sha256": hashlib.sha256(json.dumps(r["claims"], sort_keys=True).encode()).hexdigest(),
            "render": rendered}


def test_shipped_write_up_is_what_this_version_renders():
    r = shipped()
    assert reproduce.claims(r) == r["claims"]
    assert reproduce.render(r) == (ROOT / "docs" / "RESULTS.md").read_text()


@pytest.mark.parametrize("name", list(CASES))
def test_verdicts_and_write_up_unchanged(name):
    golden = json.loads(GOLDEN.read_text())
    assert observe(name) == golden[name]


def test_every_rule_takes_every_verdict():
    """The cases reach every verdict each rule can give (so the golden file covers every branch)."""
    golden = json.loads(GOLDEN.read_text())
    seen = {}
    for g in golden.values():
        for cid, (verdict, _) in g["verdicts"].items():
            seen.setdefault(cid, set()).add(verdict)
    two_halves = {"length", "retrieval", "speed", "sft"}  # the rules that can be partly met
    for cid, verdicts in seen.items():
        expected = set(reproduce.VERDICTS) - (set() if cid in two_halves else {"partly reproduces"})
        assert verdicts == expected, cid


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps({name: observe(name) for name in CASES}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
