"""`ratlm reproduce --quick` end to end: the write-up has every section, is rendered from results.json
alone, and every number in it comes from a JSON file the run wrote; the recorded commands rerun by hand
give the same numbers; a rerun continues instead of starting over."""
import glob
import json
import math
import re
import shlex

import pytest

from ratlm import cli, reproduce


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "q"
    assert cli.main(["reproduce", "--quick", "--out", str(out), "--threads", "1"]) == 0
    return out


def _md(quick):
    return (quick / "RESULTS.md").read_text()


def _results(quick):
    return json.loads((quick / "results" / "results.json").read_text())


def test_every_section_and_file(quick):
    md = _md(quick)
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings == reproduce.SECTIONS
    res = _results(quick)
    assert [c["id"] for c in res["claims"]] == ["ppl", "hybrid", "chunk", "length", "retrieval", "speed", "sft"]
    for c in res["claims"]:
        assert c["verdict"] in reproduce.VERDICTS
        assert f"**{c['verdict']}**" in md
    for link in re.findall(r"\]\(([^)#]+)\)", md):  # every plot and file the write-up links to exists
        assert (quick / link).is_file(), link
    assert len(re.findall(r"!\[", md)) >= 7  # loss curves, length, 3 heatmaps, 2 benchmarks
    # every run is listed: one row per executed command, and all of them in the commands block
    s = reproduce.settings(quick=True)
    assert len(res["steps"]) == len(reproduce.lm_runs(s)) + 2 + 4 + 3 + 1 + len(s.sft_variants) + 2 + 2
    block = md.split("```bash\n", 1)[1].split("```", 1)[0]
    for st in res["steps"]:
        assert st["status"] == "ran"
        assert st["command"] in block
    assert "Quick mode" in md


def test_rendered_from_results_json_alone(quick):
    assert reproduce.render(_results(quick)) == _md(quick)


NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def _json_numbers(quick):
    """Every number in the run's JSON files (values, and numbers inside strings), as the strings a
    write-up could show: each value rounded to 0..6 decimals."""
    shown = set()

    def add_value(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return
        v = abs(v)
        shown.add(str(v))
        for d in range(7):
            shown.add(f"{v:.{d}f}")

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            for tok in NUMBER.findall(x):
                shown.add(tok.replace(",", ""))
        else:
            add_value(x)

    files = glob.glob(str(quick / "results" / "**" / "*.json"), recursive=True)
    files += glob.glob(str(quick / "results" / "**" / "*.jsonl"), recursive=True)
    assert len(files) > 10
    for path in files:
        with open(path) as fh:
            if path.endswith(".jsonl"):
                for line in fh:
                    if line.strip():
                        walk(json.loads(line))
            else:
                walk(json.load(fh))
    return shown


def test_every_number_comes_from_the_json_files(quick):
    md = _md(quick)
    prose = re.sub(r"```.*?```", "", md, flags=re.S)       # the commands block: checked above
    prose = re.sub(r"`[^`]*`", "", prose)                    # inline code: commands, paths
    prose = re.sub(r"\]\([^)]*\)", "]", prose)               # link targets
    shown = _json_numbers(quick)
    tokens = NUMBER.findall(prose)
    assert len(tokens) > 200
    missing = sorted({t for t in tokens if t.replace(",", "") not in shown})
    assert not missing, f"numbers in RESULTS.md that no JSON file of the run holds: {missing[:20]}"


def test_results_match_the_commands_outputs(quick):
    res = _results(quick)
    r = quick / "results"
    ppl = json.loads((r / "ppl" / "ppl.json").read_text())["results"]
    runs = [run for run, _, _ in reproduce.lm_runs(reproduce.settings(quick=True))]
    assert [res["lm"][run]["heldout_ppl"] for run in runs] == [x["ppl"] for x in ppl]
    for run in runs:
        recs = [json.loads(line) for line in (r / "train" / f"lm-{run}.metrics.jsonl").read_text().splitlines()]
        assert res["lm"][run]["val_loss"] == [x for x in recs if "val_loss" in x][-1]["val_loss"]
    length = json.loads((r / "length" / "length.json").read_text())["results"]
    assert [res["lm"][run]["length_loss"]["4"] for run in runs] == [x["mean_loss"][-1] for x in length]
    mqar = json.loads((r / "retrieval" / "retrieval_mqar.json").read_text())["results"]
    for name, raw in zip(res["settings"]["retrieval_variants"], mqar):
        assert res["retrieval"]["mqar"]["eval"]["mqar"][name]["exact"] == raw["exact"]
    s = reproduce.settings(quick=True)
    for metric in s.sft_metrics:  # base, fine-tuned of each SFT variant, in order
        raw = json.loads((r / "sft" / metric / "generate.json").read_text())["results"]
        got = [x for n in s.sft_variants for x in (res["sft"]["scores"][n][metric]["base"],
                                                   res["sft"]["scores"][n][metric]["tuned"])]
        assert got == [x["score"] for x in raw]
        assert [x["name"] for x in raw] == [x for n in s.sft_variants for x in (n, f"sft-{n}")]
    layer = json.loads((r / "bench" / "bench_layer.json").read_text())["results"]
    assert [x["median_ms"] for x in res["bench"]["layer"]] == [x["median_s"] * 1e3 for x in layer]
    # parameter counts equal within 1%, and the saved models have the counts the plan computed
    for run in runs:
        assert abs(res["lm"][run]["params_vs_attention_pct"]) < 1.0
        assert res["lm"][run]["params"] == res["params"]["variants"][res["lm"][run]["variant"]]["params"]


def test_recorded_command_reruns_to_the_same_numbers(quick, tmp_path):
    res = _results(quick)
    cmd = next(st["command"] for st in res["steps"] if st["id"] == "lm-eval-ppl")
    argv = shlex.split(cmd)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path)
    assert cli.main(argv) == 0
    again = json.loads((tmp_path / "ppl.json").read_text())["results"]
    before = json.loads((quick / "results" / "ppl" / "ppl.json").read_text())["results"]
    assert [x["ppl"] for x in again] == pytest.approx([x["ppl"] for x in before], rel=1e-6)


