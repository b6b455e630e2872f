"""LongBench's answer metrics, written to give the numbers its scorer gives.

LongBench v1 scores with `metrics.py` of THUDM/LongBench on top of three libraries (its requirements.txt):
`rouge` 1.0.1 for ROUGE-L, `fuzzywuzzy` for code similarity and `jieba` for Chinese words. Here:

- qa_f1: SQuAD-style token F1 after lower-casing and removing ASCII punctuation, the articles a/an/the and
  extra whitespace; Chinese: jieba words, Chinese + ASCII punctuation removed from each, empty words dropped.
- rouge: ROUGE-L F exactly as `rouge.Rouge().get_scores(...)["rouge-l"]["f"]` computes it. That package
  splits both texts into sentences at ".", counts *distinct* words (its default `exclusive=True`), and
  takes the union, as a set of words, of one particular longest common subsequence per (reference
  sentence, prediction sentence) pair, found by its backtracking rule. Its backtracking is recursive, so
  a pair whose path is longer than the recursion limit leaves room for raises RecursionError, which
  LongBench turns into a score of 0; under CPython's default limit (1000) at LongBench's call depth that
  is a path of more than 990 steps (989 for the Chinese tasks, one call deeper). Both are reproduced.
  An empty prediction or reference (no sentence) scores 0, as there.
- code_sim: `fuzz.ratio` of fuzzywuzzy *without* python-Levenshtein: 100 if the strings are equal
  (even both empty), 0 if one is empty, else round(100 * difflib.SequenceMatcher(None, a, b).ratio())
  (Python's round), divided by 100; the prediction is its first line holding no "`", "#" or "//".
- classification: the classes found in the prediction, less those that are part of the true class
  (removed while walking the list, which skips the entry after each removal, as LongBench's loop does);
  1 / (number left) if the true class is among them.
- retrieval (en/zh), count: the share of the numbers in the prediction equal to the true one.

Each function takes (prediction, ground_truth, all_classes=None) and returns a float in [0, 1].
"""
from __future__ import annotations

import difflib
import re
import string
from collections import Counter

ZH_PUNCTUATION = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀"
                  "｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟"
                  "〰〾〿–—‘’‛“”„‟…‧﹏.")
_EN_PUNCT = frozenset(string.punctuation)
_ZH_PUNCT = frozenset(string.punctuation + ZH_PUNCTUATION)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"\d+")

# deepest ROUGE-L backtracking path the rouge package survives at LongBench's call depth (see above)
ROUGE_MAX_PATH = 990
ROUGE_ZH_MAX_PATH = 989


