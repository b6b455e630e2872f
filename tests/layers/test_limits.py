import pytest
import torch
from mixer_helpers import make, run_split

from ratlm.layers import RAT, RNN
from ratlm.ops.naive import naive_attention, naive_gated_scan, tile_groups


def _x(B, T, seed=1):
    return torch.randn(B, T, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("G", [1, 2])
def test_chunk_size_1_is_attention_over_gated_pairs(G):
    m = make("rat", chunk_size=1, qk_groups=G)
    x = _x(2, 20)
    z, v, u, q, k = m._project(x)
    g = torch.sigmoid(u)
    y = naive_attention(tile_groups(q, 32), (1 - g) * tile_groups(k, 32), (1 - g) * v, 4)
    torch.testing.assert_close(m(x), m.out_proj(torch.sigmoid(z) * y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L", [20, 64])
def test_chunk_size_at_least_length_is_gated_rnn(L):
    """One chunk: the softmax has one term, y = v~; the same weights in an RNN give the same output."""
    m = make("rat", chunk_size=L, qk_groups=2)
    x = _x(2, 20)
    rnn = RNN(32).double()
    with torch.no_grad():
        rnn.in_proj.weight.copy_(m.in_proj.weight[: 3 * 32])
        rnn.gate_bias.copy_(m.gate_bias)
        rnn.out_proj.weight.copy_(m.out_proj.weight)
    torch.testing.assert_close(m(x), rnn(x), rtol=1e-10, atol=1e-12)
    z, v, u, _, _ = m._project(x)
    torch.testing.assert_close(m(x), m.out_proj(torch.sigmoid(z) * naive_gated_scan(v, u)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["rat", "attention", "window", "rnn"])
def test_naive_backend_with_cache_and_padding(kind):
    m = make(kind)
    x = _x(2, 11)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, :4] = 0
    fast = m(x, cache=m.init_cache(2), attention_mask=mask)
    m.backend = "naive"
    slow = m(x, cache=m.init_cache(2), attention_mask=mask)
    torch.testing.assert_close(slow, fast, rtol=1e-10, atol=1e-12)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("RATLM_BACKEND", "naive")
    assert RAT(32, 4).backend == "naive"
    monkeypatch.setenv("RATLM_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown backend"):
        RAT(32, 4)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_forward_matches_on_cpu():
    """The CUDA attention path (flex_attention) computes the same numbers; on CPU it runs eagerly."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    for kind, kw in [("rat", {"chunk_size": 4}), ("window", {"window": 5})]:
        m = make(kind, dtype=torch.float32, **kw)
        x = _x(2, 40).float()
        with torch.no_grad():
            ref = m(x)
            m.backend = "flex"
            out = m(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_cache_reorder_selects_rows():
    m = make("rat", chunk_size=4)
    x = _x(3, 10)
    c = m.init_cache(3)
    m(x, cache=c)
    c.reorder(torch.tensor([2, 0]))
    nxt = _x(2, 5, seed=3)
    y = m(nxt, cache=c)
    ref = m(torch.cat([x[[2, 0]], nxt], 1))[:, 10:]
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)


def test_cache_bytes_rat_is_attention_over_L():
    T, L = 256, 16
    rat, att = make("rat", chunk_size=L, dtype=torch.float32), make("attention", dtype=torch.float32)
    x = _x(1, T).float()
    with torch.no_grad():
        c_rat, c_att = rat.init_cache(1), att.init_cache(1)
        rat(x, cache=c_rat)
        att(x, cache=c_att)
    assert c_att.nbytes() == 2 * T * 32 * 4
    assert c_rat.nbytes() == c_att.nbytes() // L + 2 * 32 * 4  # + the running pair


@pytest.mark.slow
def test_bfloat16_long_sequence_stays_finite():
    torch.manual_seed(0)
    m = RAT(64, 4, chunk_size=16).to(torch.bfloat16)
    x = torch.randn(1, 65536, 64, dtype=torch.bfloat16, requires_grad=True)
    y = m(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_bfloat16_matches_float32_loosely():
    m = make("rat", chunk_size=4, dtype=torch.float32)
    x = _x(2, 40).float()
    ref = m(x)
    out = m.to(torch.bfloat16)(x.bfloat16())
    dec, cache = run_split(m, x.bfloat16(), [7, 8, 9])
    assert cache.running.dtype == torch.float32  # bf16 model, float32 state
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    torch.testing.assert_close(dec.float(), out.float(), rtol=0.05, atol=0.05)


def _saved_storages(module, x):
    """{storage pointer: bytes} of every tensor autograd keeps for the backward of module(x)."""
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return saved


@pytest.mark.parametrize("flash", [True, False])
def test_rat_training_keeps_neither_the_projection_nor_copies_per_chunk_offset(flash, monkeypatch):
    """What RAT's training forward keeps for its backward: not the whole input projection (z, v, g, q, k;
    only copies of k, v and q), nothing L times over, queries at group width, not the running keys (the
    scan hands over their scores and scans again in the backward), the gate's product not at all, no
    per-token gathers of the RoPE tables; about 6.9 (T, D) float32 tensors in all (12.25, then 8.25
    before; attention keeps 7.4)."""
    from ratlm.ops import chunk_attention as ca
    from ratlm.ops import rope

    monkeypatch.setattr(ca, "FLASH_TRAIN_MIN_TOKENS", 0)
    monkeypatch.setattr(ca, "USE_FLASH", flash)
    B, T, D = 1, 256, 512
    m = RAT(D, 8, chunk_size=16, qk_groups=2)  # the benchmark's layer
    saved = _saved_storages(m, torch.randn(B, T, D, requires_grad=True))
    shared = [*m.parameters(), *(t for tables in rope._TABLES.values() for t in tables)]
    for t in shared:  # the weights and the cached RoPE tables exist before the step
        saved.pop(t.untyped_storage().data_ptr(), None)
    assert max(saved.values()) < B * T * m.in_proj.out_features * 4  # not the projection
    held = sum(saved.values()) / (B * T * D * 4)
    assert held < 7.0  # both kernels take the queries at group width (the blocked one held 7.6 when it tiled them)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("rows", [4096, 3], ids=["one-block", "blocks-of-3-rows"])
def test_gated_output_equals_the_plain_expression(autocast, rows, monkeypatch):
    """gated_output (keeps sigmoid(z) and y, recomputes their product in the backward, by blocks of
    GATE_ROWS rows) gives the values and gradients of out_proj((sigmoid(z) * y).to(dtype)): exactly in
    float64, and as nn.Linear does under bf16 autocast."""
    from ratlm.layers import common
    from ratlm.layers.common import gated_output

    monkeypatch.setattr(common, "GATE_ROWS", rows)

    dtype = torch.float32 if autocast else torch.float64
    g = torch.Generator().manual_seed(0)
    proj = torch.nn.Linear(16, 12, bias=False).to(dtype)
    z, y = (torch.randn(2, 5, 16, generator=g, dtype=dtype, requires_grad=True) for _ in range(2))
    grad = torch.randn(2, 5, 12, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = gated_output(proj, z, y, dtype)
        ref = proj((torch.sigmoid(z) * y).to(dtype))
    assert out.dtype == ref.dtype
    tol = dict(rtol=1e-12, atol=1e-12) if not autocast else dict(rtol=0, atol=0)
    torch.testing.assert_close(out, ref, **tol)
    ins = [z, y, proj.weight]
    got = torch.autograd.grad(out, ins, grad.to(out.dtype))
    want = torch.autograd.grad(ref, ins, grad.to(ref.dtype))
    for a, b in zip(got, want):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **(tol if not autocast else dict(rtol=2e-2, atol=2e-2)))


@pytest.mark.parametrize("kind", ["rat", "rnn"])
def test_training_frees_the_in_projection_before_the_scan(kind, monkeypatch):
    """With gradients, the in-projection (z, v, g, q, k for RAT; z, v, g for the RNN) is no longer alive by
    the time the scan runs: its parts are copied out and the output gate taken early (detach_projection)."""
    import weakref

    from ratlm.layers import rat, rnn

    m = make(kind, chunk_size=4, dtype=torch.float32) if kind == "rat" else make(kind, dtype=torch.float32)
    refs, alive = [], []
    m.in_proj.register_forward_hook(lambda mod, inp, out: refs.append(weakref.ref(out)))
    module, name = (rat, "kv_chunk_scan") if kind == "rat" else (rnn, "gated_scan")
    scan = getattr(module, name)

    def checked(*args, **kw):
        alive.append(refs[-1]() is not None)
        return scan(*args, **kw)

    monkeypatch.setattr(module, name, checked)
    x = _x(2, 24).float().requires_grad_()
    m(x).sum().backward()
    with torch.no_grad():  # without gradients nothing is copied (the views are used directly)
        m(x)
    assert alive == [False, True]
