"""The RAT mixer: gated recurrence inside chunks of length L, softmax attention across chunks.

    z, v, g, q, k = in_proj(x)            q, k have G*dh channels, tiled to D (head h -> group h mod G)
    v~, k~ = gated scan of v, k within each chunk (gate sigmoid(g + b), float32)
    y_t = softmax(q_t . [K_prev ; k~_t] / sqrt(dh)) [V_prev ; v~_t]    K_prev: final keys of earlier chunks
    out = out_proj(sigmoid(z) * y)

Chunk-level RoPE rotates q_t and k~_t by their chunk index. Since q_t and its own k~_t share that
index, their product needs no rotation; only queries and the final keys of chunks are rotated.
The full definition is in the spec (docs of the project); `ratlm.ops.naive.naive_rat` follows it
token by token.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.chunk_attention import aligned_chunk_attention, chunk_attention, use_aligned_flash
from ..ops.dtypes import acc_dtype, up
from ..ops.naive import naive_rat
from ..ops.rope import rotate, rotate_rows
from ..ops.scan import MAX_ALIGNED_CHUNK, gated_scan, kv_chunk_scan
from .cache import ChunkCache, scatter_tokens
from .common import Linear, Mixer, detach_projection, gated_output, gather_rows, init_gate_bias

NEVER = 1 << 60  # chunk index of an empty memory slot: no query ever sees it


class RAT(Mixer):
    def __init__(self, hidden_size: int, num_heads: int, chunk_size: int = 16, qk_groups: int = 2,
                 position_encoding: str = "rope", rope_theta: float = 10000.0, backend: str | None = None) -> None:
        super().__init__(hidden_size, num_heads, backend)
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if not isinstance(qk_groups, int) or qk_groups < 1 or num_heads % qk_groups:
            raise ValueError(f"num_heads {num_heads} must be divisible by qk_groups {qk_groups!r}; "
                             "choose qk_groups among the divisors of num_heads")
        self.chunk_size = chunk_size
        self.qk_groups = qk_groups
        self.set_position_encoding(position_encoding, rope_theta)
        self.qk_dim = qk_groups * self.head_dim
        D = hidden_size
        self.in_proj = Linear(D, 3 * D + 2 * self.qk_dim, bias=False)
        self.gate_bias = nn.Parameter(torch.zeros(D))
        self.out_proj = Linear(D, D, bias=False)
        init_gate_bias(self.gate_bias, chunk_size)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, chunk_size={self.chunk_size}, qk_groups={self.qk_groups}, "
                f"position_encoding={'rope' if self.rope else 'nope'}")

    def init_cache(self, batch_size: int, max_length: int | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> ChunkCache:
        p = self.out_proj.weight
        dtype = dtype or p.dtype
        return ChunkCache(batch_size, self.num_heads, self.head_dim, self.chunk_size, max_length,
                        device=device or p.device, dtype=dtype, state_dtype=acc_dtype(dtype))

    # pieces ------------------------------------------------------------------------------------
    def _project(self, x):
        D, Q = self.hidden_size, self.qk_dim
        z, v, g, q, k = self.in_proj(x).split([D, D, D, Q, Q], -1)
        return z, v, up(g) + up(self.gate_bias), q, k

    def _tile(self, t):
        """(..., G*dh) -> (..., D): the whole group vector repeated, head h uses group h mod G."""
        reps = self.num_heads // self.qk_groups
        return t if reps == 1 else t.repeat(*([1] * (t.dim() - 1)), reps)

    def _rotate(self, t, chunk):
        """t: (B, N, H, dh) rotated by chunk index: (B or 1, N) tensor, or an int for N chunks from it."""
        if not self.rope:
            return t
        if not isinstance(chunk, int):
            chunk = chunk.masked_fill(chunk == NEVER, 0)  # empty slots: any rotation will do
        return rotate(t, chunk, self.rope_theta)

    def _out(self, z, y, dtype, gate=None):
        return gated_output(self.out_proj, z, y, dtype, gate)

    # the three ways to run ----------------------------------------------------------------------
    def _naive(self, x):
        z, v, u, q, k = self._project(x)
        y = naive_rat(z, v, u, q, k, self.num_heads, self.chunk_size, self.rope, self.rope_theta)
        return self.out_proj(y.to(x.dtype))

    def _parallel(self, x, backend):
        parts = list(self._project(x))
        # with gradients, k, v and q are copied out and the output gate taken now, so that the projection
        # (z, v, g, q, k: 3.5 x (B, T, D)) is freed here and not kept for the backward
        gate = detach_projection(parts)
        z, v, u, q, k = parts
        L = self.chunk_size
        if backend != "flex" and L <= MAX_ALIGNED_CHUNK:  # the scan hands over the chunks' final pairs and
            qs = up(q) * (1.0 / math.sqrt(self.head_dim))  # the running keys' scores with the scaled queries
            ss, vt, k_end, v_end = kv_chunk_scan(k, v, u, L, q=qs, head_dim=self.head_dim)  # (k~ is not kept)
            y, _ = self._attend(qs, None, vt, 0, ends=(k_end, v_end), self_score=ss, dtype=q.dtype)
        else:
            if L <= MAX_ALIGNED_CHUNK:
                kt, vt = kv_chunk_scan(k, v, u, L)[:2]
            else:  # long chunks: the hierarchical scan
                kt, vt = gated_scan(torch.stack([self._tile(k), v], 2), u[:, :, None], L).unbind(2)
            if backend == "flex":
                from .flex import rat_flex_attention

                y = rat_flex_attention(self, q, kt, vt)
            else:
                y, _ = self._attend(q, kt, vt, 0)
        return self._out(z, y, x.dtype, gate)

    def _prefill(self, x, cache, lengths):
        B, T, _ = x.shape
        L = self.chunk_size
        z, v, u, q, k = self._project(x)
        start = cache.max_seen if cache.uniform else cache.seen
        fresh = cache.uniform and cache.max_seen % L == 0  # no running pair to carry
        ends = None
        if fresh and L <= MAX_ALIGNED_CHUNK:
            kt, vt, k_end, v_end = kv_chunk_scan(k, v, u, L)
            ends = (k_end, v_end)
        else:
            kt, vt = gated_scan(torch.stack([self._tile(k), v], 2), u[:, :, None], L, start=start,
                                initial=None if fresh else cache.running).unbind(2)
        y, (keys, values) = self._attend(q, kt, vt, start, cache, ends)
        # completed chunks go to memory (slots past a row's count hold nothing it will read)
        cache.ensure(cache.max_chunks + keys.shape[1] + 1)
        chunks = cache.chunks
        cache.keys = scatter_tokens(cache.keys, chunks, keys.transpose(1, 2))
        cache.values = scatter_tokens(cache.values, chunks, values.transpose(1, 2))
        last = (torch.full((B,), T, device=x.device) if lengths is None else lengths) - 1
        running = torch.stack([gather_rows(kt, last.clamp(min=0)), gather_rows(vt, last.clamp(min=0))], 1)
        if lengths is not None:
            running = torch.where((lengths > 0)[:, None, None], running, cache.running)
        cache.running = running
        cache.advance(lengths, T)
        return self._out(z, y, x.dtype)

    def _step(self, x, cache, active):
        # Written for few operators: at batch 1 the step is mostly their fixed cost, not arithmetic.
        B, D = x.shape[0], self.hidden_size
        H, dh, L, G = self.num_heads, self.head_dim, self.chunk_size, self.qk_groups
        uniform = cache.uniform  # every row at the same position: python ints, no masks
        z, v, u, q, k = self._project(x.reshape(B, D))
        a = torch.sigmoid(u)
        kv = up(torch.cat([k] * (H // G) + [v], -1)).view(B, 2, D)  # the inputs of the key and value scans
        if L == 1 or (uniform and cache.max_seen % L == 0):  # a chunk starts: no state to carry
            h = kv * torch.sigmoid(-u).unsqueeze(1)
        else:  # h = a * prev + (1 - a) * kv; rows where a chunk starts (seen % L == 0) carry nothing
            prev = cache.running if uniform else cache.running * (cache.seen % L != 0)[:, None, None]
            h = torch.lerp(kv, prev, a.unsqueeze(1))
        if active is not None:  # rows without a token this step keep their state
            h = torch.where(active[:, None, None], h, cache.running)
        # The running pair goes to the memory slot of its own chunk, its key rotated by the chunk index like
        # the query (so that their product is unrotated): one attention over slots 0..chunk then reads the
        # earlier chunks' final pairs and the running pair together, and once the chunk ends the slot holds
        # its final pair. (Prefills only read the slots of completed chunks.)
        chunk = cache.max_seen // L if uniform else cache.seen // L
        n = cache.max_chunks + 1
        cache.ensure(n)
        qk = torch.cat([up(q), h[:, 0]], 1).view(B, G + H, dh)  # q and the running key, rotated together
        if self.rope:
            qk = rotate_rows(qk, chunk if uniform else chunk[:, None], self.rope_theta)
        qk = qk.to(cache.keys.dtype)
        cache.keys = scatter_tokens(cache.keys, chunk, qk[:, G:, None])
        cache.values = scatter_tokens(cache.values, chunk, h[:, 1].view(B, H, 1, dh))
        qr = qk[:, :G].repeat(1, H // G, 1).view(B, H, 1, dh)  # head h reads group h mod G
        mask = None if uniform else (torch.arange(n, device=x.device) <= chunk[:, None]).view(B, 1, 1, n)
        y = nn.functional.scaled_dot_product_attention(qr, cache.keys[:, :, :n], cache.values[:, :, :n],
                                                       attn_mask=mask, scale=1.0 / math.sqrt(dh))
        cache.running = h
        cache.advance(None if active is None else active.long(), 1)
        return self._out(z, up(y).view(B, D), x.dtype).view(B, 1, D)

    # inter-chunk attention ------------------------------------------------------------------------
    def _attend(self, q, kt, vt, start, cache=None, ends=None, self_score=None, dtype=None):
        """Attention of every token over earlier chunks' final pairs (memory) and its own running pair.

        q: (B, T, G*dh); kt, vt: (B, T, D) running pairs at absolute positions start + t (start: int
        or (B,) tensor); ends: the final pairs of the complete chunks, when start is 0 and the scan
        gave them; self_score: (B, T, H) the running keys' scores with q when the scan gave them (then
        q comes scaled by 1 / sqrt(dh) and kt is not needed); dtype: the attention's input dtype
        (default q's). Returns y (B, T, D) float32 and the final pairs of the chunks completed in this
        call, (keys rotated (B, Cn, H, dh), values (B, Cn, H, dh)), in chunk order per row.
        """
        B, T = vt.shape[:2]
        H, dh, L, G = self.num_heads, self.head_dim, self.chunk_size, self.qk_groups
        dev = vt.device
        dtype = dtype or q.dtype
        vt = vt.view(B, T, H, dh)
        # queries are scaled and rotated at group width (G heads), then tiled to H heads
        if self_score is None:
            kt = kt.view(B, T, H, dh)
            q = up(q).view(B, T, G, dh) * (1.0 / math.sqrt(dh))
            self_score = (kt.view(B, T, H // G, G, dh) * q[:, :, None]).sum(-1).view(B, T, H)
        else:
            q = q.view(B, T, G, dh)
        self_score = self_score.transpose(1, 2)
        ar = torch.arange(T, device=dev)
        if isinstance(start, int):
            q_chunk = ((start + ar) // L)[None]
            first = L - 1 - start % L
            if ends is not None:
                keys, values = (t.view(B, -1, H, dh) for t in ends)
            else:
                keys, values = kt[:, first::L], vt[:, first::L]
            e_chunk = (start + first) // L + torch.arange(keys.shape[1], device=dev)[None]
        else:
            pos = start[:, None] + ar
            q_chunk = pos // L
            first = L - 1 - start % L  # (B,) index of the first chunk end in this call
            n_ends = (T + L - 1 - int(first.min())) // L
            idx = first[:, None] + L * torch.arange(n_ends, device=dev)
            ok = idx < T
            keys = gather_rows_many(kt, idx.clamp(max=T - 1))
            values = gather_rows_many(vt, idx.clamp(max=T - 1))
            e_chunk = torch.where(ok, (start[:, None] + idx) // L, NEVER)
        keys = self._rotate(keys, e_chunk).to(dtype)  # rotated in float32, as decode steps do
        values = values.to(dtype)
        if isinstance(start, int) and start % L == 0 and T % L == 0:  # whole chunks: rotated chunk by chunk, so
            # that the rotation reads C rows of the shared tables and keeps no (T, dh) gathers of them
            q = self._rotate(q.reshape(B, T // L, L * G, dh), start // L).view(B, T, G, dh)
        else:
            q = self._rotate(q, q_chunk)
        q = q.transpose(1, 2).to(dtype)  # (B, G, T, dh)
        mem_k, mem_v, k_chunk = keys.transpose(1, 2), values.transpose(1, 2), e_chunk
        if (isinstance(start, int) and start == 0 and (cache is None or cache.max_chunks == 0)
                and use_aligned_flash(q, mem_k, mem_v, self_score, vt)):
            y = aligned_chunk_attention(q, mem_k, mem_v, self_score, vt.transpose(1, 2), L, 1.0)
            return y.transpose(1, 2).reshape(B, T, H * dh), (keys, values)
        if cache is not None and cache.max_chunks > 0:
            cmax = cache.max_chunks
            slots = torch.arange(cmax, device=dev)[None]
            c_chunk = torch.where(slots < cache.chunks[:, None], slots, NEVER)
            mem_k = torch.cat([cache.keys[:, :, :cmax], mem_k], 2)
            mem_v = torch.cat([cache.values[:, :, :cmax], mem_v], 2)
            k_chunk = torch.cat([c_chunk, k_chunk.expand(B, -1)], 1)
        y = chunk_attention(q, mem_k, mem_v, self_score, vt.transpose(1, 2), q_chunk, k_chunk, 1.0)
        return y.transpose(1, 2).reshape(B, T, H * dh), (keys, values)


def gather_rows_many(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[b, idx[b, j]] for t (B, T, ...) and idx (B, N) -> (B, N, ...)."""
    B, N = idx.shape
    i = idx.reshape(B, N, *([1] * (t.dim() - 2))).expand(B, N, *t.shape[2:])
    return t.gather(1, i)