def test_rerun_continues_and_other_settings_are_refused(quick, capsys):
    assert cli.main(["reproduce", "--quick", "--out", str(quick), "--threads", "1", "--no-calibration"]) == 0
    res = _results(quick)
    assert {st["status"] for st in res["steps"]} == {"done earlier"}
    assert "done earlier" in _md(quick)
    capsys.readouterr()
    assert cli.main(["reproduce", "--quick", "--out", str(quick), "--lm-steps", "3"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    assert cli.main(["reproduce", "--quick", "--dry-run", "--no-calibration", "--out", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    s = reproduce.settings(quick=True)
    assert out.count("ratlm train") == len(reproduce.lm_runs(s)) + 4 + len(s.sft_variants)
    assert out.count("ratlm eval generate") == len(s.sft_metrics)
    assert "ratlm bench generate" in out
    assert not (tmp_path / "d").exists()


def test_full_plan_equal_parameters_and_budget():
    s = reproduce.settings()
    widths, target = reproduce.equalise(s.lm_variants, s)
    for name, (_, params) in widths.items():
        assert abs(params / target - 1) < 0.01, name
    timing = reproduce.timing_model(s, {})
    steps = reproduce.plan(s, "w", "o", widths, timing)
    train = [shlex.split(st.command) for st in steps if st.argv[0] == "train" and "--recipe" in st.argv]
    for argv in train:  # the same budget for every language model
        for flag, value in (("--max-steps", str(s.lm_steps)), ("--batch-size", str(s.batch_size)),
                            ("--seq-len", str(s.seq_len)), ("--lr", "0.003")):
            assert argv[argv.index(flag) + 1] == value
    assert 40 * 60 < sum(st.estimate_s for st in steps) < 75 * 60  # about an hour on the reference machine


def test_rejudge_rewrites_the_verdicts_from_the_same_numbers(quick, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(quick / "results", copy / "results")
    before = json.loads((copy / "results" / "results.json").read_text())
    before["claims"][0]["verdict"] = "does not reproduce"  # as if an earlier rule had judged otherwise
    (copy / "results" / "results.json").write_text(json.dumps(before))
    assert cli.main(["reproduce", "--rejudge", "--out", str(copy)]) == 0
    res = json.loads((copy / "results" / "results.json").read_text())
    assert res["claims"] == _results(quick)["claims"]
    assert res["rejudged"][-1]["changed"] == {"ppl": ["does not reproduce", res["claims"][0]["verdict"]]}
    assert res["lm"] == before["lm"] and res["bench"] == before["bench"]
    md = (copy / "RESULTS.md").read_text()
    assert md == reproduce.render(res) and "Re-judged on" in md
    capsys.readouterr()
    assert cli.main(["reproduce", "--rejudge", "--out", str(tmp_path / "nothing")]) == 2
    assert "run `ratlm reproduce` first" in capsys.readouterr().err
