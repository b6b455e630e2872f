"""Test helpers for the authors' checkpoint format (spec, "The authors' checkpoint format").

`make_checkpoint` writes small random checkpoints laid out as the authors' trainer saves them.
`reference_logits` is an independent forward pass written from the spec with plain torch ops and
per-token loops over their raw state dict (it shares no code with ratlm).
"""
import math
import sys
import types

import torch


# ------------------------------------------------------------------------------------- checkpoints
def _fake_easydict():
    """An `easydict.EasyDict` class that pickles under that name (the real package is not installed)."""
    mod = sys.modules.get("easydict")
    if mod is None:
        mod = types.ModuleType("easydict")

        class EasyDict(dict):
            def __init__(self, d=None, **kw):
                super().__init__(d or {}, **kw)
                for k, v in self.items():
                    setattr(self, k, v)

        EasyDict.__module__ = "easydict"
        EasyDict.__qualname__ = "EasyDict"
        mod.EasyDict = EasyDict
    return mod


def official_state_dict(kinds, D=32, head_dim=8, groups=2, vocab=61, ffn_bias=False, tied=True, seed=0, chunk=4):
    """Random parameters with the authors' names. kinds: one of "rat", "attention", "rnn" per layer
    (window layers are "attention"-shaped)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    F = 4 * D
    sd = {"embedding.wte.weight": rnd(vocab, D)}
    for i, kind in enumerate(kinds):
        p = f"backbone.layers.{i}."
        rows = 3 * D + (2 * groups * head_dim if kind == "rat" else 0)
        sd[p + "seq_layer.input_norm.weight"] = 1 + rnd(D, std=0.1)
        sd[p + "seq_layer.in_proj.weight"] = rnd(rows, D, std=D ** -0.5)
        if kind in ("rat", "rnn"):
            span = chunk if kind == "rat" else 64
            sd[p + "seq_layer.gate_bias"] = torch.empty(D).uniform_(1, span - 1, generator=g).log() + rnd(D, std=0.3)
        sd[p + "seq_layer.out_proj.weight"] = rnd(D, D, std=D ** -0.5)
        sd[p + "hidden_layer.ln.weight"] = 1 + rnd(D, std=0.1)
        sd[p + "hidden_layer.fc1.weight"] = rnd(F, D, std=D ** -0.5)
        sd[p + "hidden_layer.fc2.weight"] = rnd(D, F, std=F ** -0.5)
        if ffn_bias:
            sd[p + "hidden_layer.fc1.bias"] = rnd(F, std=0.1)
            sd[p + "hidden_layer.fc2.bias"] = rnd(D, std=0.1)
    sd["backbone.ln.weight"] = 1 + rnd(D, std=0.1)
    sd["head.lm_head.weight"] = sd["embedding.wte.weight"] if tied else rnd(vocab, D)
    return sd


def with_orig_mod(sd, where):
    """torch.compile's `_orig_mod.` infix: on the whole task ("top") or on each layer ("layer")."""
    if where is None:
        return dict(sd)
    if where == "top":
        return {"_orig_mod." + k: v for k, v in sd.items()}
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("backbone.layers."):  # backbone.layers.N._orig_mod.seq_layer...
            k = ".".join(parts[:3] + ["_orig_mod"] + parts[3:])
        out[k] = v
    return out


def save_checkpoint(path, sd, extras=True):
    """torch.save({"task": sd, ...}) as their trainer does (config as an EasyDict, optimizer state...)."""
    ckpt = {"task": sd}
    if extras:
        ed = _fake_easydict()
        sys.modules["easydict"] = ed
        try:
            ckpt["config"] = ed.EasyDict({"model": ed.EasyDict({"backbone": {"d_model": 32, "num_layers": 2}}),
                                          "trainer": {"dtype": "bfloat16"}})
            ckpt["step"] = 7
            ckpt["optimizer"] = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.zeros(3)}},
                                 "param_groups": [{"lr": 8e-4, "betas": (0.9, 0.95), "params": [0]}]}
            ckpt["lr_scheduler"] = {"last_epoch": 7, "base_lrs": [8e-4], "T_max": 100}
            ckpt["resume_kwargs"] = {"resume_step": 7}
            torch.save(ckpt, path)
        finally:
            del sys.modules["easydict"]
    else:
        torch.save(ckpt, path)
    return path


# ------------------------------------------------------------------------------------- reference
def _rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def _rope(x, pos, dh):
    """Rotate-half RoPE of x (..., dh) at integer position pos, base 10000."""
    inv = 10000.0 ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    ang = pos * inv
    cos, sin = torch.cat([ang, ang]).cos(), torch.cat([ang, ang]).sin()
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _softmax_mix(q, keys, vals, dh):
    s = torch.stack([q @ k for k in keys]) / math.sqrt(dh)
    p = torch.softmax(s, 0)
    return sum(pi * v for pi, v in zip(p, vals))


