"""LongBench's metrics: hand-checked cases, and equality with the libraries its scorer uses."""
import difflib
import random
import subprocess
import sys

import pytest

from ratlm.eval.longbench import metrics as M
from ratlm.eval.longbench.score import example_score


def test_normalisation():
    assert M.normalize_answer("The Cat, sat!  On a   mat.") == "cat sat on mat"
    assert M.normalize_answer("Anthem theatre") == "anthem theatre"  # articles only as whole words
    assert M.normalize_zh_answer("北京，是 首都。") == "北京是首都"


def test_qa_f1_hand_checked():
    assert M.qa_f1("The cat sat.", "a cat sat on the mat") == pytest.approx(2 / 3)  # p = 1, r = 1/2
    assert M.qa_f1("cat cat", "cat") == pytest.approx(2 / 3)  # counts: 1 in common, p = 1/2, r = 1
    assert M.qa_f1("", "cat") == 0.0
    assert M.qa_f1("cat", "") == 0.0
    assert M.qa_f1("the", "a") == 0.0  # nothing left after the articles go
    assert M.best_score("qa_f1", "Paris", ["London", "paris.", "Paris, France"]) == 1.0
    assert M.best_score("qa_f1", "Paris", []) == 0.0


def test_chinese():
    pytest.importorskip("jieba")
    assert M.qa_f1_zh("北京是中国的首都。", "中国的首都是北京") == 1.0  # same words, punctuation dropped
    assert M.qa_f1_zh("", "北京") == 0.0
    assert 0 < M.rouge_l_zh("北京是中国的首都", "中国的首都是北京") < 1


def test_rouge_hand_checked():
    # reference words {a, c, e}, prediction words {a, b, c, d}, LCS "a c": r = 2/3, p = 2/4
    r, p = 2 / 3, 2 / 4
    assert M.rouge_l("a b c d", "a c e") == pytest.approx(2 * p * r / (p + r + 1e-8), abs=0)
    assert M.rouge_l("", "a b") == 0.0
    assert M.rouge_l("...", "a b") == 0.0  # no sentence at all: the rouge package raises, LongBench gives 0
    assert M.rouge_l("a b", "") == 0.0
    # distinct words are counted (the package's exclusive mode): "a a a" has one word
    assert M.rouge_l("a a a", "a") == pytest.approx(2 / (2 + 1e-8), abs=0)


def test_classification_hand_checked():
    classes = ["Location", "Location city", "city"]
    # all three found; "Location" and "city" are parts of the true class and go: 1 / 1
    assert M.classification("Location city", "Location city", all_classes=classes) == 1.0
    # LongBench removes while walking its list, so the entry after a removed one stays: here "city" goes,
    # "Location" is skipped over and stays, and the score is 1 / 2
    assert M.classification("Location city", "Location city", all_classes=["city", "Location", "Location city"]) == 0.5
    assert M.classification("Entity", "Location", all_classes=classes + ["Entity"]) == 0.0
    assert M.classification("Location and Entity", "Location", all_classes=classes + ["Entity"]) == 0.5
    assert M.classification("anything", "Location", all_classes=None) == 0.0


def test_retrieval_count_code():
    assert M.retrieval("Paragraph 3", "Paragraph 3") == 1.0
    assert M.retrieval("Paragraph 3, or maybe 5", "Paragraph 3") == 0.5
    assert M.retrieval("no idea", "Paragraph 3") == 0.0
    assert M.retrieval_zh("段落12", "段落12") == 1.0
    assert M.count("3 unique out of 13", "3") == 0.5
    with pytest.raises(ValueError, match="Paragraph N"):
        M.retrieval("1", "3")
    assert M.first_code_line("\n# comment\n```\n    x = f(1)  \ny") == "    x = f(1)  "
    assert M.code_sim("# only a comment", "x = 1") == 0.0
    assert M.code_sim("", "") == 1.0  # fuzz.ratio: equal strings are 100 before the empty check
    assert M.fuzz_ratio("abc", "abd") == 67  # difflib: 2 * 2 / 6


def test_first_line_rule():
    classes = ["Location", "Entity"]
    assert example_score("trec", "\n\nLocation\nEntity", ["Location"], classes) == 1.0
    assert example_score("triviaqa", "Paris\nQuestion: what?", ["Paris"]) == 1.0
    assert example_score("qasper", "Paris\nQuestion: what?", ["Paris"]) < 1.0  # not a few-shot task


def _texts(seed, n):
    rng = random.Random(seed)
    words = ["the", "a", "cat", "Cat", "sat", "on", "mat.", "an", "dog,", "ran!", "x", "1", ".", "  ", "\n", "#", "2"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, 25))) for _ in range(n)]


def test_rouge_equals_the_rouge_package():
    rouge = pytest.importorskip("rouge")
    scorer = rouge.Rouge()
    texts = _texts(0, 400)
    for p, g in zip(texts[::2], texts[1::2]):
        try:
            want = scorer.get_scores([p], [g], avg=True)["rouge-l"]["f"]
        except Exception:
            want = 0.0
        assert M.rouge_l(p, g) == want, (p, g)


def test_rouge_recursion_limit_as_longbench():
    """At LongBench's call depth (module -> scorer -> metric -> rouge), the rouge package overflows the
    default recursion limit on long sentences and LongBench scores 0; the same lengths here."""
    pytest.importorskip("rouge")
    script = (
        "import json, sys\n"
        "from rouge import Rouge\n"
        "def metric(p, g):\n"
        "    try:\n"
        "        return Rouge().get_scores([p], [g], avg=True)['rouge-l']['f']\n"
        "    except Exception:\n"
        "        return 0.0\n"
        "def scorer(p, g):\n"
        "    return metric(p, g)\n"
        "out = []\n"
        "for n in range(986, 996):\n"
        "    p = ' '.join('w%d' % i for i in range(n))\n"
        "    out.append([scorer(p, 'zz yy'), scorer(p, 'w3 zz')])\n"
        "print(json.dumps(out))\n")
    import json

    got = json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    mine = [[M.rouge_l(" ".join(f"w{i}" for i in range(n)), g) for g in ("zz yy", "w3 zz")] for n in range(986, 996)]
    assert mine == got
    assert got[-1] == [0.0, 0.0] and got[0][1] > 0  # the range does cross the limit


def test_code_similarity_equals_fuzzywuzzy_without_levenshtein():
    fuzz = pytest.importorskip("fuzzywuzzy.fuzz")
    if fuzz.SequenceMatcher is not difflib.SequenceMatcher:
        pytest.skip("python-Levenshtein is installed: fuzzywuzzy then gives other numbers than LongBench's setup")
    rng = random.Random(1)
    pairs = [("", ""), ("", "a"), ("a", ""), ("abc", "abc")]
    for _ in range(300):  # up to 400 characters: difflib's autojunk heuristic starts at 200
        pairs.append(tuple("".join(rng.choice("ab c()=._") for _ in range(rng.randint(0, 400))) for _ in range(2)))
    for a, b in pairs:
        assert M.fuzz_ratio(a, b) == fuzz.ratio(a, b), (a, b)


def test_chinese_tokens_are_jiebas():
    jieba = pytest.importorskip("jieba")
    text = "阅读以下文字并用中文简短回答"
    assert M._jieba_words(text) == list(jieba.cut(text, cut_all=False))
