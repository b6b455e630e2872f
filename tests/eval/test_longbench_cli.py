"""`ratlm eval longbench` (predict + score, --score-only, --e), `longbench-mini` and `generate`, end to end."""
import json
import math
import os
import shutil

from ratlm.cli import main
from ratlm.eval.longbench import mini
from ratlm.eval.longbench.score import score_folder

MINI = "passage_retrieval_en,passage_count,multifieldqa_en"


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n")


def _pred(pred, answers, classes=None, length=100):
    return {"pred": pred, "answers": answers, "all_classes": classes, "length": length}


def _error(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ratlm: error:"), err
    for n in needles:
        assert n in err, err
    return err


def test_score_only_matches_hand_computed(tmp_path, capsys):
    d = tmp_path / "pred"
    d.mkdir()
    # hotpotqa: F1 1, 2/3 (p = 1, r = 1/2), 0  -> 100 * (5/3) / 3 = 55.56
    _write(d / "hotpotqa.jsonl", [_pred("Paris", ["paris"]), _pred("The cat sat.", ["a cat sat on the mat"]),
                                  _pred("", ["x"])])
    # trec: first line only, classes contained in others -> 1, 0.5 -> 75.0
    classes = ["city", "Location", "Location city"]
    _write(d / "trec.jsonl", [_pred("\nLocation\nEntity", ["Location"], classes),
                              _pred("Location city", ["Location city"], classes)])
    # passage_retrieval_en: 1, 0.5, 0 -> 50.0;  lcc: fuzz ratio 67 and 100 -> 83.5
    _write(d / "passage_retrieval_en.jsonl", [_pred("Paragraph 2", ["Paragraph 2"]),
                                              _pred("2 or 3", ["Paragraph 3"]), _pred("none", ["Paragraph 1"])])
    _write(d / "lcc.jsonl", [_pred("abc", ["abd"]), _pred("# note\nx = 1", ["x = 1"])])
    (d / "notes.txt").write_text("not a prediction file")
    assert main(["eval", "longbench", "--score-only", str(d)]) == 0
    out = capsys.readouterr().out
    want = {"hotpotqa": 55.56, "lcc": 83.5, "passage_retrieval_en": 50.0, "trec": 75.0}
    with open(d / "result.json", encoding="utf-8") as f:
        assert json.load(f) == want
    assert "[average]" in out and "[few-shot]" in out


def test_score_only_e_buckets(tmp_path, capsys):
    d = tmp_path / "pred_e"
    d.mkdir()
    _write(d / "passage_count.jsonl", [_pred("3", ["3"], length=100), _pred("2", ["3"], length=3999),
                                       _pred("3 3", ["3"], length=4000), _pred("1", ["1"], length=12000)])
    assert main(["eval", "longbench", "--score-only", str(d), "--e"]) == 0
    with open(d / "result.json", encoding="utf-8") as f:
        got = json.load(f)
    assert got == {"passage_count": {"0-4k": 50.0, "4-8k": 100.0, "8k+": 100.0}}
    _write(d / "passage_count.jsonl", [_pred("3", ["3"], length=100)])
    assert score_folder(str(d), e=True)["passage_count"]["8k+"] != score_folder(str(d), e=True)["passage_count"]["8k+"]
    assert math.isnan(score_folder(str(d), e=True)["passage_count"]["4-8k"])  # empty bucket: NaN, as LongBench


def test_score_only_paper_postprocessing(tmp_path, capsys):
    d = tmp_path / "pred"
    d.mkdir()
    _write(d / "hotpotqa.jsonl", [_pred("\nParis\nQuestion: and London?", ["Paris"])])
    _write(d / "qmsum.jsonl", [_pred("a b\nQuery: c d", ["a b"])])
    _write(d / "trec.jsonl", [_pred("Location\nEntity", ["Location"], ["Location", "Entity"])])
    _write(d / "samsum.jsonl", [_pred("a b\nc d", ["a b c d"])])
    assert main(["eval", "longbench", "--score-only", str(d)]) == 0
    with open(d / "result.json", encoding="utf-8") as f:
        longbench = json.load(f)
    assert main(["eval", "longbench", "--score-only", str(d), "--postprocess", "paper"]) == 0
    assert "result_paper.json" in capsys.readouterr().out
    with open(d / "result_paper.json", encoding="utf-8") as f:
        paper = json.load(f)
    assert paper["hotpotqa"] == 100.0 > longbench["hotpotqa"]  # cut before "\nQuestion"
    assert paper["qmsum"] > longbench["qmsum"]  # cut before "\nQuery"
    assert paper["trec"] == 50.0 and longbench["trec"] == 100.0  # no first-line rule: both classes found
    assert paper["samsum"] > longbench["samsum"]  # kept whole


def test_score_only_bad_input(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    _write(d / "hotpotqa.jsonl", [{"pred": "x", "answers": ["x"]}])
    _error(["eval", "longbench", "--score-only", str(d)], capsys, "missing field 'all_classes'")
    _write(d / "hotpotqa.jsonl", [])
    _error(["eval", "longbench", "--score-only", str(d)], capsys, "empty")
    os.remove(d / "hotpotqa.jsonl")
    _write(d / "nosuchtask.jsonl", [_pred("x", ["x"])])
    _error(["eval", "longbench", "--score-only", str(d)], capsys, "'nosuchtask' is not a LongBench task")
    _error(["eval", "longbench", "--score-only", str(tmp_path / "missing")], capsys, "no such folder")
    os.remove(d / "nosuchtask.jsonl")
    _write(d / "hotpotqa.jsonl", ["{not json"])
    _error(["eval", "longbench", "--score-only", str(d)], capsys, "not valid JSON")


def test_mini_tasks_format(tmp_path, capsys):
    assert main(["eval", "longbench-mini", str(tmp_path), "-n", "2", "--paragraphs", "4", "--seed", "3"]) == 0
    for task in mini.TASKS:
        with open(tmp_path / f"{task}.jsonl", encoding="utf-8") as f:
            recs = [json.loads(line) for line in f]
        assert len(recs) == 2
        for r in recs:
            assert set(r) == {"input", "context", "answers", "length", "dataset", "language", "all_classes", "_id"}
            assert r["dataset"] == task and isinstance(r["answers"], list) and r["all_classes"] is None
    recs = mini.make("passage_retrieval_en", 5, 4, seed=3)
    for r in recs:  # the abstract comes from the paragraph the answer names
        n = int(r["answers"][0].split()[1])
        assert r["input"][:-1] in r["context"].split("\n\n")[n - 1]
    recs = mini.make("passage_count", 5, 4, seed=3)
    for r in recs:
        paras = [p.split(": ", 1)[1] for p in r["context"].split("\n\n")]
        assert len(paras) == 4 and str(len(set(paras))) == r["answers"][0]
    assert mini.make("multifieldqa_en", 3, 4, seed=3) == mini.make("multifieldqa_en", 3, 4, seed=3)
    _error(["eval", "longbench-mini", str(tmp_path), "--paragraphs", "1"], capsys, "--paragraphs")
    assert main(["eval", "longbench-mini", str(tmp_path / "sft"), "-n", "3", "--sft-examples", "5",
                 "--sft-pairs", "3"]) == 0
    with open(tmp_path / "sft" / "sft_train.jsonl", encoding="utf-8") as f:
        train = [json.loads(line) for line in f]
    with open(tmp_path / "sft" / "sft_test.jsonl", encoding="utf-8") as f:
        test = [json.loads(line) for line in f]
    assert len(train) == 5 and len(test) == 3 and train[:3] != test
    for r in train:  # the response is the code listed for the name asked about
        name = r["prompt"].split("code of the ")[1].split("?")[0]
        assert f"{name}{r['response']}," in r["prompt"].replace(".", ",")


def test_task_data():
    from ratlm.eval.longbench import tasks as T

    assert len(T.tasks()) == 21 and len(T.paper_tasks()) == 14 and len(T.e_tasks()) == 13
    assert T.tasks()["gov_report"]["max_new_tokens"] == 512 and T.tasks()["hotpotqa"]["max_new_tokens"] == 32
    assert T.tasks()["lcc"]["prompt"] == "Please complete the code given below. \n{context}Next line of code:\n"
    assert all("{context}" in t["prompt"] for t in T.tasks().values())
    assert T.resolve(None) == T.paper_tasks() and "narrativeqa" not in T.resolve(["paper"], e=True)
    assert T.resolve(["all"]) == list(T.tasks())


def test_longbench_end_to_end(random_dirs, mini_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["eval", "longbench", *random_dirs, "--data", mini_dir, "--tasks", MINI, "--max-length", "96",
            "--limit", "2", "--batch-size", "2", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[synthetic]" in text and "[single-doc QA]" in text and "[average]" in text
    with open(out / "longbench.json", encoding="utf-8") as f:
        res = json.load(f)["results"]
    assert [r["name"] for r in res] == [os.path.basename(p) for p in random_dirs]
    assert os.path.getsize(out / "longbench.png") > 0
    for r in res:
        folder = out / "pred" / r["name"]
        for task in MINI.split(","):
            with open(folder / f"{task}.jsonl", encoding="utf-8") as f:
                lines = [json.loads(line) for line in f]
            assert len(lines) == 2 and set(lines[0]) == {"pred", "answers", "all_classes", "length"}
            assert r["truncated"][task] == 2  # the mini prompts are longer than 96 tokens
        with open(folder / "result.json", encoding="utf-8") as f:
            assert json.load(f) == r["scores"] == score_folder(str(folder), write=False)


def test_longbench_e_and_default_length(trained_dir, mini_dir, tmp_path, capsys):
    data = tmp_path / "data_e"
    data.mkdir()
    shutil.copy(os.path.join(mini_dir, "passage_count.jsonl"), data / "passage_count_e.jsonl")
    # no --max-length: the prompt budget is train_length (64) less passage_count's answer budget (32)
    assert main(["eval", "longbench", trained_dir, "--data", str(data), "--tasks", "passage_count", "--e",
                 "--out", str(tmp_path / "out")]) == 0
    with open(tmp_path / "out" / "pred_e" / os.path.basename(trained_dir) / "result.json", encoding="utf-8") as f:
        got = json.load(f)
    assert set(got["passage_count"]) == {"0-4k", "4-8k", "8k+"}
    assert os.path.exists(tmp_path / "out" / "longbench_e.png")


def test_longbench_bad_input(random_dirs, mini_dir, tmp_path, capsys):
    model = random_dirs[0]
    # train_length 32 is not longer than multifieldqa_en's 64-token answer budget
    _error(["eval", "longbench", model, "--data", mini_dir, "--tasks", "multifieldqa_en"], capsys,
           "training length (32 tokens)", "--max-length")
    _error(["eval", "longbench", model, "--data", mini_dir, "--tasks", "nosuch"], capsys, "unknown LongBench task")
    _error(["eval", "longbench", model, "--data", mini_dir], capsys, "has no narrativeqa.jsonl")
    _error(["eval", "longbench", model, "--data", mini_dir, "--tasks", "passage_count", "--e"], capsys,
           "passage_count_e.jsonl")
    _error(["eval", "longbench", model, "--tasks", "passage_count"], capsys, "--data is required")
    _error(["eval", "longbench", "--data", mini_dir], capsys, "MODEL")
    _error(["eval", "longbench", model, "--score-only", mini_dir], capsys, "--score-only")
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(bad / "passage_count.jsonl", [{"input": "", "context": "x", "answers": ["1"], "length": 1}])
    _error(["eval", "longbench", model, "--data", str(bad), "--tasks", "passage_count"], capsys,
           "missing field 'all_classes'")
    _write(bad / "passage_count.jsonl", [])
    _error(["eval", "longbench", model, "--data", str(bad), "--tasks", "passage_count"], capsys, "is empty")
    _error(["eval", "longbench", model, "--data", mini_dir, "--tasks", "passage_count", "--limit", "0"], capsys,
           "--limit")
    _error(["eval", "longbench", model, "--data", mini_dir, "--tasks", "passage_count", "--max-length", "1"],
           capsys, "--max-length")


def test_hub_data(random_dirs, tmp_path, capsys, monkeypatch):
    """hf:NAME goes through datasets.load_dataset (a stand-in here: no network); a failure is one line."""
    import sys
    import types

    rows = mini.make("passage_count", 2, 3)
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        if config.endswith("_e"):
            raise ConnectionError("Couldn't reach the Hugging Face Hub\nmore lines")
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert main(["eval", "longbench", random_dirs[1], "--data", "hf:THUDM/LongBench", "--tasks", "passage_count",
                 "--max-length", "48", "--out", str(tmp_path)]) == 0
    assert calls == [("THUDM/LongBench", "passage_count", "test")]
    capsys.readouterr()
    _error(["eval", "longbench", random_dirs[1], "--data", "hf:THUDM/LongBench", "--tasks", "passage_count", "--e"],
           capsys, "cannot load THUDM/LongBench (passage_count_e)", "Couldn't reach", "--data DIR")


def _copy_records(n=6):
    """Prompt/response records a copying model can answer: the response follows its key earlier on."""
    recs = []
    for i in range(n):
        key, val = f"k{i}q", f"v{i}x{i}z"
        prompt = f"ab: 12. {key}: {val}. cd: 34. {key}:"
        recs.append({"prompt": prompt, "response": f" {val}"})
    return recs


def test_generate_command(copy_dir, random_dirs, tmp_path, capsys):
    data = tmp_path / "test.jsonl"
    _write(data, _copy_records())
    out = tmp_path / "out"
    assert main(["eval", "generate", copy_dir, random_dirs[1], "--data", str(data), "--metric", "qa_f1",
                 "--max-new-tokens", "6", "--max-length", "200", "--batch-size", "4", "--limit", "5",
                 "--out", str(out)]) == 0
    assert "qa_f1" in capsys.readouterr().out
    with open(out / "generate.json", encoding="utf-8") as f:
        res = json.load(f)["results"]
    copy, rand = res
    assert copy["n"] == 5 and len(copy["predictions"]) == 5 and copy["max_length"] == 200
    assert copy["score"] == 100.0 > rand["score"]  # the copy model continues " vIxIz" exactly


def test_evaluate_generation_metrics(copy_dir):
    from ratlm.eval.generation import evaluate_generation
    from ratlm.runtime import load

    model, tok, _ = load(copy_dir, "cpu")
    recs = _copy_records(2)
    for metric in ("rouge", "exact", "code_sim", "qa_f1"):
        r = evaluate_generation(model, tok, recs, metric, max_new_tokens=6, max_length=200, batch_size=4)
        assert r["score"] == 100.0 and r["truncated"] == 0, (metric, r["predictions"])
    r = evaluate_generation(model, tok, recs, "exact", max_new_tokens=6, max_length=8, batch_size=4)
    assert r["truncated"] == 2 and r["max_length"] == 8
    # default answer budget: the longest response (6 byte tokens) + 16
    assert evaluate_generation(model, tok, recs[:1], "exact", max_length=200)["max_new_tokens"] == 6 + 16


def test_generate_bad_input(random_dirs, tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    _write(data, [{"prompt": "x"}])
    _error(["eval", "generate", random_dirs[0], "--data", str(data), "--metric", "exact"], capsys, "\"response\"")
    _write(data, [])
    _error(["eval", "generate", random_dirs[0], "--data", str(data), "--metric", "exact"], capsys, "no records")
    _error(["eval", "generate", random_dirs[0], "--data", str(tmp_path / "none.jsonl"), "--metric", "exact"], capsys,
           "no such file")
    _write(data, [{"prompt": "abc", "response": "d" * 40}])
    # default answer budget 40 + 16 tokens: more than the model's train_length of 32
    _error(["eval", "generate", random_dirs[0], "--data", str(data), "--metric", "exact"], capsys,
           "training length (32 tokens)")
