import pytest
import torch

from ratlm.ops import chunk_attention as ca


def dense_reference(q, k, v, self_score, self_value, q_chunk, k_chunk, scale):
    s = q @ k.transpose(-1, -2) * scale
    visible = k_chunk[:, None, :] < q_chunk[:, :, None]
    s = s.masked_fill(~visible[:, None], float("-inf"))
    p = torch.cat([s, self_score[..., None]], -1).softmax(-1)
    return p[..., :-1] @ v + p[..., -1:] * self_value


def _case(B, H, Tq, Nk, dh, L, offsets, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
         for s in [(B, H, Tq, dh), (B, H, Nk, dh), (B, H, Nk, dh), (B, H, Tq), (B, H, Tq, dh)]]
    q_chunk = torch.arange(Tq)[None] // L + torch.tensor(offsets)[:, None]
    k_chunk = torch.arange(Nk)[None].expand(B, Nk)
    return t, q_chunk, k_chunk


@pytest.mark.parametrize("keep", [1 << 27, 0], ids=["kept-probs", "recomputed"])
@pytest.mark.parametrize("block", [7, 64, 512])
@pytest.mark.parametrize("B,H,Tq,Nk,dh,L,offsets", [
    (2, 3, 50, 12, 8, 4, [0, 1]),
    (1, 2, 130, 8, 4, 16, [0]),
    (2, 2, 64, 0, 4, 16, [0, 0]),
    (2, 2, 300, 75, 8, 4, [0, 3]),
    (1, 1, 33, 33, 4, 1, [0]),
])
def test_matches_dense_reference(monkeypatch, keep, block, B, H, Tq, Nk, dh, L, offsets):
    """Values and gradients, with the backward reusing the forward's probabilities or recomputing them."""
    monkeypatch.setattr(ca, "QUERY_BLOCK", block)
    monkeypatch.setattr(ca, "KEEP_PROBS", keep)
    monkeypatch.setattr(ca, "KEEP_RATIO", float("inf"))
    inputs, qc, kc = _case(B, H, Tq, Nk, dh, L, offsets)
    ref = dense_reference(*inputs, qc, kc, 0.3)
    out = ca.chunk_attention(*inputs, qc, kc, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    needs = [t for t in inputs if t.numel()]
    for a, b in zip(torch.autograd.grad(out, needs, grad), torch.autograd.grad(ref, needs, grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_invisible_memory_slots_are_ignored():
    """Slots with a huge chunk index (empty cache slots) take no part, whatever they hold."""
    inputs, qc, kc = _case(2, 2, 20, 10, 4, 4, [0, 0])
    kc = kc.clone()
    kc[1, 3:6] = 1 << 60
    out = ca.chunk_attention(*inputs, qc, kc, 0.5)
    q, k, v, ss, sv = (t.detach().clone() for t in inputs)
    k[1, :, 3:6] = 1e6
    v[1, :, 3:6] = -1e6
    out2 = ca.chunk_attention(q, k, v, ss, sv, qc, kc, 0.5)
    torch.testing.assert_close(out.detach(), out2)


def test_blocks_skip_the_masked_half():
    """Each query block reads only keys of chunks before its last query: about half of T x C."""
    T, L = 4096, 16
    qc = (torch.arange(T) // L)[None]
    kc = torch.arange(T // L)[None]
    blocks = ca._query_blocks(qc, kc, T, heads=8)
    read = sum((i1 - i0) * kend for i0, i1, _, kend in blocks)
    assert read <= 0.6 * T * (T // L)
    for i0, i1, kfull, kend in blocks:
        assert kend == int(qc[0, i1 - 1])  # exactly the keys some query of the block sees
        assert kfull == int(qc[0, i0])  # and the mask only covers the block's own triangle
        assert (i1 - i0) * kend * 8 <= ca.MAX_BLOCK_ELEMS


def test_probabilities_kept_only_when_they_fit_and_a_gradient_is_wanted(monkeypatch):
    inputs, qc, kc = _case(1, 2, 64, 16, 4, 4, [0])
    seen = []
    forward = ca.chunk_attention_forward
    monkeypatch.setattr(ca, "chunk_attention_forward", lambda *a: seen.append(a[8]) or forward(*a))
    monkeypatch.setattr(ca, "KEEP_RATIO", float("inf"))
    ca.chunk_attention(*inputs, qc, kc, 1.0)
    with torch.no_grad():
        ca.chunk_attention(*inputs, qc, kc, 1.0)
    monkeypatch.setattr(ca, "KEEP_PROBS", 100)
    ca.chunk_attention(*inputs, qc, kc, 1.0)
    assert seen == [True, False, False]
    # and no more than KEEP_RATIO per query element: the block of 64 queries reads 15 keys (960 scores per
    # head) against 64 x 4 query elements per head, a ratio of 3.75
    monkeypatch.setattr(ca, "KEEP_PROBS", 1 << 27)
    seen.clear()
    for ratio in (3, 4):
        monkeypatch.setattr(ca, "KEEP_RATIO", ratio)
        ca.chunk_attention(*inputs, qc, kc, 1.0)
    assert seen == [False, True]


def test_float32_against_float64():
    inputs, qc, kc = _case(2, 4, 200, 40, 16, 4, [0, 2])
    ref = dense_reference(*inputs, qc, kc, 0.25)
    out = ca.chunk_attention(*(t.detach().float() for t in inputs), qc, kc, 0.25)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("T,Nk,L", [(50, 12, 4), (130, 9, 16), (64, 4, 16), (33, 33, 1), (10, 0, 16), (32, 2, 16),
                                    (300, 80, 4)])
def test_aligned_flash_path_matches_dense_reference(T, Nk, L):
    """aligned_chunk_attention (fused CPU flash kernel, offsets folded into the batch, log-sum-exp merge
    with the running pair): values and gradients exact in float64, partial last chunk included."""
    B, H, dh = 2, 3, 8
    g = torch.Generator().manual_seed(T)
    inputs = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
              for s in [(B, H, T, dh), (B, H, Nk, dh), (B, H, Nk, dh), (B, H, T), (B, H, T, dh)]]
    qc, kc = (torch.arange(T) // L)[None], torch.arange(Nk)[None]
    ref = dense_reference(*inputs, qc, kc, 0.3)
    out = ca.aligned_chunk_attention(*inputs, L, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    needs = [t for t in inputs if t.numel()]
    for a, b in zip(torch.autograd.grad(out, needs, grad), torch.autograd.grad(ref, needs, grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_aligned_flash_path_float32_and_bfloat16():
    inputs, qc, kc = _case(2, 4, 200, 50, 16, 4, [0, 0])
    ref = dense_reference(*inputs, qc, kc, 0.25)
    out = ca.aligned_chunk_attention(*(t.detach().float() for t in inputs), 4, 0.25)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    q, k, v, ss, sv = (t.detach() for t in inputs)
    outb = ca.aligned_chunk_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), ss.float(), sv.float(), 4, 0.25)
    assert outb.dtype == torch.float32 and torch.isfinite(outb).all()
    torch.testing.assert_close(outb.double(), ref, rtol=5e-2, atol=5e-2)


def test_aligned_flash_path_needs_the_chunk_ends():
    inputs, _, _ = _case(1, 1, 40, 2, 4, 4, [0])
    with pytest.raises(ValueError, match="need the final pairs of 9 chunks"):
        ca.aligned_chunk_attention(*inputs, 4, 1.0)


@pytest.mark.parametrize("T,L", [(50, 4), (64, 16)])
def test_aligned_flash_path_with_query_groups(T, L):
    """q with G query groups for H heads (head h reads group h mod G, as RAT tiles them) equals q tiled
    to H heads: values, and gradients (the groups' summed over the heads that read them), float64."""
    B, H, G, dh, Nk = 2, 6, 2, 8, -(-T // L) - 1
    g = torch.Generator().manual_seed(T)
    qg, k, v, ss, sv = [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True)
                        for s in [(B, G, T, dh), (B, H, Nk, dh), (B, H, Nk, dh), (B, H, T), (B, H, T, dh)]]
    out = ca.aligned_chunk_attention(qg, k, v, ss, sv, L, 0.3)
    ref = dense_reference(qg.repeat(1, H // G, 1, 1), k, v, ss, sv, (torch.arange(T) // L)[None],
                          torch.arange(Nk)[None], 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    inputs = [qg, k, v, ss, sv]
    for a, b in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="4 query groups do not divide 6 heads"):
        ca.aligned_chunk_attention(torch.zeros(B, 4, T, dh, dtype=torch.float64), k, v, ss, sv, L, 0.3)


def test_training_takes_the_flash_path_only_where_it_pays_off(monkeypatch):
    """Without gradients the aligned case always takes the flash kernel; with them only from
    FLASH_TRAIN_MIN_TOKENS queries (8192 with AVX-512, else 16384), never where that is None."""
    q = torch.zeros(1, 2, 64, 8, requires_grad=True)
    with torch.no_grad():
        assert ca.use_aligned_flash(q)
    monkeypatch.setattr(ca, "FLASH_TRAIN_MIN_TOKENS", None)
    assert not ca.use_aligned_flash(q)
    monkeypatch.setattr(ca, "FLASH_TRAIN_MIN_TOKENS", 64)
    assert ca.use_aligned_flash(q)
    monkeypatch.setattr(ca, "FLASH_TRAIN_MIN_TOKENS", 65)
    assert not ca.use_aligned_flash(q)
    expected = 8192 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 16384
    monkeypatch.undo()
    assert ca.FLASH_TRAIN_MIN_TOKENS == expected


@pytest.mark.parametrize("keep", [1 << 27, 0], ids=["kept-probs", "recomputed"])
@pytest.mark.parametrize("G", [1, 2])
def test_query_groups_match_tiled_queries(monkeypatch, keep, G):
    """q with G groups (head h reads group h mod G) gives the values of the tiled q, and the gradient of
    each group is the sum of its heads' gradients."""
    monkeypatch.setattr(ca, "QUERY_BLOCK", 16)
    monkeypatch.setattr(ca, "KEEP_PROBS", keep)
    monkeypatch.setattr(ca, "KEEP_RATIO", float("inf"))
    (_, k, v, ss, sv), qc, kc = _case(2, 4, 70, 17, 8, 4, [0, 2])
    qg = torch.randn(2, G, 70, 8, dtype=torch.float64, requires_grad=True)
    tiled = qg.repeat(1, 4 // G, 1, 1)
    inputs = (k, v, ss, sv)
    out = ca.chunk_attention(qg, *inputs, qc, kc, 0.3)
    ref = ca.chunk_attention(tiled, *inputs, qc, kc, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, dense_reference(tiled, *inputs, qc, kc, 0.3), rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (qg, *inputs), grad), torch.autograd.grad(ref, (qg, *inputs), grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="query groups do not divide"):
        ca.chunk_attention(torch.randn(2, 3, 70, 8, dtype=torch.float64), *inputs, qc, kc, 0.3)
