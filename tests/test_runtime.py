"""ratlm.runtime: the one device/dtype choice and model + tokenizer loading every command uses."""
import pytest
import torch

from ratlm import RATConfig, RATForCausalLM
from ratlm.errors import UserError
from ratlm.layers.common import Linear
from ratlm.ops.linear import can_pack
from ratlm.runtime import load, pack_for_cpu, pick_device, pick_dtype


def _model_dir(tmp_path, vocab=259, tokenizer=False):
    config = RATConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       chunk_size=4, train_length=32)
    path = tmp_path / "model"
    RATForCausalLM(config).save_pretrained(path)
    if tokenizer:
        from ratlm.data.tokenizer import byte_tokenizer

        byte_tokenizer().save_pretrained(path)
    return str(path)


def test_device_and_dtype_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_dtype(None, "cpu") == torch.float32 and pick_dtype("auto", "cuda") == torch.bfloat16
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(UserError, match="unknown --device"):
        pick_device("gpu0")
    with pytest.raises(UserError, match="unknown dtype"):
        pick_dtype("float8", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            pick_device("cuda")


def test_load_directory_with_and_without_tokenizer(tmp_path):
    path = _model_dir(tmp_path)
    model, tok, notes = load(path, "cpu", "bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert len(tok) == 259 and "byte-level tokenizer" in notes[0]
    model, tok, notes = load(_model_dir(tmp_path / "b", tokenizer=True))
    assert model.dtype == torch.float32 and notes == []
    # a model loaded on the CPU is marked for packed linear weights (ratlm.ops.linear)
    packs = can_pack(torch.float32)  # (a torch build without oneDNN cannot)
    assert all(m.pack == packs for m in model.modules() if isinstance(m, Linear))


@pytest.mark.skipif(not can_pack(torch.float32), reason="this torch build cannot pack weights")
def test_packing_only_where_the_copy_fits(tmp_path):
    model = RATForCausalLM.from_pretrained(_model_dir(tmp_path))
    size = sum(m.weight.numel() * 4 for m in model.modules() if isinstance(m, Linear))
    notes = []
    assert not pack_for_cpu(model, notes, free=2 * size - 8)
    assert not model.lm_head.pack and "would take more than half of the free memory" in notes[0]
    assert pack_for_cpu(model, notes, free=2 * size) and model.lm_head.pack and len(notes) == 1


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such model directory or checkpoint"):
        load(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load(str(tmp_path / "empty"))
    small = _model_dir(tmp_path, vocab=100)
    with pytest.raises(UserError, match="vocabulary has only 100"):
        load(small, tokenizer="byte")
    with pytest.raises(UserError, match="only for the authors' .pt"):
        load(small, official={"mixer": "rat"})
    with pytest.raises(UserError, match="no such tokenizer directory"):
        load(small, tokenizer=str(tmp_path / "nope"))


@pytest.mark.parametrize("native", [False, True])
def test_bf16_note_only_where_bf16_is_emulated(monkeypatch, native):
    from ratlm import runtime
    from ratlm.bench import system

    monkeypatch.setattr(system, "cpu_info", lambda: {"model": "Some CPU", "isa": {"bf16": native}})
    note = runtime.bf16_note("cpu", "bfloat16")
    assert (note is None) == native
    if not native:
        assert "Some CPU" in note and "emulated" in note and "\n" not in note
    assert runtime.bf16_note("cpu", "float32") is None and runtime.bf16_note("cpu", None) is None
    assert runtime.bf16_note("cuda", "bfloat16") is None
