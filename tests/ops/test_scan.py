import pytest
import torch

from ratlm.ops.naive import naive_gated_scan
from ratlm.ops.scan import gated_scan


def _inputs(B, T, F, gate_scale=1.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, *F, generator=g, dtype=dtype)
    u = torch.randn(B, T, 1, *F[1:], generator=g, dtype=dtype) * gate_scale
    return x, u


def _grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    grads = torch.autograd.grad(out, inputs, g, allow_unused=True)
    return [torch.zeros_like(t) if d is None else d for t, d in zip(inputs, grads)]


@pytest.fixture(params=["one-slice", "slices-of-16"])
def slices(request, monkeypatch):
    """The backward in one slice of time, or in slices of 16 tokens (scan.SLICE_TOKENS)."""
    from ratlm.ops import scan

    if request.param != "one-slice":
        monkeypatch.setattr(scan, "SLICE_TOKENS", 1)
    return request.param


@pytest.mark.parametrize("T", [1, 5, 16, 37, 100, 300])
@pytest.mark.parametrize("L", [None, 1, 4, 16, 100])
def test_scan_matches_reference_values_and_grads(T, L, slices):
    x, u = _inputs(2, T, (2, 6))
    x.requires_grad_(), u.requires_grad_()
    ref = naive_gated_scan(x, u, L)
    out = gated_scan(x, u, L)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(out, [x, u]), _grads(ref, [x, u])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [4, 16, 100])
def test_scan_float32_against_float64_reference(L):
    x, u = _inputs(2, 257, (2, 8))
    ref = naive_gated_scan(x, u, L)
    out = gated_scan(x.float(), u.float(), L)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("start", [3, 16, [5, 0, 13]])
@pytest.mark.parametrize("L", [None, 4, 16, 100])
def test_scan_with_start_and_initial_state(start, L, slices):
    B, T = 3, 41
    x, u = _inputs(B, T, (2, 5))
    h0 = torch.randn(B, 2, 5, dtype=torch.float64)
    for t in (x, u, h0):
        t.requires_grad_()
    starts = start if isinstance(start, list) else [start] * B
    ref = torch.cat([naive_gated_scan(x[b : b + 1], u[b : b + 1], L, starts[b], h0[b : b + 1]) for b in range(B)])
    st = torch.tensor(start) if isinstance(start, list) else start
    out = gated_scan(x, u, L, start=st, initial=h0)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(out, [x, u, h0]), _grads(ref, [x, u, h0])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [None, 4])
def test_scan_gate_shared_over_time(L, slices):
    """A gate broadcast over the positions (gate_logits (B, 1, ...)): its gradient sums every position's."""
    x, u = _inputs(2, 70, (3,))
    u = u[:, :1].clone().requires_grad_()  # (2, 1, 1): one gate per row
    x.requires_grad_()
    ref = naive_gated_scan(x, u, L)
    out = gated_scan(x, u, L)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(out, [x, u]), _grads(ref, [x, u])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gate_scale", [20.0, 60.0])
@pytest.mark.parametrize("L", [None, 16])
def test_scan_stable_for_saturated_gates(gate_scale, L):
    """Gates at 0 and 1 (logits of +-20 to +-60): finite, and float32 within 1e-5 of float64."""
    x, u = _inputs(2, 200, (2, 8), gate_scale=gate_scale)
    u[:, ::7] = 80.0  # g == 1 in float32: the state is carried unchanged
    ref = naive_gated_scan(x, u, L)
    xf, uf = x.float().requires_grad_(), u.float().requires_grad_()
    out = gated_scan(xf, uf, L)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    gx, gu = _grads(out, [xf, uf])
    assert torch.isfinite(gx).all() and torch.isfinite(gu).all()


def test_scan_bfloat16_input_keeps_float32_state():
    x, u = _inputs(1, 64, (4,), dtype=torch.float32)
    out = gated_scan(x.bfloat16(), u, 16)
    assert out.dtype == torch.float32
    ref = naive_gated_scan(x.bfloat16().double(), u.double(), 16)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [1, 15, 16, 37])
