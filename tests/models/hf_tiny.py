"""Tiny random models over the byte tokenizer, for the transformers-integration tests."""
import functools

import torch

from ratlm import RATConfig, RATForCausalLM
from ratlm.data.tokenizer import byte_tokenizer

CHUNK, WINDOW = 4, 6
# layer_types of each kind of model: every mixer alone and both hybrids
KINDS = {
    "rat": ["rat", "rat"],
    "attention": ["attention", "attention"],
    "sliding_attention": ["sliding_attention", "sliding_attention"],
    "rnn": ["rnn", "rnn"],
    "rat-swa": ["rat", "sliding_attention"],
    "attention-swa": ["attention", "sliding_attention"],
}
# token ids of everything but printable ASCII: suppressed where a test compares text
NON_ASCII = list(range(0, 32)) + list(range(127, 259))


def tiny_config(kind="rat-swa", **kw):
    layers = KINDS[kind]
    base = dict(vocab_size=259, hidden_size=32, num_hidden_layers=len(layers), num_attention_heads=4,
                intermediate_size=64, layer_types=list(layers), chunk_size=CHUNK, qk_groups=2,
                sliding_window=WINDOW, train_length=64, tie_word_embeddings=False,
                pad_token_id=256, bos_token_id=257, eos_token_id=258)
    base.update(kw)
    return RATConfig(**base)


def _sharpen(model, seed):
    """Larger random weights than the default init, so that outputs depend visibly on the context."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("in_proj.weight") or name.endswith("out_proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)
            elif name.endswith(("embed_tokens.weight", "lm_head.weight")):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


@functools.cache
def tiny_model(kind="rat-swa", seed=0):
    """A shared eval-mode model; tests must not modify it."""
    torch.manual_seed(seed)
    return _sharpen(RATForCausalLM(tiny_config(kind)), seed).eval()


def fresh_model(kind="rat-swa", seed=0, **kw):
    torch.manual_seed(seed)
    return _sharpen(RATForCausalLM(tiny_config(kind, **kw)), seed).eval()


@functools.lru_cache(maxsize=1)
def tokenizer():
    return byte_tokenizer()


def encode(texts):
    return tokenizer()(texts, return_tensors="pt", padding=True)


def cache_of(out):
    """`out.cache` on transformers >= 5.24, `out.past_key_values` before."""
    from ratlm.models.modeling_rat import CACHE_FIELD

    return getattr(out, CACHE_FIELD)


def reference_greedy(model, ids, n, processors=None):
    """Greedy decoding by full forwards without a cache: the ground truth for generate()."""
    for _ in range(n):
        with torch.no_grad():
            logits = model(ids, use_cache=False).logits[:, -1].float()
        if processors is not None:
            logits = processors(ids, logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    return ids
