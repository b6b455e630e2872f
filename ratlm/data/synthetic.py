"""Synthetic retrieval tasks, made locally and deterministically from a seed (pure Python, no torch).

    examples(task, n, seed, **options)  ->  {"prompt": str, "response": str}, n times
    records(task, n, seed, **options)   ->  the same plus "meta": where each answer is and how deep

Tasks (the texts are short versions of the published templates, so that small models fit them):

passkey  A 5-digit pass key hidden in filler text (Mohtashami & Jaggi, 2023).
         options: length, depth, digits, haystack
niah     RULER-style needle in a haystack (Hsieh et al., 2024): needles "The special magic number for
         KEY is: VALUE." hidden in a haystack; single or multi-key (distractor keys), multi-value (one key,
         several values, all asked), multi-query (several keys asked).
         options: length, depth, keys, values, queries, value (number|word|uuid), haystack
mqar     Multi-query associative recall (Arora et al., 2023, "Zoology"): key:value pairs, then the keys
         again in a shuffled order, each to be followed by its value.
         options: length or pairs, queries, key_len, value_len

length   target length in characters of prompt + response (never exceeded; the haystack is whole
         sentences, so a record can be up to one sentence shorter). All text is ASCII unless a
         haystack file is not, so for the byte-level tokenizer characters are tokens.
depth    where the answer's needle sits in the haystack: 0 = start, 1 = end; None = random. With
         several answers (niah), the first value of the first asked key goes there, the rest anywhere.
haystack "noise" (RULER's: "The grass is green. The sky is blue. ..." repeated), "words" (random
         sentences of common words), "needles" (distractor needles with other keys) or "file:PATH"
         (the sentences of a local text file, repeated as needed).

Example i of (task, seed, options) is the same whatever n is. meta["answers"] lists, for each graded
part of the response, [start, end, depth] (character offsets in the response): for passkey and niah
the values, for mqar the values after each query (the query keys after the first are part of the
response but not graded).
"""
from __future__ import annotations

import random
import re
import string

from ..options import parse_pairs

TASKS = ("passkey", "niah", "mqar")

NOISE = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")

ADJECTIVES = (
    "able ancient angry bitter black bold brave bright broad calm clean clever cold cool curly dark deep eager "
    "early empty fair fancy fast fierce flat fresh gentle giant glad golden grand green happy heavy hollow huge "
    "humble icy kind large late lazy light little lively loud lucky mighty narrow neat noisy old pale plain "
    "polite proud quick quiet rapid rich round royal rusty shiny short silent silver simple slow small smooth "
    "soft solid sour spicy steep still strong sweet swift tall tame thin tiny tough warm wide wild wise young"
).split()
NOUNS = (
    "anchor apple arrow badge basket beach bell berry bird blanket boat bottle bridge brook button cabin camel "
    "candle canyon castle cave chair cliff cloud coast comet copper crane crown desert dolphin door dragon eagle "
    "engine falcon feather fence field flame forest fountain garden glacier harbor hammer hill island jacket "
    "kettle ladder lantern lemon lion meadow mirror moon mountain needle ocean orchard owl paddle palace pebble "
    "pepper piano pillow planet pond rabbit river robot saddle school shadow shell ship spoon star stone storm "
    "street tiger tower train tulip valley violin wagon whale window wolf"
).split()
VERBS = (
    "finds keeps sees builds carries follows holds likes moves opens paints pulls pushes reaches shows "
    "watches wants brings meets leaves"
).split()

_OPTIONS = {
    "passkey": {"length": 256, "depth": None, "digits": 5, "haystack": "noise"},
    "niah": {"length": 512, "depth": None, "keys": 1, "values": 1, "queries": 1, "value": "number",
             "haystack": "noise"},
    "mqar": {"length": None, "pairs": None, "queries": None, "key_len": 3, "value_len": 2},
}


def options(task):
    """The options of `task` with their defaults."""
    if task not in _OPTIONS:
        raise ValueError(f"unknown synthetic task {task!r}; choose from {', '.join(TASKS)}")
    return dict(_OPTIONS[task])


def parse_task(spec):
    """'niah' or 'niah:keys=4,value=word,length=1024' -> ("niah", {"keys": 4, ...}) (numbers converted)."""
    task, _, rest = spec.partition(":")
    known = options(task)
    opts = parse_pairs(rest, f"task {spec!r}")
    _check(task, known, opts)
    return task, opts


# what each option takes: a whole number >= 1, a depth in [0, 1], or a word
_KINDS = {"length": "count", "digits": "count", "keys": "count", "values": "count", "queries": "count",
          "pairs": "count", "key_len": "count", "value_len": "count", "depth": "depth", "haystack": "word",
          "value": "word"}