def _rat(x, sd, p, H, dh, L, rope):
    T, D = x.shape
    W = sd[p + "in_proj.weight"]
    G = (W.shape[0] - 3 * D) // (2 * dh)
    proj = x @ W.T
    z, v, gl = proj[:, :D], proj[:, D : 2 * D], proj[:, 2 * D : 3 * D]
    q, k = proj[:, 3 * D : 3 * D + G * dh], proj[:, 3 * D + G * dh :]
    z = torch.sigmoid(z)
    gate = torch.sigmoid(gl + sd[p + "gate_bias"])
    q = q.repeat(1, H // G)  # the whole G*dh vector, H/G times
    k = k.repeat(1, H // G)
    out = torch.zeros(T, D, dtype=x.dtype)
    finals = []  # (keys per head rotated at their chunk, values per head) of completed chunks
    vt = kt = None
    for t in range(T):
        c, l = divmod(t, L)
        if l == 0:
            vt = torch.zeros(D, dtype=x.dtype)
            kt = torch.zeros(D, dtype=x.dtype)
        vt = gate[t] * vt + (1 - gate[t]) * v[t]
        kt = gate[t] * kt + (1 - gate[t]) * k[t]
        heads_k = [kt[h * dh : (h + 1) * dh] for h in range(H)]
        heads_q = [q[t, h * dh : (h + 1) * dh] for h in range(H)]
        if rope:
            heads_k = [_rope(a, c, dh) for a in heads_k]
            heads_q = [_rope(a, c, dh) for a in heads_q]
        heads_v = [vt[h * dh : (h + 1) * dh] for h in range(H)]
        for h in range(H):
            keys = [f[0][h] for f in finals] + [heads_k[h]]
            vals = [f[1][h] for f in finals] + [heads_v[h]]
            out[t, h * dh : (h + 1) * dh] = _softmax_mix(heads_q[h], keys, vals, dh)
        if l == L - 1:
            finals.append((heads_k, heads_v))
    return (z * out) @ sd[p + "out_proj.weight"].T


def _attention(x, sd, p, H, dh, rope, window=None):
    T, D = x.shape
    proj = x @ sd[p + "in_proj.weight"].T
    v, q, k = proj[:, :D], proj[:, D : 2 * D], proj[:, 2 * D :]
    out = torch.zeros(T, D, dtype=x.dtype)
    for t in range(T):
        lo = 0 if window is None else max(0, t - window)
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            qh = _rope(q[t, sl], t, dh) if rope else q[t, sl]
            keys = [(_rope(k[s, sl], s, dh) if rope else k[s, sl]) for s in range(lo, t + 1)]
            vals = [v[s, sl] for s in range(lo, t + 1)]
            out[t, sl] = _softmax_mix(qh, keys, vals, dh)
    return out @ sd[p + "out_proj.weight"].T


def _rnn(x, sd, p):
    T, D = x.shape
    proj = x @ sd[p + "in_proj.weight"].T
    z, v, gl = torch.sigmoid(proj[:, :D]), proj[:, D : 2 * D], proj[:, 2 * D :]
    gate = torch.sigmoid(gl + sd[p + "gate_bias"])
    h = torch.zeros(D, dtype=x.dtype)
    out = []
    for t in range(T):
        h = gate[t] * h + (1 - gate[t]) * v[t]
        out.append(h)
    return (z * torch.stack(out)) @ sd[p + "out_proj.weight"].T


def reference_logits(sd, ids, layer_types, head_dim=8, chunk=4, window=5, rope=True):
    """Logits (B, T, vocab) in float64 of the authors' model for their raw state dict `sd`.
    layer_types: "rat", "attention", "window" or "rnn" per layer."""
    sd = {k.replace("_orig_mod.", ""): v.double() for k, v in sd.items()}
    wte = sd["embedding.wte.weight"]
    D = wte.shape[1]
    H = D // head_dim
    head = sd.get("head.lm_head.weight", wte)
    rows = []
    for seq in ids:
        x = wte[seq]
        for i, kind in enumerate(layer_types):
            p = f"backbone.layers.{i}."
            a = _rms(x, sd[p + "seq_layer.input_norm.weight"])
            s = p + "seq_layer."
            if kind == "rat":
                x = x + _rat(a, sd, s, H, head_dim, chunk, rope)
            elif kind == "attention":
                x = x + _attention(a, sd, s, H, head_dim, rope)
            elif kind == "window":
                x = x + _attention(a, sd, s, H, head_dim, rope, window)
            else:
                x = x + _rnn(a, sd, s)
            f = _rms(x, sd[p + "hidden_layer.ln.weight"]) @ sd[p + "hidden_layer.fc1.weight"].T
            f = f + sd.get(p + "hidden_layer.fc1.bias", 0)
            f = 0.5 * f * (1 + torch.erf(f / math.sqrt(2)))  # exact GELU
            f = f @ sd[p + "hidden_layer.fc2.weight"].T + sd.get(p + "hidden_layer.fc2.bias", 0)
            x = x + f
        rows.append(_rms(x, sd["backbone.ln.weight"]) @ head.T)
    return torch.stack(rows)
