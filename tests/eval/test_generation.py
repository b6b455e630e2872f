"""Batched greedy generation with left padding against the one-prompt, no-cache reference."""
import pytest

from ratlm.data.tokenizer import byte_tokenizer
from ratlm.errors import UserError
from ratlm.eval.generation import greedy_generate, greedy_naive, prompt_budget, truncate_middle


def test_truncate_middle():
    ids = list(range(10))
    assert truncate_middle(ids, 10) == ids
    assert truncate_middle(ids, 5) == [0, 1, 8, 9]  # int(5 / 2) from each end, as LongBench
    assert truncate_middle(ids, 6) == [0, 1, 2, 7, 8, 9]
    with pytest.raises(UserError):
        truncate_middle(ids, 1)


@pytest.mark.parametrize("which", [0, 1])
def test_batched_equals_reference(random_dirs, which):
    from ratlm.runtime import load

    model, tok, _ = load(random_dirs[which], "cpu")
    prompts = [list(b"hello world, this is a test"), list(b"abc"), list(b"the quick brown fox") * 2, [65]]
    for stop, min_new in (((), 0), ((32, 101), 1)):
        got = greedy_generate(model, tok, prompts, 8, batch_size=3, stop_ids=stop, min_new_tokens=min_new)
        want = [greedy_naive(model, tok, p, 8, stop_ids=stop, min_new_tokens=min_new) for p in prompts]
        assert got == want


def test_stops_at_a_stop_token(random_dirs):
    from ratlm.runtime import load

    model, tok, _ = load(random_dirs[1], "cpu")
    free = greedy_generate(model, tok, [list(b"abc"), list(b"xyz!")], 5)
    first = free[0][0]
    got = greedy_generate(model, tok, [list(b"abc"), list(b"xyz!")], 5, stop_ids=[first])
    assert got[0] == [first]  # stopped at once, the stop token kept
    assert got[1] == free[1][: free[1].index(first) + 1] if first in free[1] else got[1] == free[1]


def test_prompt_budget(random_dirs):
    from ratlm.runtime import load

    model, _, _ = load(random_dirs[0], "cpu")  # train_length 32
    assert prompt_budget(model, 8, None) == 24
    assert prompt_budget(model, 64, 100) == 100
    with pytest.raises(UserError, match="training length"):
        prompt_budget(model, 32, None)
    assert byte_tokenizer().eos_token_id == model.config.eos_token_id
