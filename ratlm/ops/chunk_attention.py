"""RAT's inter-chunk attention with its current-token term, blocked over queries (flash style).

Query i reads the memory keys j whose chunk index is below its own, plus its own running pair:

    o_i = softmax([q_i . k_j * scale  (k_chunk[j] < q_chunk[i]) ; s_i]) @ [v_j ; u_i]

with s_i = q_i . k~_i * scale (passed in as `self_score`) and u_i = v~_i (`self_value`). Queries are
processed in blocks; each block only reads the keys some query in it can see, so the masked half is
skipped and nothing of size T x T (or T x C) is ever held. The backward recomputes the scores from
the saved log-sum-exp (flash style), except on CPU when all the blocks' probabilities together fit in
KEEP_PROBS elements and KEEP_RATIO per query element: then the forward keeps them and the backward
skips one of its five matmuls and the exponentials (the recompute is a sixth of the time); every other
query-sized term of the backward, and the queries of grouped heads, are formed a block at a time. Scores
and softmax are float32 (float64 for float64 inputs).
"""
from __future__ import annotations

import torch

from .dtypes import acc_dtype, autocast_off

QUERY_BLOCK = 512
MAX_BLOCK_ELEMS = 1 << 22  # cap on heads x queries x keys held at once per block
KEEP_PROBS = 1 << 27  # CPU: keep the forward's probabilities for the backward up to this many (fp32: 512 MiB)
# ... and up to this many per element of the queries (B * H * Tq * dh): kept probabilities then cost at most two
# query-sized tensors, so that memory stays linear in T (RAT(16), D = 512, 8 heads: kept up to T = 4096)
KEEP_RATIO = 2