def _check(task, known, opts):
    bad = sorted(set(opts) - set(known))
    if bad:
        raise ValueError(f"unknown option(s) {', '.join(bad)} for task {task}; "
                         f"options are {', '.join(sorted(known))}")
    for k, v in opts.items():
        kind = _KINDS.get(k)
        if v is None:
            continue
        if kind == "count" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"task {task}: option {k}={v!r} must be a whole number >= 1")
        if kind == "depth" and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1):
            raise ValueError(f"task {task}: option {k}={v!r} must be a number between 0 and 1")
        if kind == "word" and not isinstance(v, str):
            raise ValueError(f"task {task}: option {k}={v!r} must be a word (e.g. {known.get(k) or 'number'})")


def examples(task, n, seed=0, **opts):
    """n records {"prompt", "response"} of `task`; deterministic in (task, seed, options)."""
    for r in records(task, n, seed, **opts):
        yield {"prompt": r["prompt"], "response": r["response"]}


def records(task, n, seed=0, **opts):
    """Like `examples`, with "meta": task, length (characters), target_length, depth, answers."""
    known = options(task)
    _check(task, known, opts)
    known.update(opts)
    make = {"passkey": _passkey, "niah": _niah, "mqar": _mqar}[task]
    haystack = known.get("haystack")
    sentences = _file_sentences(haystack[5:]) if isinstance(haystack, str) and haystack.startswith("file:") else None
    for i in range(n):
        rng = random.Random(f"ratlm/{task}/{seed}/{i}")
        rec = make(rng, sentences=sentences, **known)
        rec["meta"]["task"] = task
        yield rec


# --- haystacks ---------------------------------------------------------------------------------------

