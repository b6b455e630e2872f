"""The gated linear scan: h_t = g_t * h_(t-1) + (1 - g_t) * x_t, restarting at chunk boundaries.

Exact and stable: only products and sums of numbers the recurrence itself multiplies (no division,
no logarithms), so gates at 0 or 1 are fine. Work is O(T) with O(block * log_block T) Python steps:
tokens are split into blocks that are scanned in parallel, then the block carries are scanned the
same way (recursively) and added back. When chunks are short and aligned, each chunk is one block
and there are no carries at all.

The backward is another scan of the same kind run in reverse (the adjoint recurrence), a slice of time
at a time (SLICE_TOKENS), and saves only the inputs and the output.
"""
from __future__ import annotations

import torch

from .dtypes import autocast_off, up

BLOCK = 16  # tokens per block in the hierarchical scan
MAX_ALIGNED_CHUNK = 64  # longer chunks take the hierarchical scan (fewer Python steps)
SLICE_TOKENS = 1024  # tokens (x batch) per slice of whole chunks that the chunk scan works on at a time


def _block_scan(a, b):
    """Scan each block from a zero state. a: (B, N, s, *Fa), b: (B, N, s, *F).

    Returns the states h (like b) and the running products A (like a): h_j = a_j h_(j-1) + b_j and
    A_j = a_0 ... a_j, so that a nonzero state c before the block adds A_j * c.
    """
    h = torch.empty_like(b)
    A = torch.empty_like(a)
    h[:, :, 0] = b[:, :, 0]
    A[:, :, 0] = a[:, :, 0]
    for j in range(1, b.shape[2]):
        torch.addcmul(b[:, :, j], a[:, :, j], h[:, :, j - 1], out=h[:, :, j])
        torch.mul(A[:, :, j - 1], a[:, :, j], out=A[:, :, j])
    return h, A


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = a_t * h_(t-1) + b_t along dim 1, h_(-1) = h0 (or 0). a broadcastable to b. No autograd."""
    B, T = b.shape[:2]
    if T <= BLOCK:
        h = torch.empty_like(b)
        prev = h0
        for t in range(T):
            prev = b[:, t] if prev is None else torch.addcmul(b[:, t], a[:, t], prev)
            h[:, t] = prev
        return h
    pad = (-T) % BLOCK
    if pad:  # padding at the end never touches earlier states
        a = torch.cat([a, a.new_ones(a.shape[0], pad, *a.shape[2:])], 1)
        b = torch.cat([b, b.new_zeros(B, pad, *b.shape[2:])], 1)
    N = (T + pad) // BLOCK
    h, A = _block_scan(a.reshape(a.shape[0], N, BLOCK, *a.shape[2:]), b.reshape(B, N, BLOCK, *b.shape[2:]))
    # carries: state at the end of each block, given the carries before it
    ends = linear_scan(A[:, :, -1], h[:, :, -1], h0)
    carry = torch.cat([b.new_zeros(B, 1, *b.shape[2:]) if h0 is None else h0[:, None], ends[:, :-1]], 1)
    h = h.addcmul_(A, carry[:, :, None])
    return h.reshape(B, N * BLOCK, *b.shape[2:])[:, :T]


def _shift_right(h, first):
    """(h_(-1) = first, h_0, ..., h_(T-2)) along dim 1."""
    return torch.cat([first[:, None].expand(h.shape[0], 1, *h.shape[2:]), h[:, :-1]], 1)


class _ChunkScan(torch.autograd.Function):
    """The common case: chunks of length L start at token 0 and every state starts from zero.

    Works in the chunked layout (B, C, L, 2, D): the scan is L - 1 fused multiply-adds over all
    chunks. Scans keys and values together with one gate (the RAT layer); keys come at group width
    G*dh and are tiled to D here (head h uses group h mod G), so the tiled copy is never stored.
    Chunks are independent, so it runs a slice of them at a time (SLICE_TOKENS) and keeps only its
    inputs for the backward, which scans each slice again: the running pairs are not kept."""

    @staticmethod
    @autocast_off
    def forward(ctx, k, v, u, L, q, dh):
        B, T, D = v.shape
        pad = (-T) % L
        kc, vc, uc = (_chunked(up(t), L, pad) for t in (k, v, u))
        C, Gd = kc.shape[1], k.shape[-1]
        R = D // Gd
        acc = uc.dtype
        vt = torch.empty(B, C, L, D, dtype=acc, device=uc.device)
        k_end = torch.empty(B, T // L, D, dtype=acc, device=uc.device)
        if q is None:  # the running keys themselves
            first = torch.empty(B, C, L, D, dtype=acc, device=uc.device)
        else:  # their scores with the queries: (B, C, L, H), head r * G + g
            qc, G = _chunked(up(q), L, pad), Gd // dh
            first = torch.empty(B, C, L, R * G, dtype=acc, device=uc.device)
        n = max(1, SLICE_TOKENS // (B * L))
        for c0 in range(0, C, n):
            c1 = min(C, c0 + n)
            h = _scan_slice(kc[:, c0:c1], vc[:, c0:c1], uc[:, c0:c1])
            m = c1 - c0
            if q is None:
                first[:, c0:c1] = h[:, :, :, 0]
            else:
                kq = h[:, :, :, 0].reshape(B, m, L, R, G, dh) * qc[:, c0:c1].view(B, m, L, 1, G, dh)
                torch.sum(kq, -1, out=first[:, c0:c1].view(B, m, L, R, G))
            vt[:, c0:c1] = h[:, :, :, 1]
            e1 = min(c1, T // L)
            if e1 > c0:
                k_end[:, c0:e1] = h[:, : e1 - c0, L - 1, 0]
        ctx.save_for_backward(k, v, u, q)
        ctx.L, ctx.pad, ctx.dh = L, pad, dh
        return first.flatten(1, 2)[:, :T], vt.flatten(1, 2)[:, :T], k_end, vt[:, : T // L, L - 1]

    @staticmethod
    @autocast_off
    def backward(ctx, d_first, dv_run, dk_end, dv_end):
        k, v, u, q = ctx.saved_tensors
        L, pad, dh = ctx.L, ctx.pad, ctx.dh
        B, T, D = v.shape
        kc, vc, uc = (_chunked(up(t), L, pad) for t in (k, v, u))
        C, Gd = kc.shape[1], k.shape[-1]
        R = D // Gd
        acc = uc.dtype
        dk = torch.empty(B, C, L, Gd, dtype=acc, device=uc.device)
        dv = torch.empty(B, C, L, D, dtype=acc, device=uc.device)
        du = torch.empty(B, C, L, D, dtype=acc, device=uc.device)
        dk_run, dss = (d_first, None) if q is None else (None, d_first)
        grads = [None if d is None else _chunked(up(d), L, pad) for d in (dk_run, dv_run)]
        if dss is not None:  # the scores' gradient: to the running keys, slice by slice, and to the queries
            dss, qc, G = _chunked(up(dss), L, pad), _chunked(up(q), L, pad), Gd // dh
            dq = torch.empty(B, C, L, Gd, dtype=acc, device=uc.device)
        ends = (dk_end, dv_end)
        # a few chunks at a time: the running pairs scanned again, the adjoint and the gate buffers a slice long
        n = max(1, SLICE_TOKENS // (B * L))
        for c0 in range(0, C, n):
            c1 = min(C, c0 + n)
            m = c1 - c0
            h = _scan_slice(kc[:, c0:c1], vc[:, c0:c1], uc[:, c0:c1])
            r = torch.zeros(B, m, L, 2, D, dtype=acc, device=uc.device)
            for i, d in enumerate(grads):
                if d is not None:
                    r[:, :, :, i] = d[:, c0:c1]
            for i, d in enumerate(ends):
                e1 = min(c1, T // L)
                if d is not None and e1 > c0:
                    r[:, : e1 - c0, L - 1, i] += d[:, c0:e1]
            if dss is not None:
                ds = dss[:, c0:c1].view(B, m, L, R, G, 1)
                r[:, :, :, 0].view(B, m, L, R, G, dh).addcmul_(ds, qc[:, c0:c1].view(B, m, L, 1, G, dh))
                torch.sum(ds * h[:, :, :, 0].reshape(B, m, L, R, G, dh), 3, out=dq[:, c0:c1].view(B, m, L, G, dh))
            _chunk_scan_adjoint(r, kc[:, c0:c1], vc[:, c0:c1], uc[:, c0:c1], h,
                                dk[:, c0:c1], dv[:, c0:c1], du[:, c0:c1])
        unchunk = lambda x, like: x.flatten(1, 2)[:, :T].to(like.dtype)  # noqa: E731
        return (unchunk(dk, k), unchunk(dv, v), unchunk(du, u), None, None if q is None else unchunk(dq, q),
                None)


def _scan_slice(kc, vc, uc):
    """Running pairs (B, n, L, 2, D) of a run of whole chunks; kc at group width, tiled to D."""
    B, n, L, D = uc.shape
    Gd = kc.shape[-1]
    R = D // Gd
    h = torch.empty(B, n, L, 2, D, dtype=uc.dtype, device=uc.device)
    om = torch.sigmoid(-uc)  # 1 - g without cancellation
    torch.mul(om.view(B, n, L, R, Gd), kc[:, :, :, None], out=h[:, :, :, 0].view(B, n, L, R, Gd))
    torch.mul(om, vc, out=h[:, :, :, 1])
    g2 = torch.sigmoid(uc, out=om)[:, :, :, None]
    for j in range(1, L):
        h[:, :, j].addcmul_(g2[:, :, j], h[:, :, j - 1])
    return h


def kv_chunk_scan(k: torch.Tensor, v: torch.Tensor, gate_logits: torch.Tensor, chunk_size: int,
                  q: torch.Tensor | None = None,
                  head_dim: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The RAT layer's scan from a fresh start: keys and values through the same gate, restarting
    at every multiple of chunk_size. k: (B, T, G*dh), tiled to D inside; v, gate_logits: (B, T, D).

    Returns (k~, v~) running pairs (B, T, D) and the final pairs of the T // chunk_size complete
    chunks (B, C, D), in float32 (float64 for float64). Differentiable in all inputs.

    With queries q (B, T, G*dh) and head_dim, the first output is not k~ but each head's score with
    the queries, s[b, t, h] = q[b, t, group h mod G] . k~[b, t, head h] (B, T, H): the running keys
    then never leave the scan, and nothing of them is kept for the backward."""
    if q is not None and (head_dim is None or q.shape[-1] != k.shape[-1] or q.shape[-1] % head_dim):
        raise ValueError(f"queries of width {q.shape[-1]} need a head_dim dividing it and the keys' width "
                         f"{k.shape[-1]}")
    return _ChunkScan.apply(k, v, gate_logits, int(chunk_size), q, head_dim)