@pytest.mark.parametrize("L", [1, 4, 16])
@pytest.mark.parametrize("G,R", [(1, 1), (2, 2), (1, 4)])
@pytest.mark.parametrize("slices", ["one", "many"])
def test_kv_chunk_scan_matches_reference(T, L, G, R, slices, monkeypatch):
    """Keys at group width, tiled inside (head h uses group h mod G), values, one gate; the backward
    in one slice of chunks or in slices of one chunk (SLICE_TOKENS), forward and backward."""
    from ratlm.ops import scan
    from ratlm.ops.naive import tile_groups
    from ratlm.ops.scan import kv_chunk_scan

    if slices == "many":
        monkeypatch.setattr(scan, "SLICE_TOKENS", 1)

    gen = torch.Generator().manual_seed(3)
    dh = 3
    D = G * R * dh
    k = torch.randn(2, T, G * dh, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, T, D, generator=gen, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, T, D, generator=gen, dtype=torch.float64, requires_grad=True)
    kt, vt, k_end, v_end = kv_chunk_scan(k, v, u, L)
    rk, rv = naive_gated_scan(tile_groups(k, D), u, L), naive_gated_scan(v, u, L)
    C = T // L
    ref = [rk, rv, rk[:, L - 1 :: L][:, :C], rv[:, L - 1 :: L][:, :C]]
    for a, b in zip((kt, vt, k_end, v_end), ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    gen = torch.Generator().manual_seed(4)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in ref]
    loss = sum((a * w).sum() for a, w in zip((kt, vt, k_end, v_end), weights))
    ref_loss = sum((a * w).sum() for a, w in zip(ref, weights))
    for a, b in zip(_grads(loss, [k, v, u]), _grads(ref_loss, [k, v, u])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # an unused output gets no gradient: still right
    rv = naive_gated_scan(v, u, L)
    for a, b in zip(_grads(kv_chunk_scan(k, v, u, L)[1], [k, v, u]), _grads(rv, [k, v, u])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    out32 = kv_chunk_scan(k.float(), v.float(), u.float(), L)
    torch.testing.assert_close(out32[0].double(), rk, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T,L", [(1, 4), (15, 4), (16, 4), (37, 16), (40, 1)])
@pytest.mark.parametrize("G,R", [(1, 1), (2, 2), (1, 4)])
@pytest.mark.parametrize("slices", ["one", "many"])
def test_kv_chunk_scan_with_queries_returns_scores(T, L, G, R, slices, monkeypatch):
    """With queries, the first output is each head's score q . k~ (head h: group h mod G) instead of k~;
    values and gradients in all four inputs against the reference scan and explicit products."""
    from ratlm.ops import scan
    from ratlm.ops.naive import tile_groups
    from ratlm.ops.scan import kv_chunk_scan

    if slices == "many":
        monkeypatch.setattr(scan, "SLICE_TOKENS", 1)
    gen = torch.Generator().manual_seed(5)
    dh = 3
    D = G * R * dh
    k, q = (torch.randn(2, T, G * dh, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    v, u = (torch.randn(2, T, D, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ss, vt, k_end, v_end = kv_chunk_scan(k, v, u, L, q=q, head_dim=dh)
    rk, rv = naive_gated_scan(tile_groups(k, D), u, L), naive_gated_scan(v, u, L)
    ref_ss = (rk.view(2, T, R * G, dh) * tile_groups(q, D).view(2, T, R * G, dh)).sum(-1)
    C = T // L
    ref = [ref_ss, rv, rk[:, L - 1 :: L][:, :C], rv[:, L - 1 :: L][:, :C]]
    for a, b in zip((ss, vt, k_end, v_end), ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in ref]
    loss = sum((a * w).sum() for a, w in zip((ss, vt, k_end, v_end), weights))
    ref_loss = sum((a * w).sum() for a, w in zip(ref, weights))
    for a, b in zip(_grads(loss, [k, v, u, q]), _grads(ref_loss, [k, v, u, q])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="head_dim"):
        kv_chunk_scan(k, v, u, L, q=q)
