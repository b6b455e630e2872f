"""Reference vs parallel vs token-by-token decode vs prefill split at random points."""
import pytest
import torch
from mixer_helpers import MIXERS, make, mixer_id, random_cuts, run_split

LENGTHS = [1, 3, 4, 16, 17, 37, 64]


def _x(B, T, seed=1, dtype=torch.float64):
    return torch.randn(B, T, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("spec", MIXERS, ids=mixer_id)
@pytest.mark.parametrize("T", LENGTHS)
def test_all_paths_agree(spec, T, rng):
    kind, kw = spec
    m = make(kind, **kw)
    x = _x(2, T)
    ref = m.__class__._naive(m, x)  # per-token loops of the spec
    par = m(x)
    torch.testing.assert_close(par, ref, rtol=1e-10, atol=1e-12)
    step, c_step = run_split(m, x, list(range(1, T)))
    split, c_split = run_split(m, x, random_cuts(T, rng))
    whole, c_whole = run_split(m, x, [])
    for out in (step, split, whole):
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for c in (c_step, c_split):  # the same cache content whichever way it was filled
        for name, t in c_whole.tensors().items():
            torch.testing.assert_close(c.tensors()[name], t, rtol=1e-10, atol=1e-12, msg=name)
        assert torch.equal(c.seen, c_whole.seen)


@pytest.mark.parametrize("spec", MIXERS, ids=mixer_id)
def test_gradients_agree(spec, rng):
    kind, kw = spec
    m = make(kind, **kw)
    T = 23
    x = _x(2, T).requires_grad_()
    params = list(m.parameters())
    g = _x(2, T, seed=5)
    ref = m.__class__._naive(m, x)
    expected = torch.autograd.grad(ref, [x, *params], g)
    for cuts in ([], [5, 6, 7, 16], random_cuts(T, rng)):
        out = m(x) if not cuts else run_split(m, x, cuts)[0]
        got = torch.autograd.grad(out, [x, *params], g)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spec", MIXERS, ids=mixer_id)
def test_float32_matches_float64_reference(spec):
    kind, kw = spec
    m = make(kind, **kw)
    x = _x(2, 45)
    ref = m.__class__._naive(m, x)
    m32 = m.float()
    out = m32(x.float())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    dec, _ = run_split(m32, x.float(), [10, 11, 12, 30])
    torch.testing.assert_close(dec.double(), ref, rtol=1e-5, atol=1e-5)


def test_rat_cache_holds_chunk_ends_and_running_pair():
    """Cache = rotated final (k~, v~) of each completed chunk + running pair, per the spec."""
    from ratlm.ops.naive import naive_gated_scan, tile_groups
    from ratlm.ops.rope import apply_rope, rope_cos_sin

    m = make("rat", chunk_size=4, qk_groups=2)
    x = _x(1, 14)
    _, cache = run_split(m, x, [3, 9])
    z, v, u, q, k = m._project(x)
    kk = naive_gated_scan(tile_groups(k, 32), u, 4)
    vv = naive_gated_scan(v, u, 4)
    ends = kk[:, 3::4].view(1, 3, 4, 8)
    cos, sin = rope_cos_sin(torch.arange(3), 8, dtype=torch.float64)
    ends = apply_rope(ends, cos[:, None], sin[:, None]).transpose(1, 2)
    st = cache.tensors()
    torch.testing.assert_close(st["keys"], ends)
    torch.testing.assert_close(st["values"], vv[:, 3::4].view(1, 3, 4, 8).transpose(1, 2))
    torch.testing.assert_close(st["running"], torch.stack([kk[:, -1], vv[:, -1]], 1))
    assert cache.nbytes() == (2 * 3 * 32 + 2 * 32) * 8


@pytest.mark.parametrize("spec", MIXERS, ids=mixer_id)
def test_left_padding_changes_nothing(spec):
    kind, kw = spec
    m = make(kind, **kw)
    lens = [13, 7, 1, 10]
    B, T = len(lens), max(lens)
    rows = [_x(1, n, seed=10 + i) for i, n in enumerate(lens)]
    x = torch.randn(B, T, 32, dtype=torch.float64) * 100  # garbage at the pads
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lens):
        x[b, T - n :] = rows[b][0]
        mask[b, T - n :] = 1
    y = m(x, attention_mask=mask)
    for b, n in enumerate(lens):
        torch.testing.assert_close(y[b, T - n :], m(rows[b])[0], rtol=1e-10, atol=1e-12)
    assert (y[mask == 0] == 0).all()
    # same through a cache, then decode steps and a prefill continuation, against each row alone
    cache = m.init_cache(B)
    y1 = m(x, cache=cache, attention_mask=mask)
    ext = _x(B, 9, seed=99)
    y2 = torch.cat([m(ext[:, i : i + 1], cache=cache) for i in range(3)] + [m(ext[:, 3:], cache=cache)], 1)
    for b, n in enumerate(lens):
        alone = m(torch.cat([rows[b], ext[b : b + 1]], 1))[0]
        torch.testing.assert_close(y1[b, T - n :], alone[:n], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y2[b], alone[n:], rtol=1e-10, atol=1e-12)
    assert cache.seen.tolist() == [n + 9 for n in lens]