def _file_sentences(path):
    with open(path, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
    if not sentences:
        raise ValueError(f"haystack file {path} has no text")
    return sentences


def _sentence(rng, kind, file_sentences, i):
    if kind == "noise":
        return NOISE[i % len(NOISE)]
    if kind == "words":
        a, b = rng.sample(ADJECTIVES, 2)
        n1, n2 = rng.sample(NOUNS, 2)
        return f"The {a} {n1} {rng.choice(VERBS)} the {b} {n2}."
    if file_sentences is not None:
        return file_sentences[i % len(file_sentences)]
    raise ValueError(f"unknown haystack {kind!r}; use noise, words, needles or file:PATH")


def _haystack(rng, kind, budget, file_sentences=None, distractor=None):
    """Whole sentences (each followed by one space) of at most `budget` characters in all."""
    out, used, i = [], 0, 0
    while True:
        s = (distractor() if kind == "needles" else _sentence(rng, kind, file_sentences, i)) + " "
        if used + len(s) > budget:
            return out
        out.append(s)
        used += len(s)
        i += 1


def _place(rng, sentences, needles, depths):
    """Insert needles (strings) between sentences at the boundaries nearest `depths` (None = random).
    Returns the text and, per needle, (offset of the needle in the text, actual depth)."""
    ends = [0]
    for s in sentences:
        ends.append(ends[-1] + len(s))
    total = ends[-1]
    slots = []
    for d in depths:
        if d is None:
            slots.append(rng.randrange(len(ends)))
        else:
            target = min(max(float(d), 0.0), 1.0) * total
            slots.append(min(range(len(ends)), key=lambda b: (abs(ends[b] - target), b)))
    order = sorted(range(len(needles)), key=lambda k: (slots[k], k))
    parts, where, pos, prev = [], [None] * len(needles), 0, 0
    for k in order:
        b = slots[k]
        chunk = "".join(sentences[prev:b])
        parts.append(chunk)
        pos += len(chunk)
        prev = b
        where[k] = (pos, ends[b] / total if total else 0.0)
        parts.append(needles[k])
        pos += len(needles[k])
    parts.append("".join(sentences[prev:]))
    return "".join(parts), where


def _too_short(task, length, need):
    raise ValueError(f"{task}: length {length} is too short; this setting needs at least {need} characters")


# --- tasks -------------------------------------------------------------------------------------------

def _passkey(rng, length, depth, digits, haystack, sentences):
    key = str(rng.randrange(10 ** (digits - 1), 10 ** digits))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
    question = "What is the pass key? The pass key is "
    fixed = len(needle) + len(question) + len(key)
    if length < fixed:
        _too_short("passkey", length, fixed)
    if haystack == "needles":
        raise ValueError("passkey: a haystack of needles needs keys; use niah with haystack=needles")
    kind = "file" if haystack.startswith("file:") else haystack
    hay = _haystack(rng, kind, length - fixed, sentences)
    text, [(at, d)] = _place(rng, hay, [needle], [depth])
    prompt = text + question
    return {"prompt": prompt, "response": key,
            "meta": {"length": len(prompt) + len(key), "target_length": length, "depth": d,
                     "answers": [[0, len(key), d]], "needle_at": [at]}}


def _value(rng, kind):
    if kind == "number":
        return str(rng.randrange(10 ** 6, 10 ** 7))
    if kind == "word":
        return rng.choice(NOUNS)
    if kind == "uuid":
        h = f"{rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:]}"
    raise ValueError(f"unknown value kind {kind!r}; use number, word or uuid")


def _key(rng):
    return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"


def _niah(rng, length, depth, keys, values, queries, value, haystack, sentences):
    if keys < 1 or values < 1 or not 1 <= queries <= keys:
        raise ValueError(f"niah: need keys >= 1, values >= 1 and 1 <= queries <= keys; got keys={keys}, "
                         f"values={values}, queries={queries}")
    name = {"number": "number", "word": "word", "uuid": "uuid"}.get(value)
    if name is None:
        raise ValueError(f"unknown value kind {value!r}; use number, word or uuid")
    used_keys, used_values = set(), set()

    def fresh(make, used):
        for _ in range(10000):
            x = make()
            if x not in used:
                used.add(x)
                return x
        raise ValueError("niah: ran out of distinct keys or values; ask for fewer")

    key_list = [fresh(lambda: _key(rng), used_keys) for _ in range(keys)]
    asked = key_list[:queries]
    vals = {k: [fresh(lambda: _value(rng, value), used_values) for _ in range(values if k in asked else 1)]
            for k in key_list}
    needles, owners = [], []
    for k in key_list:
        for v in vals[k]:
            needles.append(f"The special magic {name} for {k} is: {v}. ")
            owners.append((k, v))
    many = queries > 1 or values > 1
    who = asked[0] if len(asked) == 1 else ", ".join(asked[:-1]) + " and " + asked[-1]
    if many:
        question = f"What are all the special magic {name}s for {who}? The special magic {name}s for {who} are: "
    else:
        question = f"What is the special magic {name} for {who}? The special magic {name} for {who} is: "
    answer_len = sum(len(v) + 2 for k in asked for v in vals[k]) - 2
    fixed = sum(map(len, needles)) + len(question) + answer_len
    if length < fixed:
        _too_short("niah", length, fixed)

    def distractor():
        k = fresh(lambda: _key(rng), used_keys)
        return f"The special magic {name} for {k} is: {fresh(lambda: _value(rng, value), used_values)}."

    kind = "file" if haystack.startswith("file:") else haystack
    hay = _haystack(rng, kind, length - fixed, sentences, distractor)
    first = owners.index((asked[0], vals[asked[0]][0]))
    depths = [depth if i == first else None for i in range(len(needles))]
    text, where = _place(rng, hay, needles, depths)
    prompt = text + question
    parts, answers, pos = [], [], 0
    for k in asked:  # values of each asked key, in the order they appear in the text
        for v in sorted(vals[k], key=lambda v: where[owners.index((k, v))][0]):
            if parts:
                parts.append(", ")
                pos += 2
            answers.append([pos, pos + len(v), where[owners.index((k, v))][1]])
            parts.append(v)
            pos += len(v)
    response = "".join(parts)
    return {"prompt": prompt, "response": response,
            "meta": {"length": len(prompt) + len(response), "target_length": length, "depth": where[first][1],
                     "answers": answers, "needle_at": [w[0] for w in where]}}


def _mqar(rng, length, pairs, queries, key_len, value_len, **_):
    item = key_len + 1 + value_len + 1  # "key:value "
    if (length is None) == (pairs is None):
        if pairs is None:
            pairs = 16
        else:
            raise ValueError("mqar: give length or pairs, not both")
    if pairs is None:
        per_pair = 2 * item if queries is None else item
        pairs = (length - (0 if queries is None else queries * item)) // per_pair
        if pairs < 1:
            _too_short("mqar", length, item * (2 if queries is None else queries + 1))
    queries = pairs if queries is None else queries
    if not 1 <= queries <= pairs:
        raise ValueError(f"mqar: need 1 <= queries <= pairs, got queries={queries}, pairs={pairs}")
    if pairs > 26 ** key_len // 2:
        raise ValueError(f"mqar: {pairs} pairs need longer keys than key_len={key_len}")
    keys = set()
    while len(keys) < pairs:
        keys.add("".join(rng.choice(string.ascii_lowercase) for _ in range(key_len)))
    keys = rng.sample(sorted(keys), pairs)
    vals = ["".join(rng.choice(string.digits) for _ in range(value_len)) for _ in keys]
    asked = rng.sample(range(pairs), queries)
    prompt = " ".join(f"{k}:{v}" for k, v in zip(keys, vals)) + "\n" + f"{keys[asked[0]]}:"
    parts, answers, pos = [], [], 0
    for j, i in enumerate(asked):
        if j:
            head = f" {keys[i]}:"
            parts.append(head)
            pos += len(head)
        answers.append([pos, pos + value_len, i / max(pairs - 1, 1)])
        parts.append(vals[i])
        pos += value_len
    response = "".join(parts)
    return {"prompt": prompt, "response": response,
            "meta": {"length": len(prompt) + len(response), "target_length": length, "depth": answers[0][2],
                     "answers": answers, "pairs": pairs}}
