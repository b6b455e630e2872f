"""RAT's inter-chunk attention with its current-token term, blocked over queries (flash style).

Query i reads the memory keys j whose chunk index is below its own, plus its own running pair:

    o_i = softmax([q_i . k_j * scale  (k_chunk[j] < q_chunk[i]) ; s_i]) @ [v_j ; u_i]

with s_i = q_i . k~_i * scale (passed in as `self_score`) and u_i = v~_i (`self_value`). Queries are
processed in blocks; each block only reads the keys some query in it can see, so the masked half is
skipped and nothing of size T x T (or T x C) is ever held. The backward recomputes the scores from
the saved log-sum-exp instead of storing probabilities. Scores and softmax are float32 (float64
for float64 inputs).
"""
from __future__ import annotations

import torch

from .dtypes import acc_dtype

QUERY_BLOCK = 512
MAX_BLOCK_ELEMS = 1 << 22  # cap on heads x queries x keys held at once per block


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


def _block_probs(qs, k, q_chunk, k_chunk, i0, i1, kfull, kend, shift):
    """exp(scores - shift) of queries i0:i1 over keys :kend (0 where invisible), float32.

    qs: queries already multiplied by the scale. shift: (B, H, i1-i0, 1), or None to return the
    masked scores themselves (with -inf where invisible)."""
    s = torch.matmul(qs[:, :, i0:i1], k[:, :, :kend].to(qs.dtype).transpose(-1, -2))
    if kfull < kend:  # the mask only touches the last few keys
        visible = k_chunk[:, None, kfull:kend] < q_chunk[:, i0:i1, None]
        s[..., kfull:kend].masked_fill_(~visible[:, None], float("-inf"))
    if shift is None:
        return s
    return s.sub_(shift).exp_()


def chunk_attention_forward(q, k, v, self_score, self_value, q_chunk, k_chunk, scale):
    """Returns (out (B, H, Tq, dh), lse (B, H, Tq)) in float32 (float64 for float64). No autograd."""
    B, H, Tq, dh = q.shape
    acc = acc_dtype(q.dtype)
    qs = q.to(acc) * scale
    out = torch.empty(B, H, Tq, dh, dtype=acc, device=q.device)
    lse = torch.empty(B, H, Tq, dtype=acc, device=q.device)
    for i0, i1, kfull, kend in _query_blocks(q_chunk, k_chunk, Tq, H):
        ss = self_score[:, :, i0:i1, None].to(acc)
        sv = self_value[:, :, i0:i1].to(acc)
        if kend == 0:  # only the running pair: softmax of one term
            out[:, :, i0:i1] = sv
            lse[:, :, i0:i1] = ss[..., 0]
            continue
        s = _block_probs(qs, k, q_chunk, k_chunk, i0, i1, kfull, kend, None)
        m = torch.maximum(s.amax(-1, keepdim=True), ss)
        p = s.sub_(m).exp_()
        ps = torch.exp(ss - m)
        denom = p.sum(-1, keepdim=True) + ps
        o = torch.matmul(p, v[:, :, :kend].to(acc)).addcmul_(ps, sv)
        torch.div(o, denom, out=out[:, :, i0:i1])
        lse[:, :, i0:i1] = (m + denom.log())[..., 0]
    return out, lse


class _ChunkAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, self_score, self_value, q_chunk, k_chunk, scale):
        out, lse = chunk_attention_forward(q, k, v, self_score, self_value, q_chunk, k_chunk, scale)
        ctx.save_for_backward(q, k, v, self_score, self_value, q_chunk, k_chunk, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, self_score, self_value, q_chunk, k_chunk, out, lse = ctx.saved_tensors
        scale = ctx.scale
        B, H, Tq, dh = q.shape
        acc = acc_dtype(q.dtype)
        dout = dout.to(acc)
        qs = q.to(acc) * scale
        delta = (dout * out).sum(-1, keepdim=True)  # (B, H, Tq, 1)
        dq = torch.zeros(B, H, Tq, dh, dtype=acc, device=q.device)
        dk = torch.zeros(k.shape, dtype=acc, device=q.device)
        dv = torch.zeros(v.shape, dtype=acc, device=q.device)
        ps = torch.exp(self_score.to(acc) - lse)[..., None]
        dss = ps * ((dout * self_value.to(acc)).sum(-1, keepdim=True) - delta)
        dsv = ps * dout
        for i0, i1, kfull, kend in _query_blocks(q_chunk, k_chunk, Tq, H):
            if kend == 0:
                continue
            p = _block_probs(qs, k, q_chunk, k_chunk, i0, i1, kfull, kend, lse[:, :, i0:i1, None])
            do = dout[:, :, i0:i1]
            ds = torch.matmul(do, v[:, :, :kend].to(acc).transpose(-1, -2))
            ds.sub_(delta[:, :, i0:i1]).mul_(p)  # d(score), before the scale
            torch.matmul(ds, k[:, :, :kend].to(acc), out=dq[:, :, i0:i1])
            dk[:, :, :kend] += torch.matmul(ds.transpose(-1, -2), qs[:, :, i0:i1])
            dv[:, :, :kend] += torch.matmul(p.transpose(-1, -2), do)
        dq.mul_(scale)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dss[..., 0].to(self_score.dtype),
                dsv.to(self_value.dtype), None, None, None)


def chunk_attention(q, k, v, self_score, self_value, q_chunk, k_chunk, scale):
    """Differentiable inter-chunk attention (see the module docstring).

    q: (B, H, Tq, dh); k, v: (B, H, Nk, dh) memory (final pairs of completed chunks, keys already
    rotated); self_score: (B, H, Tq) scaled logit of each query with its own running key;
    self_value: (B, H, Tq, dh); q_chunk: (B or 1, Tq) and k_chunk: (B or 1, Nk) integer chunk indices.
    Returns float32 (B, H, Tq, dh).
    """
    return _ChunkAttention.apply(q, k, v, self_score, self_value, q_chunk, k_chunk, scale)


def decode_attention(q, k, v, self_score, self_value, valid, scale):
    """One query per row against a memory of N pairs plus its own running pair (no autograd needed,
    but differentiable). q: (B, H, 1, dh); k, v: (B, H, N, dh); self_score: (B, H, 1);
    self_value: (B, H, 1, dh); valid: (B, N) bool or None (all). Returns float32 (B, H, 1, dh)."""
    acc = acc_dtype(q.dtype)
    s = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale
    if valid is not None:
        s = s.masked_fill(~valid[:, None, None], float("-inf"))
    p = torch.cat([s, self_score.to(acc)[..., None]], -1).softmax(-1)
    return torch.matmul(p[..., :-1], v.to(acc)) + p[..., -1:] * self_value.to(acc)