def _query_blocks(q_chunk, k_chunk, Tq, heads):
    """[(i0, i1, kfull, kend)] query blocks: keys >= kend are invisible to every query in i0:i1, keys
    below kfull are visible to all of them, and only keys in [kfull, kend) need the mask."""
    Nk = k_chunk.shape[-1]
    if Nk == 0:
        return [(i0, min(i0 + QUERY_BLOCK, Tq), 0, 0) for i0 in range(0, Tq, QUERY_BLOCK)]
    bq = max(1, min(QUERY_BLOCK, MAX_BLOCK_ELEMS // max(1, heads * Nk)))
    starts = list(range(0, Tq, bq))
    qmax = torch.stack([q_chunk[:, i0 : i0 + bq].amax(1) for i0 in starts], 1)  # (B, nblk)
    qmin = torch.stack([q_chunk[:, i0 : i0 + bq].amin(1) for i0 in starts], 1)
    some = (k_chunk[:, None, :] < qmax[:, :, None]).any(0)  # (nblk, Nk): seen by some query
    every = (k_chunk[:, None, :] < qmin[:, :, None]).all(0)  # seen by every query
    idx = torch.arange(1, Nk + 1, device=k_chunk.device)
    kend = (some * idx).amax(1)
    kfull = torch.cumprod(every.to(torch.int8), 1).sum(1)
    return [(i0, min(i0 + bq, Tq), int(f), int(e)) for i0, f, e in zip(starts, kfull.tolist(), kend.tolist())]


def _tile_heads(t, H):
    """(B, G, ...) query groups -> (B, H, ...): head h reads group h mod G (no copy when G == H)."""
    G = t.shape[1]
    return t if G == H else t.repeat(1, H // G, *([1] * (t.dim() - 2)))


def _scaled(q, acc, scale):
    q = q.to(acc)
    return q if scale == 1.0 else q * scale


def _block_scores(qs, k, q_chunk, k_chunk, i0, i1, kfull, kend):
    """Scores of queries i0:i1 over keys :kend, -inf where invisible (qs: queries times the scale, at
    their group width)."""
    s = torch.matmul(_tile_heads(qs[:, :, i0:i1], k.shape[1]), k[:, :, :kend].to(qs.dtype).transpose(-1, -2))
    if kfull < kend:  # the mask only touches the last few keys
        visible = k_chunk[:, None, kfull:kend] < q_chunk[:, i0:i1, None]
        s[..., kfull:kend].masked_fill_(~visible[:, None], float("-inf"))
    return s


def chunk_attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, self_score: torch.Tensor,
                            self_value: torch.Tensor, q_chunk: torch.Tensor, k_chunk: torch.Tensor, scale: float,
                            keep: bool = False, blocks: list[tuple[int, int, int, int]] | None = None) -> tuple:
    """Returns (out (B, H, Tq, dh), lse (B, H, Tq)) in float32 (float64 for float64), and with keep
    also (probs, denom): each block's unnormalised probabilities exp(score - max) (0 where masked) and
    the row sums they are divided by (B, H, Tq, 1). No autograd."""
    B, _, Tq, dh = q.shape
    H = k.shape[1]
    acc = acc_dtype(q.dtype)
    qs = _scaled(q, acc, scale)
    # (B, Tq, H, dh) in memory, so (B, Tq, H * dh) is a free view for the caller
    out = torch.empty(B, Tq, H, dh, dtype=acc, device=q.device).transpose(1, 2)
    lse = torch.empty(B, H, Tq, dtype=acc, device=q.device)
    probs, denoms = [], torch.ones(B, H, Tq, 1, dtype=acc, device=q.device) if keep else None
    for i0, i1, kfull, kend in blocks or _query_blocks(q_chunk, k_chunk, Tq, H):
        ss = self_score[:, :, i0:i1, None].to(acc)
        sv = self_value[:, :, i0:i1].to(acc)
        if kend == 0:  # only the running pair: softmax of one term
            out[:, :, i0:i1] = sv
            lse[:, :, i0:i1] = ss[..., 0]
            continue
        s = _block_scores(qs, k, q_chunk, k_chunk, i0, i1, kfull, kend)
        m = torch.maximum(s.amax(-1, keepdim=True), ss)
        p = s.sub_(m).exp_()
        ps = torch.exp(ss - m)
        denom = p.sum(-1, keepdim=True) + ps
        o = torch.matmul(p, v[:, :, :kend].to(acc)).addcmul_(ps, sv)
        torch.div(o, denom, out=out[:, :, i0:i1])
        lse[:, :, i0:i1] = (m + denom.log())[..., 0]
        if keep:
            probs.append(p)
            denoms[:, :, i0:i1] = denom
    return (out, lse, (probs, denoms)) if keep else (out, lse)


def _score_count(blocks, batch, heads):
    """Score elements the forward computes in these blocks (what keeping the probabilities costs)."""
    return batch * heads * sum((i1 - i0) * kend for i0, i1, _, kend in blocks)


class _ChunkAttention(torch.autograd.Function):
    @staticmethod
    @autocast_off
    def forward(ctx, q, k, v, self_score, self_value, q_chunk, k_chunk, scale, keep):
        B, _, Tq, dh = q.shape
        H = k.shape[1]
        blocks = _query_blocks(q_chunk, k_chunk, Tq, H)
        count = _score_count(blocks, B, H)
        keep = keep and q.device.type == "cpu" and count <= KEEP_PROBS and count <= KEEP_RATIO * B * H * Tq * dh
        out, lse, *kept = chunk_attention_forward(q, k, v, self_score, self_value, q_chunk, k_chunk, scale, keep,
                                                  blocks)
        ctx.save_for_backward(q, k, v, self_score, self_value, q_chunk, k_chunk, out, lse)
        ctx.kept = kept[0] if kept else None
        ctx.blocks = blocks
        ctx.scale = scale
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        q, k, v, self_score, self_value, q_chunk, k_chunk, out, lse = ctx.saved_tensors
        scale, kept = ctx.scale, ctx.kept
        ctx.kept = None
        B, G, Tq, dh = q.shape
        H = k.shape[1]
        acc = acc_dtype(q.dtype)
        dout = dout.to(acc)
        qs = _scaled(q, acc, scale)
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, Tq, 1)
        dq = torch.empty(B, G, Tq, dh, dtype=acc, device=q.device)
        dk = torch.zeros(k.shape, dtype=acc, device=q.device)
        dv = torch.zeros(v.shape, dtype=acc, device=q.device)
        ps = torch.exp(self_score.to(acc) - lse)[..., None]
        dss = ps * ((dout * self_value.to(acc)).sum(-1, keepdim=True) - delta)
        dsv = ps * dout
        kf, vf = k.to(acc), v.to(acc)  # memory-sized (small); the query-sized terms are formed per block, so that
        # the backward holds no extra (B, H, Tq, dh) tensors besides dq and dsv
        probs = denom = None
        if kept is not None:  # the forward's exp(score - max) and the row sums they are divided by
            probs, denom = iter(kept[0]), kept[1]
        for i0, i1, kfull, kend in ctx.blocks:
            if kend == 0:
                dq[:, :, i0:i1] = 0
                continue
            qb = _tile_heads(qs[:, :, i0:i1], H)
            if probs is not None:
                p = next(probs).div_(denom[:, :, i0:i1])  # the probabilities
            else:  # recomputed: exp(score - lse)
                p = torch.matmul(qb, kf[:, :, :kend].transpose(-1, -2)).sub_(lse[:, :, i0:i1, None])
                if kfull < kend:
                    visible = k_chunk[:, None, kfull:kend] < q_chunk[:, i0:i1, None]
                    p[..., kfull:kend].masked_fill_(~visible[:, None], float("-inf"))
                p.exp_()
            db = dout[:, :, i0:i1]
            ds = torch.matmul(db, vf[:, :, :kend].transpose(-1, -2)).sub_(delta[:, :, i0:i1]).mul_(p)  # d(score)/scale
            if G == H:
                torch.matmul(ds, kf[:, :, :kend], out=dq[:, :, i0:i1])
            else:  # the heads of a group add up
                dq[:, :, i0:i1] = torch.matmul(ds, kf[:, :, :kend]).unflatten(1, (H // G, G)).sum(1)
            dk[:, :, :kend] += torch.matmul(ds.transpose(-1, -2), qb)
            dv[:, :, :kend] += torch.matmul(p.transpose(-1, -2), db)
        dq.mul_(scale)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dss[..., 0].to(self_score.dtype),
                dsv.to(self_value.dtype), None, None, None, None)


def chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, self_score: torch.Tensor,
                    self_value: torch.Tensor, q_chunk: torch.Tensor, k_chunk: torch.Tensor,
                    scale: float) -> torch.Tensor:
    """Differentiable inter-chunk attention (see the module docstring).

    q: (B, H, Tq, dh), or (B, G, Tq, dh) with G dividing H: query groups, head h reading group h mod G
    (RAT's grouped queries, tiled a block at a time instead of stored H / G times); k, v: (B, H, Nk, dh)
    memory (final pairs of completed chunks, keys already rotated); self_score: (B, H, Tq) scaled logit
    of each query with its own running key; self_value: (B, H, Tq, dh); q_chunk: (B or 1, Tq) and
    k_chunk: (B or 1, Nk) integer chunk indices.
    Returns float32 (B, H, Tq, dh).
    """
    if k.shape[1] % q.shape[1]:
        raise ValueError(f"{q.shape[1]} query groups do not divide {k.shape[1]} heads")
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, self_score, self_value))
    return _ChunkAttention.apply(q, k, v, self_score, self_value, q_chunk, k_chunk, scale, keep)


def needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# --- the aligned case through PyTorch's fused CPU flash kernel -------------------------------------------
#
# When the queries are tokens 0..T-1 (chunk of token t: t // L) and the memory is the final pairs of
# the complete chunks in order, the queries at offset l of their chunk (l = 0..L-1), one per chunk,
# see exactly the keys of the earlier chunks: query chunk c sees keys 0..c-1. Dropping chunk 0 (whose
# tokens only see their own running pair), query chunk c = 1.. against keys 0.. is plain causal
# attention of equal lengths. So, per batch row, the H heads become the kernel's batch and the L offsets
# its query heads over one shared key/value head (grouped-query attention): one causal flash call reads
# the queries, outputs and gradients in place through strided views (no copies, the memory not
# repeated L times), and the running pair joins through a log-sum-exp merge. The backward is the flash
# backward called with the merged output and log-sum-exp: exp(score - lse) are then the probabilities
# of the full softmax and rowsum(dout * out) its delta, so the key/value/query gradients of the memory
# part come out exact (the kernel sums the key/value gradients over the L query heads); the running
# pair's own gradients are two elementwise lines.

USE_FLASH = True  # RAT layers take aligned_chunk_attention where it applies (False: the blocked kernel everywhere)
# With gradients, the flash backward pays off on long sequences: on an AVX-512/AMX Xeon it was slower than the
# blocked kernel at T = 1024 and 4096 and faster at 16384; on an AVX2 EPYC (fp32, A/B in one process) slower up to
# 8192 (0.75 s against 0.69 s), level at 16384 (1.92 s against 1.93 s) and faster at 32768 (5.05 s against
# 5.47 s). Both keep the queries at group width and the blocked one its probabilities only up to KEEP_RATIO per query
# element, so a RAT layer's training peak is under attention's either way. From this many tokens it trains; None:
# never.
FLASH_TRAIN_MIN_TOKENS = 8192 if torch.backends.cpu.get_cpu_capability() == "AVX512" else 16384


