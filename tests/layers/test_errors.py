import pytest
import torch

from ratlm.layers import RAT, RNN, Attention, SlidingWindowAttention


@pytest.mark.parametrize("build,match", [
    (lambda: RAT(32, 4, chunk_size=0), "chunk_size must be an integer >= 1"),
    (lambda: RAT(32, 4, chunk_size=2.5), "chunk_size must be an integer >= 1"),
    (lambda: RAT(30, 4), "not divisible by num_heads"),
    (lambda: Attention(30, 4), "not divisible by num_heads"),
    (lambda: RAT(32, 4, qk_groups=3), "divisible by qk_groups"),
    (lambda: RAT(32, 4, position_encoding="alibi"), "position_encoding must be"),
    (lambda: RAT(12, 4), "RoPE needs an even head width"),
    (lambda: SlidingWindowAttention(32, 4, window=0), "window must be an integer >= 1"),
    (lambda: RNN(0), "hidden_size must be a positive integer"),
    (lambda: RAT(32, 4, backend="cuda"), "unknown backend"),
])
def test_bad_constructor_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize("x,match", [
    (torch.randn(5, 32), r"expected input of shape \(batch, length, 32\)"),
    (torch.randn(1, 5, 16), "input width is 16"),
    (torch.ones(1, 5, 32, dtype=torch.long), "floating-point"),
    (torch.randn(1, 0, 32), "length 0"),
])
def test_bad_inputs(x, match):
    with pytest.raises(ValueError, match=match):
        RAT(32, 4)(x)


def test_bad_mask_shape():
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        Attention(32, 4)(torch.randn(2, 5, 32), attention_mask=torch.ones(2, 4))


@pytest.mark.parametrize("layer", [RAT(32, 4, chunk_size=4), Attention(32, 4), RNN(32),
                                   SlidingWindowAttention(32, 4, window=3)])
def test_decode_past_capacity(layer):
    cache = layer.init_cache(1, max_length=6)
    with torch.no_grad():
        layer(torch.randn(1, 5, 32), cache=cache)
        layer(torch.randn(1, 1, 32), cache=cache)
        with pytest.raises(ValueError, match="cache capacity exceeded.*larger max_length"):
            layer(torch.randn(1, 1, 32), cache=cache)


def test_cache_batch_mismatch():
    layer = RAT(32, 4)
    cache = layer.init_cache(2)
    with pytest.raises(ValueError, match="batch size 3 but the cache was made for 2"):
        layer(torch.randn(3, 4, 32), cache=cache)