@pytest.mark.parametrize("spec", MIXERS, ids=mixer_id)
def test_padding_in_later_calls_and_gradients(spec):
    """A mask on a continuation call (rows that skip tokens) and gradients through it."""
    kind, kw = spec
    m = make(kind, **kw)
    x = _x(2, 12).requires_grad_()
    cache = m.init_cache(2)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, :3] = 0
    y_a = m(x[:, :5], cache=cache)
    y_b = m(x[:, 5:], cache=cache, attention_mask=mask)
    alone0 = m(x[:1])
    alone1 = m(torch.cat([x[1:, :5], x[1:, 8:]], 1))
    torch.testing.assert_close(torch.cat([y_a[0], y_b[0]]), alone0[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.cat([y_a[1], y_b[1, 3:]]), alone1[0], rtol=1e-10, atol=1e-12)
    g = torch.randn(2, 12, 32, dtype=torch.float64)
    got = torch.autograd.grad(torch.cat([y_a, y_b], 1), x, g)[0]
    want = torch.autograd.grad(alone0, x, g[:1])[0] + torch.autograd.grad(
        alone1, x, torch.cat([g[1:, :5], g[1:, 8:]], 1))[0]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flash", ["flash-always", "blocked-only"])
def test_rat_gradients_through_either_attention_kernel(flash, monkeypatch):
    """The RAT layer's training path through the fused flash kernel (forced at any length) and through
    the blocked kernel (flash off): values and gradients against the spec's loops."""
    from ratlm.ops import chunk_attention as ca

    monkeypatch.setattr(ca, "FLASH_TRAIN_MIN_TOKENS", 0)
    monkeypatch.setattr(ca, "USE_FLASH", flash == "flash-always")
    for kw, T in ((dict(chunk_size=4), 23), (dict(chunk_size=1), 9), (dict(chunk_size=8, qk_groups=1), 40)):
        m = make("rat", **kw)
        x = _x(2, T).requires_grad_()
        params = list(m.parameters())
        g = _x(2, T, seed=5)
        ref = m.__class__._naive(m, x)
        out = m(x)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        for a, b in zip(torch.autograd.grad(out, [x, *params], g), torch.autograd.grad(ref, [x, *params], g)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_window_decode_steps_of_rows_at_different_positions(monkeypatch):
    """The sliding window's decode step with every row at its own position (a serving batch) runs in the
    step itself, not through the prefill path, and matches each row alone: rings empty, partly filled,
    just full and wrapped around."""
    m = make("window", window=4)
    lens = [1, 3, 4, 5, 11]
    B, T = len(lens), max(lens)
    rows = [_x(1, n, seed=20 + i) for i, n in enumerate(lens)]
    x = torch.zeros(B, T, 32, dtype=torch.float64)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lens):
        x[b, T - n:] = rows[b][0]
        mask[b, T - n:] = 1
    cache = m.init_cache(B)
    m(x, cache=cache, attention_mask=mask)
    assert not cache.uniform
    ext = _x(B, 7, seed=98)

    def no_prefill(*a, **k):
        raise AssertionError("a decode step went through the prefill path")

    monkeypatch.setattr(m, "_prefill", no_prefill)
    y = torch.cat([m(ext[:, i:i + 1], cache=cache) for i in range(7)], 1)
    for b, n in enumerate(lens):
        want = make("window", window=4)(torch.cat([rows[b], ext[b:b + 1]], 1))[0, n:]
        torch.testing.assert_close(y[b], want, rtol=1e-10, atol=1e-12)