def _flash(*args, **kw):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(*args, **kw)


def _flash_backward(*args, **kw):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(*args, **kw)


def _offsets(t, L, C):
    """One batch row (H, C * L, ...) -> (H, L, C - 1, ...): offset l of chunks 1..C-1, a view."""
    return t.unflatten(1, (C, L))[:, 1:].transpose(1, 2)


def _tokens(t, n):
    """Inverse of _offsets for a kernel result (H, L, C - 1, ...) -> its first n tokens from chunk 1 on,
    (H, n, ...) in token order (a view when the kernel wrote token-major, as PyTorch's does)."""
    H, L, N = t.shape[:3]
    return t.transpose(1, 2).reshape(H, N * L, *t.shape[3:])[:, :n]


def _pad_tokens(t, n):
    """Zero-pad dim 2 to n entries."""
    return t if t.shape[2] == n else torch.cat([t, t.new_zeros(*t.shape[:2], n - t.shape[2], *t.shape[3:])], 2)


class _AlignedChunkAttention(torch.autograd.Function):
    @staticmethod
    @autocast_off
    def forward(ctx, q, k, v, self_score, self_value, L, scale):
        B, G, T, dh = q.shape
        H = k.shape[1]
        acc = acc_dtype(q.dtype)
        C = -(-T // L)
        out = self_value.to(acc, copy=True)
        lse = self_score.to(acc, copy=True)
        if C > 1:
            qp = _pad_tokens(q, C * L)
            kk, vv = k[:, :, None, : C - 1].to(q.dtype), v[:, :, None, : C - 1].to(q.dtype)  # one key head
            for b, h in _head_blocks(B, H, G):  # one block of G heads: its head g reads query group g
                om, lm = _flash(_offsets(qp[b], L, C), kk[b, h], vv[b, h], 0.0, True, scale=scale)
                om, lm = _tokens(om, T - L).to(acc), _tokens(lm, T - L).to(acc)
                ss, sv = lse[b, h, L:], out[b, h, L:]
                m = torch.maximum(lm, ss)
                a, e = torch.exp(lm - m), torch.exp(ss - m)
                denom = a + e
                out[b, h, L:] = om.mul_(a[..., None]).addcmul_(sv, e[..., None]).div_(denom[..., None])
                lse[b, h, L:] = m + denom.log()
        ctx.save_for_backward(q, k, v, self_score, self_value, out, lse)
        ctx.L, ctx.scale = L, scale
        return out

    @staticmethod
    @autocast_off
    def backward(ctx, dout):
        q, k, v, self_score, self_value, out, lse = ctx.saved_tensors
        L, scale = ctx.L, ctx.scale
        B, G, T, dh = q.shape
        H = k.shape[1]
        acc = acc_dtype(q.dtype)
        dout = dout.to(acc)
        delta = (dout * out).sum(-1, keepdim=True)
        ps = torch.exp(self_score.to(acc) - lse)[..., None]
        dss = ps * ((dout * self_value.to(acc)).sum(-1, keepdim=True) - delta)
        dsv = ps * dout
        C = -(-T // L)
        dq = torch.zeros(q.shape, dtype=acc if G < H else q.dtype, device=q.device)  # summed over head blocks
        dk = torch.zeros(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.zeros(v.shape, dtype=v.dtype, device=v.device)
        if C > 1:
            n = C * L
            qp, op, dp = (_pad_tokens(t.to(q.dtype), n) for t in (q, out, dout))
            lp = _pad_tokens(lse[..., None], n)[..., 0]
            kk, vv = k[:, :, None, : C - 1].to(q.dtype), v[:, :, None, : C - 1].to(q.dtype)  # one key head
            for b, h in _head_blocks(B, H, G):
                dqb, dkb, dvb = _flash_backward(_offsets(dp[b, h], L, C), _offsets(qp[b], L, C), kk[b, h], vv[b, h],
                                                _offsets(op[b, h], L, C), _offsets(lp[b, h], L, C), 0.0, True,
                                                scale=scale)
                dq[b, :, L:] += _tokens(dqb, T - L)
                dk[b, h, : C - 1] = dkb[:, 0]
                dv[b, h, : C - 1] = dvb[:, 0]
        return (dq.to(q.dtype), dk, dv, dss[..., 0].to(self_score.dtype), dsv.to(self_value.dtype), None,
                None)


def _head_blocks(B, H, G):
    """(batch row, heads r*G .. r*G+G-1) for every row and block of G heads (one kernel call each)."""
    return [(b, slice(r * G, (r + 1) * G)) for b in range(B) for r in range(H // G)]


def use_aligned_flash(q: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether RAT's aligned case should take aligned_chunk_attention: on CPU, and when a gradient is
    wanted only for sequences of at least FLASH_TRAIN_MIN_TOKENS queries (never when that is None)."""
    if not flash_available(q.device):
        return False
    if needs_grad(q, *others):
        return FLASH_TRAIN_MIN_TOKENS is not None and q.shape[2] >= FLASH_TRAIN_MIN_TOKENS
    return True


def flash_available(device: torch.device | str) -> bool:
    """The aligned path needs PyTorch's CPU flash-attention kernel (CPU tensors only)."""
    return (USE_FLASH and torch.device(device).type == "cpu"
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))


def aligned_chunk_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, self_score: torch.Tensor,
                            self_value: torch.Tensor, chunk_size: int, scale: float) -> torch.Tensor:
    """`chunk_attention` for the common case, through PyTorch's fused CPU flash kernel: queries are
    tokens 0..T-1 (query t in chunk t // chunk_size) and k, v hold the final pairs of the complete
    chunks in order (slot j = chunk j; at least ceil(T / chunk_size) - 1 of them). Same arguments
    otherwise (self_score (B, H, T), self_value (B, H, T, dh)), except that q may hold G query groups,
    (B, G, T, dh) with G dividing H: head h reads group h mod G (G = H: a query per head), as RAT's
    grouped queries are tiled. Returns float32 (float64 for float64) (B, H, T, dh). CPU only (see
    flash_available)."""
    T, L = q.shape[2], int(chunk_size)
    if k.shape[1] % q.shape[1]:
        raise ValueError(f"{q.shape[1]} query groups do not divide {k.shape[1]} heads")
    if k.shape[2] < -(-T // L) - 1:
        raise ValueError(f"{T} queries in chunks of {L} need the final pairs of {-(-T // L) - 1} chunks, "
                         f"got {k.shape[2]}")
    return _AlignedChunkAttention.apply(q, k, v, self_score, self_value, L, scale)
