"""Building and running the mixers in the layer tests (plain helpers; fixtures are in conftest.py)."""
import torch

from ratlm.layers import RAT, RNN, Attention, SlidingWindowAttention

D, H = 32, 4


def make(kind, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    if kind == "rat":
        m = RAT(D, H, **kw)
    elif kind == "attention":
        m = Attention(D, H, **kw)
    elif kind == "window":
        m = SlidingWindowAttention(D, H, **{"window": 5, **kw})
    elif kind == "rnn":
        m = RNN(D, gate_span=8)
    else:
        raise KeyError(kind)
    with torch.no_grad():  # non-trivial gate biases and larger weights than the default init
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m.to(dtype)


def run_split(m, x, cuts, cache=None):
    """Prefill x in pieces at the given cut points through one cache."""
    cache = cache if cache is not None else m.init_cache(x.shape[0])
    bounds = [0, *cuts, x.shape[1]]
    ys = [m(x[:, a:b], cache=cache) for a, b in zip(bounds, bounds[1:]) if b > a]
    return torch.cat(ys, 1), cache


def random_cuts(T, rng):
    n = rng.randint(0, min(4, T - 1)) if T > 1 else 0
    return sorted(rng.sample(range(1, T), n)) if n else []


MIXERS = [
    ("rat", {"chunk_size": 1, "qk_groups": 1}),
    ("rat", {"chunk_size": 1, "qk_groups": 2}),
    ("rat", {"chunk_size": 4, "qk_groups": 1}),
    ("rat", {"chunk_size": 4, "qk_groups": 2}),
    ("rat", {"chunk_size": 16, "qk_groups": 2}),
    ("rat", {"chunk_size": 16, "qk_groups": 1, "position_encoding": "nope"}),
    ("rat", {"chunk_size": 4, "qk_groups": 4, "position_encoding": "nope"}),
    ("attention", {}),
    ("attention", {"position_encoding": "nope"}),
    ("window", {"window": 5}),
    ("window", {"window": 16, "position_encoding": "nope"}),
    ("rnn", {}),
]


def mixer_id(p):
    kind, kw = p
    return kind + "".join(f"-{k[:3]}{v}" for k, v in kw.items())
