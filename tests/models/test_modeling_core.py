"""Whole-model paths agree: full forward, prefill + steps, left padding, packed documents."""
import pytest
import torch

import ratlm
from ratlm import RATConfig, RATForCausalLM

VARIANTS = ["rat-tiny", "attention-tiny", "rnn-tiny", "rat-swa-tiny", "attention-swa-tiny", "rat64-tiny"]


def tiny(name, **kw):
    torch.manual_seed(0)
    cfg = RATConfig.from_preset(name, sliding_window=8, num_hidden_layers=2, hidden_size=64,
                                **({"chunk_size": 4} if name.startswith("rat-") or name == "rat-tiny" else {}), **kw)
    return RATForCausalLM(cfg).eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_incremental_equals_full(name):
    m = tiny(name)
    ids = torch.randint(0, 512, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(ids).logits
        out = m(ids[:, :10], use_cache=True)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        logits = [out.logits]
        for t in range(10, 30):
            logits.append(m(ids[:, t : t + 1], cache=cache).logits)
        logits.append(m(ids[:, 30:], cache=cache).logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, rtol=1e-5, atol=1e-5)
    assert cache.get_seq_length() == 37
    assert cache.seen.tolist() == [37, 37]


@pytest.mark.parametrize("name", VARIANTS)
def test_left_padding_and_packed_documents(name):
    m = tiny(name)
    ids = torch.randint(0, 512, (2, 37), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 37, dtype=torch.long)
    mask[1, :12] = 0
    pos = torch.cat([torch.arange(20), torch.arange(17)])[None].repeat(2, 1)
    with torch.no_grad():
        padded = m(ids, attention_mask=mask).logits
        torch.testing.assert_close(padded[1, 12:], m(ids[1:, 12:]).logits[0], rtol=1e-5, atol=1e-5)
        packed = m(ids, position_ids=pos).logits
        apart = torch.cat([m(ids[:, :20]).logits, m(ids[:, 20:]).logits], 1)
    torch.testing.assert_close(packed, apart, rtol=1e-5, atol=1e-5)


def test_presets_and_registration(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = RATConfig.from_preset("rat-swa-xl")
    assert cfg.layer_types[:2] == ["rat", "sliding_attention"] and cfg.hidden_size == 2048
    assert cfg.sliding_window == 1024 and cfg.chunk_size == 16 and cfg.qk_groups == 2
    m = tiny("rat-swa-tiny")
    m.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).layer_types == m.config.layer_types
    m2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(m2, RATForCausalLM) and m2.lm_head.weight is m2.model.embed_tokens.weight
    ids = torch.randint(0, 512, (1, 9))
    torch.testing.assert_close(m2(ids).logits, m(ids).logits)
    assert "rat-tiny" in ratlm.preset_names()
    with pytest.raises(ValueError, match="unknown preset"):
        RATConfig.from_preset("transformer-xl")