def _chunk_scan_adjoint(r, kc, vc, uc, h, dk, dv, du):
    """The chunk scan's backward for a run of whole chunks, writing dk, dv, du (views of the outputs).
    r: (B, n, L, 2, D) the incoming gradients of the running pairs, turned into the adjoint in place."""
    B, n, L, _, D = r.shape
    Gd = kc.shape[-1]
    R = D // Gd
    g = torch.sigmoid(uc)
    g2 = g[:, :, :, None]
    for j in range(L - 2, -1, -1):  # adjoint: r_t = dh_t + g_(t+1) r_(t+1) within the chunk
        r[:, :, j].addcmul_(g2[:, :, j + 1], r[:, :, j + 1])
    # d h_t / d g_t = h_(t-1) - x_t (h_(-1) = 0 at each chunk start), summed over the pair, one half at a time
    t = torch.empty_like(g)
    for i, x in enumerate((kc[:, :, :, None], vc)):
        ti = t.view(B, n, L, R, Gd) if i == 0 else t
        hi = h[:, :, :, i].view(B, n, L, R, Gd) if i == 0 else h[:, :, :, i]
        ti[:, :, :1].copy_(x[:, :, :1]).neg_()
        torch.sub(hi[:, :, :-1], x[:, :, 1:], out=ti[:, :, 1:])
        if i == 0:
            torch.mul(t, r[:, :, :, 0], out=du)
        else:
            du.addcmul_(t, r[:, :, :, 1])
    du.mul_(g)
    om = torch.sigmoid(torch.neg(uc, out=t), out=t)  # 1 - g without cancellation
    du.mul_(om)
    torch.mul(r[:, :, :, 1], om, out=dv)
    torch.mul(r[:, :, :, 0], om, out=r[:, :, :, 0])
    torch.sum(r[:, :, :, 0].view(B, n, L, R, Gd), 3, out=dk)


