"""The paper's claims, each judged against the run's numbers by a rule fixed before the run.

Each claim is a `Rule`: a `judge` function (results -> the claim: the paper's numbers, ours, the rule in
words, the verdict and why) and a `cells` function (the claim -> its two cells of the summary table).
`claims(results)` judges them all, in order; RESULTS.md shows the claims stored in results.json.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from .markdown import f, pct

VERDICTS = ("reproduces", "partly reproduces", "does not reproduce", "inconclusive")
FLAT_PCT = 2.0       # a mean loss at 4x within +2% of the 1x loss is "flat"
EXPLODE_PCT = 10.0   # more than +10% is a blow-up
MIN_BAND_PCT = 1.0   # perplexity differences below max(1%, seed spread) are noise
RETRIEVAL_CLOSE = 0.10
RETRIEVAL_WEAKER = 0.05
RETRIEVAL_LEARNED = 0.20
SFT_MARGIN = 5.0     # a fine-tuned model beats its base when its score (0-100) is higher by more than this
LABELS = {"rnn": "RNN", "rat64": "RAT(64)", "rat16": "RAT(16)", "attention": "attention"}
MISSING = "a run is missing"


def change_pct(a, b):
    """100 * (a / b - 1), or None."""
    if a is None or b is None or not b:
        return None
    return 100.0 * (a / b - 1.0)


def heldout_ppl(results, run):
    r = results["lm"].get(run)
    return r["heldout_ppl"] if r else None


def noise_band(results):
    """The perplexity difference (%) below which a gap is noise: max(1%, the seed-to-seed spread)."""
    return max(MIN_BAND_PCT, results["noise"]["spread_pct"] or 0.0)


def _judged(claim, verdict, reason):
    claim["verdict"], claim["reason"] = verdict, reason
    return claim


def _both(first, second):
    """The verdict of a claim with two halves: both hold, neither holds, or one of them."""
    return {(True, True): "reproduces", (False, False): "does not reproduce"}.get((first, second),
                                                                                  "partly reproduces")


# --------------------------------------------------------------------------------------------------
# 1. RAT(16) about equal to attention


def judge_ppl(results):
    paper = results["paper"]["val_ppl"]
    spread = results["noise"]["spread_pct"]
    att, rat = heldout_ppl(results, "attention"), heldout_ppl(results, "rat16")
    d = change_pct(rat, att)
    tol = max(2.0, 2 * (spread or 0.0))
    paper_diff = change_pct(paper["rat16"], paper["attention"])
    c = {"title": "RAT(16) matches attention in validation perplexity",
         "paper": {"attention": paper["attention"], "rat16": paper["rat16"], "diff_pct": paper_diff},
         "ours": {"attention": att, "rat16": rat, "diff_pct": d, "tolerance_pct": tol},
         "rule": f"reproduces when RAT(16)'s held-out perplexity is at most max(2%, twice the seed spread) = "
                 f"{tol:.2f}% above attention's (or below it)"}
    if d is None:
        return _judged(c, "inconclusive", MISSING)
    if d <= tol:
        return _judged(c, "reproduces", f"RAT(16) is {abs(d):.2f}% {'above' if d > 0 else 'below'} attention "
                                        f"(paper: {paper_diff:+.2f}%)")
    return _judged(c, "does not reproduce", f"RAT(16) is {d:.2f}% above attention, more than the {tol:.2f}% allowed")


def ppl_cells(c):
    p, o = c["paper"], c["ours"]
    return (f"attention {p['attention']}, RAT(16) {p['rat16']}",
            f"attention {f(o['attention'])}, RAT(16) {f(o['rat16'])} ({pct(o['diff_pct'])})")


# --------------------------------------------------------------------------------------------------
# 2. hybrids: RAT(16)+SWA at least as good as attention+SWA (paper: better)


def judge_hybrid(results):
    paper = results["paper"]["val_ppl"]
    band = noise_band(results)
    att = heldout_ppl(results, "attention")
    aswa, rswa = heldout_ppl(results, "attention-swa"), heldout_ppl(results, "rat16-swa")
    d = change_pct(rswa, aswa)
    paper_diff = change_pct(paper["rat16-swa"], paper["attention-swa"])
    c = {"title": "RAT(16)+SWA beats attention+SWA (and attention)",
         "paper": {"attention": paper["attention"], "attention-swa": paper["attention-swa"],
                   "rat16-swa": paper["rat16-swa"], "diff_pct": paper_diff},
         "ours": {"attention": att, "attention-swa": aswa, "rat16-swa": rswa, "diff_pct": d,
                  "vs_attention_pct": change_pct(rswa, att), "band_pct": band},
         "rule": f"reproduces when RAT(16)+SWA's perplexity is below attention+SWA's by more than the noise band "
                 f"max(1%, seed spread) = {band:.2f}%; does not when above it by more than the band; "
                 "inconclusive in between"}
    if d is None:
        return _judged(c, "inconclusive", MISSING)
    if d < -band:
        return _judged(c, "reproduces", f"RAT(16)+SWA is {abs(d):.2f}% below attention+SWA")
    if d > band:
        return _judged(c, "does not reproduce", f"RAT(16)+SWA is {d:.2f}% above attention+SWA")
    return _judged(c, "inconclusive", f"the difference ({d:+.2f}%) is inside the noise band of {band:.2f}% "
                                      f"(the paper's own gap is {paper_diff:+.2f}%)")


def hybrid_cells(c):
    p, o = c["paper"], c["ours"]
    return (f"attention+SWA {p['attention-swa']}, RAT(16)+SWA {p['rat16-swa']}",
            f"attention+SWA {f(o['attention-swa'])}, RAT(16)+SWA {f(o['rat16-swa'])} ({pct(o['diff_pct'])})")


# --------------------------------------------------------------------------------------------------
# 3. perplexity rises with the chunk length L


def judge_chunk(results):
    band = noise_band(results)
    p16, p64, p256 = (heldout_ppl(results, n) for n in ("rat16", "rat64", "rat256"))
    c = {"title": "perplexity rises as the chunk length L grows from 16 to 256",
         "paper": {"trend": "rises"},
         "ours": {"rat16": p16, "rat64": p64, "rat256": p256, "rise_16_64_pct": change_pct(p64, p16),
                  "rise_64_256_pct": change_pct(p256, p64), "rise_16_256_pct": change_pct(p256, p16), "band_pct": band},
         "rule": f"reproduces when perplexity increases from L=16 to 64 to 256 and the total rise exceeds the noise "
                 f"band ({band:.2f}%); does not when L=256 is below L=16 by more than the band; else inconclusive"}
    if None in (p16, p64, p256):
        return _judged(c, "inconclusive", MISSING)
    total = change_pct(p256, p16)
    if p16 < p64 < p256 and total > band:
        return _judged(c, "reproduces", f"perplexity rises by {total:.2f}% from L=16 to L=256")
    if total < -band:
        return _judged(c, "does not reproduce", f"perplexity falls by {abs(total):.2f}% from L=16 to L=256")
    return _judged(c, "inconclusive", f"the change from L=16 to L=256 ({total:+.2f}%) is not a clear monotonic "
                                      f"rise beyond the {band:.2f}% band")


def chunk_cells(c):
    o = c["ours"]
    return "rises", f"L=16 {f(o['rat16'])}, L=64 {f(o['rat64'])}, L=256 {f(o['rat256'])}"


# --------------------------------------------------------------------------------------------------
# 4. length generalisation: RAT(16)+SWA with NoPE flat to 4x, attention with RoPE blows up


def judge_length(results):
    f_max = str(max(results["settings"]["length_factors"]))
    lm = results["lm"]
    flat = lm.get("rat16-swa-nope", {}).get("length_rise_pct", {}).get(f_max)
    boom = lm.get("attention", {}).get("length_rise_pct", {}).get(f_max)
    c = {"title": f"with NoPE, RAT(16)+SWA stays flat up to {f_max}x the training length "
                  "while attention with RoPE blows up",
         "paper": {"factor": results["paper"]["length_factor"]},
         "ours": {"factor": int(f_max), "rat16-swa-nope_rise_pct": flat, "attention_rise_pct": boom,
                  "flat_pct": FLAT_PCT, "explode_pct": EXPLODE_PCT},
         "rule": f"mean loss over {f_max}x the training length against the mean at 1x: within +{FLAT_PCT:g}% is "
                 f"flat, above +{EXPLODE_PCT:g}% is a blow-up; reproduces when both halves hold, partly when one does"}
    if flat is None or boom is None:
        return _judged(c, "inconclusive", MISSING)
    ok_flat, ok_boom = flat <= FLAT_PCT, boom > EXPLODE_PCT
    return _judged(c, _both(ok_flat, ok_boom),
                   f"RAT(16)+SWA NoPE: {flat:+.2f}% ({'flat' if ok_flat else 'not flat'}); "
                   f"attention RoPE: {boom:+.2f}% ({'blows up' if ok_boom else 'no blow-up'})")


def length_cells(c):
    o = c["ours"]
    return (f"flat vs blow-up at {c['paper']['factor']}x",
            f"RAT(16)+SWA NoPE {pct(o['rat16-swa-nope_rise_pct'])}, attention RoPE "
            f"{pct(o['attention_rise_pct'])} at {o['factor']}x")


# --------------------------------------------------------------------------------------------------
# 5. retrieval: RAT(16) about equal to attention, RNN and RAT(64) weaker. A gap counts only when it is
# larger than its rule's threshold and than twice the standard error of the difference of the two
# accuracies (binomial, from the number of answers scored)


def _retrieval_scores(results, task):
    """{model: accuracy} and {model: answers scored} on the fine-tuning task at its first (trained) length."""
    acc, answers = {}, {}
    if task in results["retrieval"] and task in results["retrieval"][task]["eval"]:
        for name, r in results["retrieval"][task]["eval"][task].items():
            acc[name], answers[name] = r["accuracy"][0], r["answers"][0]
    return acc, answers


def _margin(acc, answers, a, b, floor):
    """max(floor, 2 x the standard error of acc[a] - acc[b])."""
    var = sum(acc[n] * (1 - acc[n]) / answers[n] for n in (a, b) if answers.get(n))
    return max(floor, 2 * math.sqrt(var))


def judge_retrieval(results):
    s = results["settings"]
    task = s["retrieval_task"]
    acc, answers = _retrieval_scores(results, task)
    c = {"title": "RAT(16) about equals attention at retrieval; the RNN and RAT(64) are weaker",
         "paper": {"task": "niah"},
         "ours": {"task": task, "length": s["retrieval_eval"][task]["lengths"][0], "accuracy": acc,
                  "answers": answers, "close": RETRIEVAL_CLOSE, "weaker": RETRIEVAL_WEAKER,
                  "learned": RETRIEVAL_LEARNED},
         "rule": f"accuracy on the fine-tuning task at the trained length: inconclusive when no model reaches "
                 f"{RETRIEVAL_LEARNED:g}; reproduces when RAT(16) is within {RETRIEVAL_CLOSE:g} of attention (or "
                 f"above) and the RNN and RAT(64) are each more than {RETRIEVAL_WEAKER:g} below RAT(16); partly "
                 "when one of the two holds. Each threshold is raised to twice the standard error of the "
                 "difference when that is larger (binomial, from the answers scored), so that sampling noise "
                 "decides nothing"}
    if not all(acc.get(n) is not None for n in ("attention", "rat16", "rat64", "rnn")):
        return _judged(c, "inconclusive", MISSING)
    if max(acc.values()) < RETRIEVAL_LEARNED:
        return _judged(c, "inconclusive", f"no model learned the task (best accuracy {max(acc.values()):.2f})")
    m = {"attention": _margin(acc, answers, "rat16", "attention", RETRIEVAL_CLOSE),
         "rnn": _margin(acc, answers, "rat16", "rnn", RETRIEVAL_WEAKER),
         "rat64": _margin(acc, answers, "rat16", "rat64", RETRIEVAL_WEAKER)}
    c["ours"]["margins"] = m
    close = acc["rat16"] >= acc["attention"] - m["attention"]
    weaker = {n: acc[n] < acc["rat16"] - m[n] for n in ("rnn", "rat64")}
    return _judged(c, _both(close, all(weaker.values())),
                   f"accuracy: attention {acc['attention']:.2f}, RAT(16) {acc['rat16']:.2f}, "
                   f"RAT(64) {acc['rat64']:.2f}, RNN {acc['rnn']:.2f}; RAT(16) "
                   + ("within" if close else "not within") + f" {m['attention']:.2f} of attention; "
                   + "; ".join(f"{LABELS[n]} {'is' if weaker[n] else 'is not'} more than {m[n]:.2f} below"
                               for n in ("rnn", "rat64")))


def retrieval_cells(c):
    o = c["ours"]
    return ("RAT(16) ~ attention > RAT(64), RNN",
            ", ".join(f"{n} {f(a, 2)}" for n, a in o["accuracy"].items()) + f" ({o['task']}, {o['length']})")


# --------------------------------------------------------------------------------------------------
# 6. speed: RAT(16) faster than attention for long sequences


def _longest(rows):
    return max(rows, key=lambda r: r["length"]) if rows else None


def judge_speed(results):
    paper = results["paper"]
    layer = results["bench"]["layer"]
    train = _longest([r for r in layer if r["mixer"] == "rat16" and r["mode"] == "train"])
    decode = _longest([r for r in layer if r["mixer"] == "rat16" and r["mode"] == "decode"])
    g = {r["variant"]: r for r in results["bench"]["generate"]}.get("rat", {}).get("ratio_vs_attention")
    t = train["ratio_vs_attention"] if train else None
    c = {"title": "RAT(16) trains and generates faster than attention on long sequences",
         "paper": {"train_speedup": paper["train_speedup"], "train_length": paper["train_speedup_length"],
                   "generation_speedup": paper["generation_speedup"],
                   "generation_position": paper["generation_speedup_position"]},
         "ours": {"train_speedup": t, "train_length": train["length"] if train else None,
                  "decode_speedup": decode["ratio_vs_attention"] if decode else None,
                  "decode_position": decode["length"] if decode else None,
                  "generation_speedup": g,
                  "generation_context": results["bench"]["generate_meta"].get("prompt_len")},
         "rule": "reproduces in direction when RAT(16) is faster than attention both in training at the longest "
                 "length measured and in whole-model generation; partly when one holds. The sizes are not the "
                 "paper's (CPU, fp32, shorter sequences), so the factors are not comparable"}
    if t is None or g is None:
        return _judged(c, "inconclusive", "a benchmark is missing")
    return _judged(c, _both(t > 1, g > 1), f"training {t:.2f}x attention's speed at {train['length']} tokens; "
                                           f"generation {g:.2f}x attention's throughput")


def speed_cells(c):
    p, o = c["paper"], c["ours"]
    return (f"{p['train_speedup']}x training at {f(p['train_length'])}, {p['generation_speedup']}x generation",
            f"{f(o['train_speedup'], 2)}x training at {f(o['train_length'])}, "
            f"{f(o['generation_speedup'], 2)}x generation")


# --------------------------------------------------------------------------------------------------
# 7. SFT: a language model fine-tuned on a task (loss on the responses) beats its base on generated answers.
# A gap counts only when it is larger than SFT_MARGIN points and than twice the paired standard error of
# the difference (from the per-example scores)


def judge_sft(results):
    sft = results.get("sft")
    metric = (results["settings"].get("sft_metrics") or ["code_sim"])[0]
    c = {"title": "SFT: the fine-tuned model beats its base on the generated answers",
         "paper": {"tasks": "NarrativeQA, QMSum (LongBench metrics)"},
         "ours": {"metric": metric, "margin": SFT_MARGIN, "scores": {}},
         "rule": f"each fine-tuned model's {metric} score (0-100) on the test records against its base model's: "
                 f"it beats the base when higher by more than max({SFT_MARGIN:g} points, twice the paired standard "
                 "error of the difference); reproduces when every fine-tuned model does, partly when some do, does "
                 "not reproduce when none does"}
    if not sft:
        return _judged(c, "inconclusive", "not run: these results have no SFT stage")
    scores = {n: m[metric] for n, m in sft["scores"].items() if metric in m}
    if not scores:
        return _judged(c, "inconclusive", MISSING)
    beats = {}
    for name, r in scores.items():
        margin = max(SFT_MARGIN, 2 * (r["se"] or 0.0))
        beats[name] = r["gap"] > margin
        c["ours"]["scores"][name] = {"base": r["base"], "tuned": r["tuned"], "gap": r["gap"], "margin": margin}
    verdict = ("reproduces" if all(beats.values()) else "does not reproduce" if not any(beats.values())
               else "partly reproduces")
    return _judged(c, verdict, "; ".join(
        f"{LABELS.get(n, n)} {r['base']:g} -> {r['tuned']:g} ({r['gap']:+.2f}, "
        f"{'beyond' if beats[n] else 'not beyond'} {c['ours']['scores'][n]['margin']:.2f})"
        for n, r in scores.items()))


def sft_cells(c):
    o = c["ours"]
    here = ", ".join(f"{LABELS.get(n, n)} {f(r['base'], 2)} -> {f(r['tuned'], 2)}" for n, r in o["scores"].items())
    return (f"fine-tuned models scored on {c['paper']['tasks']}",
            f"{o['metric']}: {here}" if here else "not run")


# --------------------------------------------------------------------------------------------------
# all of them


@dataclasses.dataclass(frozen=True)
class Rule:
    """One claim of the paper: how it is judged, and how the summary table shows the judged claim."""
    id: str
    judge: Callable[[dict], dict]             # results -> the claim without its id
    cells: Callable[[dict], tuple[str, str]]  # the claim -> its summary cells (the paper's, ours)


RULES = (Rule("ppl", judge_ppl, ppl_cells), Rule("hybrid", judge_hybrid, hybrid_cells),
         Rule("chunk", judge_chunk, chunk_cells), Rule("length", judge_length, length_cells),
         Rule("retrieval", judge_retrieval, retrieval_cells), Rule("speed", judge_speed, speed_cells),
         Rule("sft", judge_sft, sft_cells))
RULE_BY_ID = {r.id: r for r in RULES}


def claims(results):
    """Every claim judged on the results, in order: dicts with id, title, paper, ours, rule, verdict, reason."""
    return [{"id": rule.id, **rule.judge(results)} for rule in RULES]


def summary_cells(claim):
    """The summary table's cells (the paper's, ours) of a judged claim; empty for a claim this version
    does not know (a results.json judged by another version)."""
    rule = RULE_BY_ID.get(claim["id"])
    return rule.cells(claim) if rule else ("", "")
