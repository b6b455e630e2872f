"""Tiny models for the eval tests: a hand-built copying model, a quickly trained one, random ones
(plain builders; the fixtures that use them are in conftest.py)."""
import math
import string

import torch

from ratlm import RATConfig, RATForCausalLM
from ratlm.data import synthetic
from ratlm.data.tokenizer import BYTE_VOCAB, byte_tokenizer

SPECIAL = dict(pad_token_id=256, bos_token_id=257, eos_token_id=258)


def passkey_alphabet():
    """Every character a passkey record (noise haystack) or an MQAR record can hold."""
    recs = synthetic.records("passkey", 20, 0, length=400)
    chars = set("".join(r["prompt"] + r["response"] for r in recs))
    return sorted(chars | set(string.ascii_lowercase + string.digits + ":"))


def copy_model(alphabet, k=7, train_length=256):
    """A hand-built induction model: it predicts the token that followed the earlier place whose k
    preceding tokens best match the last k tokens (longest suffix match first), i.e. it copies.

    NoPE throughout. Layers 1..k are sliding-window attention with window 1 and zero queries/keys,
    so each averages token t and t-1: layer m writes S_m = (P_(m-1)(t-1) + P_(m-1)(t)) / 2, from which
    P_m(t) = 2 S_m - P_(m-1)(t) is the one-hot code of token t-m (P_0 = the current token). The last
    layer is full attention with query sum_m w_m P_m(t) and key sum_m w_m P_(m+1)(j) (w_m = 2^-m),
    value P_0(j); the head reads the attended code. A huge constant coordinate makes every RMSNorm
    scale the same at every position, so all these reads are linear; MLPs are zero.
    """
    r = len(alphabet)
    code = {c.encode()[0]: i for i, c in enumerate(alphabet)}
    D = 1 + (k + 2) * r
    A = slice(1, 1 + r)

    def S(m):
        return slice(1 + m * r, 1 + (m + 1) * r)

    C = S(k + 1)
    K, beta = 1e4, 40.0 * 2 ** (k - 1)
    cfg = RATConfig(vocab_size=BYTE_VOCAB, hidden_size=D, num_hidden_layers=k + 1, num_attention_heads=1,
                    intermediate_size=1, layer_types=["sliding_attention"] * k + ["attention"], sliding_window=1,
                    position_encoding="nope", tie_word_embeddings=False, train_length=train_length, **SPECIAL)
    model = RATForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        E = [torch.zeros(r, D)]  # E[m] @ h = P_m
        E[0][:, A] = torch.eye(r)
        for m in range(1, k + 1):
            e = -E[m - 1].clone()
            e[:, S(m)] += 2 * torch.eye(r)
            E.append(e)
        norm_w = torch.full((D,), K / math.sqrt(D))
        norm_w[0] = 0.0
        emb = model.model.embed_tokens.weight
        emb[:, 0] = K
        for tok, i in code.items():
            emb[tok, 1 + i] = 1.0
        for blk in model.model.layers:
            blk.input_norm.weight.copy_(norm_w)
            blk.ffn_norm.weight.copy_(norm_w)
        model.model.norm.weight.copy_(norm_w)
        for m in range(1, k + 1):  # value = P_(m-1), written to S_m; queries and keys zero
            mix = model.model.layers[m - 1].mixer
            mix.in_proj.weight[S(m)] = E[m - 1]
            mix.out_proj.weight[S(m), S(m)] = torch.eye(r)
        mix = model.model.layers[k].mixer
        scale = beta * math.sqrt(D)  # undoes the attention's 1/sqrt(head width)
        for m in range(k):
            w = math.sqrt(2.0 ** -m)
            mix.in_proj.weight[D + 1 + m * r: D + 1 + (m + 1) * r] = scale * w * E[m]  # query slot m
            mix.in_proj.weight[2 * D + 1 + m * r: 2 * D + 1 + (m + 1) * r] = w * E[m + 1]  # key slot m
        mix.in_proj.weight[C] = E[0]  # value: the token at the attended place
        mix.out_proj.weight[C, C] = torch.eye(r)
        for tok, i in code.items():
            model.lm_head.weight[tok, C.start + i] = 10.0
    return model


def save(model, path):
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return str(path)


def random_model(preset, **kw):
    torch.manual_seed(0)
    cfg = RATConfig.from_preset(preset, vocab_size=BYTE_VOCAB, hidden_size=32, num_hidden_layers=2,
                                intermediate_size=64, **SPECIAL, **kw)
    return RATForCausalLM(cfg).eval()


TEXT = ("the quick brown fox jumps over the lazy dog. " * 3 + "a stitch in time saves nine. ") * 8


def trained_model(steps=30, length=64):
    """A tiny attention model trained for a few dozen steps on TEXT (plain torch loop)."""
    torch.manual_seed(0)
    model = random_model("attention-tiny", train_length=length).train()
    ids = torch.tensor(list(TEXT.encode()))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - length, (8,), generator=g)
        batch = torch.stack([ids[s:s + length] for s in starts])
        loss = model(batch, labels=batch, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