def _chunked(t, L, pad):
    """(B, T, ...) -> (B, C, L, ...), padding the end with zeros."""
    if pad:
        t = torch.cat([t, t.new_zeros(t.shape[0], pad, *t.shape[2:])], 1)
    return t.reshape(t.shape[0], -1, L, *t.shape[2:])


class _GatedScan(torch.autograd.Function):
    @staticmethod
    @autocast_off
    def forward(ctx, x, u, keep, h0):
        # keep: float 0/1 (B, T, 1, ...) or None; zero where the state restarts.
        x32 = up(x)
        g = torch.sigmoid(up(u)).to(x32.dtype)
        x1 = torch.sigmoid(-up(u)).to(x32.dtype) * x32  # (1 - g) x without cancellation near g = 1
        a = g if keep is None else g * keep
        if a.shape[1] != x.shape[1]:  # one gate for every position
            a = a.expand(a.shape[0], x.shape[1], *a.shape[2:])
        h = linear_scan(a, x1, None if h0 is None else h0.to(x32.dtype))
        ctx.save_for_backward(x, u, keep, h0, h)
        return h

    @staticmethod
    @autocast_off
    def backward(ctx, dh):
        x, u, keep, h0, h = ctx.saved_tensors
        dh = up(dh)
        B, T = dh.shape[:2]
        dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        du = torch.empty(u.shape, dtype=u.dtype, device=u.device) if u.shape[1] > 1 else None
        du_sum = None
        # the adjoint r_t = dh_t + a_(t+1) r_(t+1), a slice of time at a time from the end, so that every
        # (B, T, ...) term of the backward but dx and du lives a slice long
        n = max(BLOCK, SLICE_TOKENS // max(1, B))
        r_next = a_next = None  # r and a at the first position after the slice
        for t0 in reversed(range(0, T, n)):
            t1 = min(T, t0 + n)
            ui = up(u[:, t0:t1] if u.shape[1] > 1 else u)
            g = torch.sigmoid(ui).to(dh.dtype)
            one_minus_g = torch.sigmoid(-ui).to(dh.dtype)
            ki = None if keep is None else keep[:, t0:t1]
            a = g if ki is None else g * ki
            a = a.expand(a.shape[0], t1 - t0, *a.shape[2:]) if a.shape[1] != t1 - t0 else a
            after = torch.zeros_like(a[:, :1]) if a_next is None else a_next  # a_T = 0 ends the recurrence
            shifted = torch.cat([a[:, 1:], after], 1)  # a_(t+1)
            r = linear_scan(shifted.flip(1), dh[:, t0:t1].flip(1), r_next).flip(1)
            if t0 == 0:
                first = h.new_zeros(h.shape[0], *h.shape[2:]) if h0 is None else h0.to(h.dtype).expand_as(h[:, 0])
            else:
                first = h[:, t0 - 1]
            prev = _shift_right(h[:, t0:t1], first)
            if ki is not None:
                prev = prev * ki
            dx[:, t0:t1] = r * one_minus_g
            dui = r * (prev - x[:, t0:t1].to(h.dtype)) * g * one_minus_g
            if u.shape[1] > 1:
                du[:, t0:t1] = dui.sum_to_size(u[:, t0:t1].shape)
            else:  # one gate for every position: the slices add up
                part = dui.sum_to_size(u.shape)
                du_sum = part if t1 == T else du_sum + part
            r_next, a_next = r[:, 0], a[:, :1]
        if u.shape[1] == 1:
            du = du_sum.to(u.dtype)
        dh0 = None
        if h0 is not None and ctx.needs_input_grad[3]:
            dh0 = (r_next * a_next[:, 0]).sum_to_size(h0.shape).to(h0.dtype)
        return dx, du, None, dh0


def gated_scan(x: torch.Tensor, gate_logits: torch.Tensor, chunk_size: int | None = None,
               start: int | torch.Tensor | None = None, initial: torch.Tensor | None = None) -> torch.Tensor:
    """h_t = g_t * h_(t-1) + (1 - g_t) * x_t with g = sigmoid(gate_logits), in float32
    (float64 for float64 inputs).

    x: (B, T, *F), gate_logits broadcastable to x (computed in float32 whatever x's dtype).
    chunk_size: restart the state at every absolute position that is a multiple of it (None: never).
    start: tokens already seen per row before x_0 (int or (B,) tensor): sets where chunks begin.
    initial: (B, *F) state before x_0 (ignored where x_0 begins a chunk).
    Returns (B, T, *F) in float32 (float64 for float64 x). Differentiable in x, gate_logits and initial.
    """
    if x.dim() < 2:
        raise ValueError(f"gated_scan needs x of shape (B, T, ...), got {tuple(x.shape)}")
    B, T = x.shape[:2]
    keep = None
    if chunk_size is not None:
        pos = torch.arange(T, device=x.device)[None]
        if start is not None:
            st = torch.as_tensor(start, device=x.device)
            pos = pos + (st[:, None] if st.dim() else st)
        keep = (pos % chunk_size != 0).to(up(x).dtype)
        keep = keep.reshape(*keep.shape, *([1] * (x.dim() - 2)))
    return _GatedScan.apply(x, gate_logits, keep, initial)