def normalize_answer(s: str) -> str:
    """Lower case, ASCII punctuation removed, then the articles a/an/the, whitespace collapsed."""
    s = "".join(ch for ch in s.lower() if ch not in _EN_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_zh_answer(s: str) -> str:
    """Lower case, Chinese and ASCII punctuation removed, all whitespace removed."""
    return "".join("".join(ch for ch in s.lower() if ch not in _ZH_PUNCT).split())


def token_f1(prediction: list, ground_truth: list) -> float:
    same = sum((Counter(prediction) & Counter(ground_truth)).values())
    if same == 0:
        return 0.0
    precision = same / len(prediction)
    recall = same / len(ground_truth)
    return (2 * precision * recall) / (precision + recall)


def qa_f1(prediction: str, ground_truth: str, **_) -> float:
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _jieba_words(text: str) -> list:
    try:
        import jieba
    except ImportError:
        raise ImportError("the Chinese LongBench metrics need jieba: pip install 'ratlm[longbench]'") from None
    import logging

    jieba.setLogLevel(logging.WARNING)
    return list(jieba.cut(text, cut_all=False))


def qa_f1_zh(prediction: str, ground_truth: str, **_) -> float:
    pred = [w for w in (normalize_zh_answer(t) for t in _jieba_words(prediction)) if w]
    truth = [w for w in (normalize_zh_answer(t) for t in _jieba_words(ground_truth)) if w]
    return token_f1(pred, truth)


def _sentences(text: str) -> list:
    """The rouge package's sentences: pieces between "."s that are not empty, whitespace collapsed."""
    return [" ".join(piece.split()) for piece in text.split(".") if len(piece) > 0]


def lcs_words(x: list, y: list) -> tuple[list, int]:
    """The longest common subsequence of word lists x (reference) and y (prediction) that the rouge
    package's backtracking picks, and the number of steps that backtracking takes."""
    n, m = len(x), len(y)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        xi, row, prev = x[i - 1], table[i], table[i - 1]
        for j in range(1, m + 1):
            row[j] = prev[j - 1] + 1 if xi == y[j - 1] else max(prev[j], row[j - 1])
    out, steps, i, j = [], 0, n, m
    while i > 0 and j > 0:
        steps += 1
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    out.reverse()
    return out, steps


def rouge_l(prediction: str, ground_truth: str, max_path: int = ROUGE_MAX_PATH, **_) -> float:
    """ROUGE-L F (summary level) as the `rouge` package computes it; 0 where LongBench gets an error."""
    hyp, ref = _sentences(prediction), _sentences(ground_truth)
    if not hyp or not ref:
        return 0.0
    hyp_words = [s.split(" ") for s in hyp]
    ref_words = [s.split(" ") for s in ref]
    m = len({w for s in ref_words for w in s})
    n = len({w for s in hyp_words for w in s})
    union = set()
    for r in ref_words:
        for h in hyp_words:
            words, steps = lcs_words(r, h)
            if steps > max_path:
                return 0.0
            union.update(words)
    r_lcs, p_lcs = len(union) / m, len(union) / n
    return 2.0 * ((p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8))


def rouge_l_zh(prediction: str, ground_truth: str, **_) -> float:
    return rouge_l(" ".join(_jieba_words(prediction)), " ".join(_jieba_words(ground_truth)),
                   max_path=ROUGE_ZH_MAX_PATH)


def fuzz_ratio(a: str, b: str) -> int:
    """fuzzywuzzy's fuzz.ratio without python-Levenshtein (difflib), as an integer percent."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def first_code_line(prediction: str) -> str:
    """The first line (after leading newlines) with no "`", "#" or "//"; "" if there is none."""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            return line
    return ""


def code_sim(prediction: str, ground_truth: str, **_) -> float:
    return fuzz_ratio(first_code_line(prediction), ground_truth) / 100


def classification(prediction: str, ground_truth: str, all_classes=None, **_) -> float:
    found = [c for c in (all_classes or []) if c in prediction]
    k = 0  # walk the list while removing from it: the entry after a removed one is not looked at
    while k < len(found):
        term = found[k]
        k += 1
        if term in ground_truth and term != ground_truth:
            found.remove(term)
    return 1.0 / len(found) if ground_truth in found else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = _NUMBER.findall(prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(prediction: str, ground_truth: str, **_) -> float:
    found = re.findall(r"Paragraph (\d+)", ground_truth)
    if not found:
        raise ValueError(f"a passage_retrieval_en answer must read 'Paragraph N', got {ground_truth!r}")
    return _share_equal(prediction, found[0])


def retrieval_zh(prediction: str, ground_truth: str, **_) -> float:
    found = re.findall(r"段落(\d+)", ground_truth)
    if not found:
        raise ValueError(f"a passage_retrieval_zh answer must read '段落N', got {ground_truth!r}")
    return _share_equal(prediction, found[0])


def count(prediction: str, ground_truth: str, **_) -> float:
    return _share_equal(prediction, str(ground_truth))


def exact(prediction: str, ground_truth: str, **_) -> float:
    """1 when the prediction equals the answer once surrounding whitespace is stripped (for
    `ratlm eval generate`; not a LongBench metric)."""
    return float(prediction.strip() == ground_truth.strip())


METRICS = {
    "qa_f1": qa_f1, "qa_f1_zh": qa_f1_zh, "rouge": rouge_l, "rouge_zh": rouge_l_zh,
    "classification": classification, "retrieval": retrieval, "retrieval_zh": retrieval_zh,
    "count": count, "code_sim": code_sim, "exact": exact,
}


def best_score(metric: str, prediction: str, answers: list, all_classes=None) -> float:
    """LongBench's per-example score: the best over the true answers (0 when there are none)."""
    fn = METRICS[metric]
    score = 0.0
    for truth in answers:
        score = max(score, fn(prediction, truth, all_classes=all_classes))
    return score
