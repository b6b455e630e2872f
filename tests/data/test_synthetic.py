"""The synthetic retrieval generators: deterministic, and the answers are where they claim to be."""
import re

import pytest

from ratlm.data import synthetic
from ratlm.data.synthetic import examples, parse_task, records

CASES = [
    ("passkey", dict(length=300, depth=0.5)),
    ("passkey", dict(length=500, depth=0.0, digits=8, haystack="words")),
    ("niah", dict(length=700, depth=0.25)),
    ("niah", dict(length=900, depth=1.0, keys=4, value="word")),
    ("niah", dict(length=1500, depth=0.5, keys=3, values=2, queries=2, value="uuid", haystack="words")),
    ("niah", dict(length=800, depth=0.75, haystack="needles")),
    ("mqar", dict(length=200)),
    ("mqar", dict(pairs=12, queries=5, key_len=2, value_len=3)),
]


@pytest.mark.parametrize("task,opts", CASES)
def test_deterministic(task, opts):
    a = list(records(task, 4, 7, **opts))
    assert a == list(records(task, 4, 7, **opts))
    assert list(records(task, 2, 7, **opts)) == a[:2]  # example i does not depend on n
    assert [r["prompt"] for r in records(task, 4, 8, **opts)] != [r["prompt"] for r in a]
    assert [{"prompt": r["prompt"], "response": r["response"]} for r in a] == list(examples(task, 4, 7, **opts))
    for r in a:
        assert r["prompt"].isascii() and r["response"]
        if opts.get("length"):
            assert r["meta"]["length"] == len(r["prompt"]) + len(r["response"]) <= opts["length"]
            assert r["meta"]["length"] > opts["length"] - 60  # whole sentences: at most one short


def test_passkey_answer_and_depth():
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        for r in records("passkey", 5, 1, length=1000, depth=depth):
            key = r["response"]
            assert re.fullmatch(r"\d{5}", key)
            needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
            at = r["prompt"].index(needle)
            assert r["meta"]["needle_at"] == [at] and r["prompt"].count(key) == 2
            assert r["prompt"].endswith("What is the pass key? The pass key is ")
            haystack = len(r["prompt"]) - len(needle) - len("What is the pass key? The pass key is ")
            assert abs(at / haystack - depth) < 0.05 and abs(r["meta"]["depth"] - at / haystack) < 1e-9


def _without_needles(text):
    return re.sub(r"(The special magic \w+ )?for [\w-]+ is: [\w-]+\. ?", "", text)


def _needles(prompt):
    return re.findall(r"The special magic (\w+) for ([\w-]+) is: ([\w-]+)\.", prompt)


@pytest.mark.parametrize("opts", [dict(), dict(keys=4, value="word"), dict(keys=3, values=3, value="uuid"),
                                  dict(keys=5, queries=3, haystack="words"), dict(haystack="needles")])
def test_niah_answers(opts):
    for r in records("niah", 5, 2, length=1500, depth=0.5, **opts):
        found = _needles(r["prompt"][: r["prompt"].rindex("What ")])
        q = r["prompt"][r["prompt"].rindex("What "):]
        asked = re.findall(r"[a-z]+-[a-z]+", q.split("?")[0])
        # every answer is a value of an asked key, in the order: asked keys, then text order
        want = [v for k in asked for (_, kk, v) in found if kk == k]
        got = [r["response"][a:b] for a, b, _ in r["meta"]["answers"]]
        assert got == want and ", ".join(got) == r["response"]
        assert len(asked) == opts.get("queries", 1) and len(got) == len(asked) * opts.get("values", 1)
        kind = opts.get("value", "number")
        pattern = {"number": r"\d{7}", "word": r"[a-z]+",
                   "uuid": r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"}[kind]
        assert all(re.fullmatch(pattern, v) for v in got)
        assert len({v for _, _, v in found}) == len(found)  # values distinct
        if opts.get("haystack") == "needles":
            assert len(found) > 5  # the haystack is distractor needles
        else:
            assert len(found) == opts.get("keys", 1) - opts.get("queries", 1) + len(got)
        # an asked needle sits at the asked depth
        assert abs(r["meta"]["depth"] - 0.5) < 0.05
        if opts.get("haystack") == "needles":
            continue
        hay = r["prompt"][: r["prompt"].rindex("What ")]
        filler = len(_without_needles(hay))
        at = [len(_without_needles(hay[: hay.index(f"for {asked[0]} is: {v}.")])) / filler
              for v in got[: opts.get("values", 1)]]
        assert min(abs(a - 0.5) for a in at) < 0.05


def test_mqar_answers():
    for r in records("mqar", 5, 3, pairs=10, queries=4):
        pairs_line, tail = r["prompt"].split("\n")
        table = dict(p.split(":") for p in pairs_line.split())
        assert len(table) == 10 == r["meta"]["pairs"]
        text = tail + r["response"]
        queries = re.findall(r"([a-z]{3}):(\d{2})", text)
        assert len(queries) == 4 and len({k for k, _ in queries}) == 4
        assert all(table[k] == v for k, v in queries)
        got = [r["response"][a:b] for a, b, _ in r["meta"]["answers"]]
        assert got == [v for _, v in queries]
        keys = list(table)
        assert [d for _, _, d in r["meta"]["answers"]] == [keys.index(k) / 9 for k, _ in queries]


def test_haystack_file(tmp_path):
    path = tmp_path / "essay.txt"
    path.write_text("Cats sleep a lot.\nDogs bark at night! Birds sing in the morning?  Fish swim.")
    r = next(records("niah", 1, 0, length=600, depth=0.5, haystack=f"file:{path}"))
    assert "Dogs bark at night! Birds sing in the morning? Fish swim. Cats sleep a lot." in r["prompt"]


def test_parse_and_errors():
    assert parse_task("niah:keys=4,value=word,depth=0.5") == ("niah", {"keys": 4, "value": "word", "depth": 0.5})
    assert parse_task("mqar") == ("mqar", {})
    assert synthetic.options("passkey")["digits"] == 5
    with pytest.raises(ValueError, match="unknown synthetic task"):
        parse_task("copy")
    with pytest.raises(ValueError, match="unknown option"):
        list(records("passkey", 1, 0, keys=3))
    with pytest.raises(ValueError, match="too short"):
        list(records("niah", 1, 0, length=100))
    with pytest.raises(ValueError, match="queries"):
        list(records("niah", 1, 0, keys=2, queries=3))
    with pytest.raises(ValueError, match="not both"):
        list(records("mqar", 1, 0, length=100, pairs=4))
    with pytest.raises(ValueError, match="haystack"):
        list(records("passkey", 1, 0, haystack="essays"))
