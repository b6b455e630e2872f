"""decode_state_bytes: the per-row decode state a model's cache really holds."""
import pytest
import torch
from hf_tiny import CHUNK, KINDS, WINDOW

from ratlm import RATConfig, RATForCausalLM
from ratlm.models import decode_state_bytes


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_state_bytes_matches_the_cache(kind, dtype):
    cfg = RATConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, chunk_size=CHUNK,
                    sliding_window=WINDOW, layer_types=KINDS[kind])
    torch.manual_seed(0)
    model = RATForCausalLM(cfg).to(dtype).eval()
    B = 3
    cache = model.make_cache(B)
    ids = torch.randint(0, 50, (B, 9))
    with torch.no_grad():
        model(ids, cache=cache, use_cache=True)
        assert cache.nbytes() == B * decode_state_bytes(cfg, 9, dtype)
        for n in range(10, 14):  # decode steps, across a chunk end
            model(ids[:, :1], cache=cache, use_cache=True)
            assert cache.nbytes() == B * decode_state_bytes(cfg, n, dtype)
    assert decode_state_bytes(cfg, 9, "bfloat16") == decode_state_bytes(cfg, 9, torch.bfloat16)


def test_decode_state_bytes_formula():
    cfg = RATConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, chunk_size=16, sliding_window=100,
                    layer_types=["rat", "attention", "sliding_attention", "rnn"])
    n = 4096
    assert decode_state_bytes(cfg, n, torch.float32) == 4 * (
        (n // 16) * 2 * 64 + 2 * 64  # RAT: completed chunks' pairs + the running pair
        + n * 2 * 64  # attention: every key and value
        + 101 * 2 * 64  # window: W + 1 slots
        + 64)  # RNN: the state
    # bf16 halves the caches but not the float32 running pair and RNN state
    assert decode_state_bytes(cfg, n, torch.bfloat16) == 2 * ((n // 16) * 128 + n * 128 + 101 * 128) + 4 * (128 + 64)
