"""Rows: document boundaries reset positions and mask cross-document targets; SFT puts loss on responses only."""
import numpy as np
import torch

from ratlm import RATConfig, RATForCausalLM
from ratlm.data.packing import IGNORE, PackedRows, StreamRows, collate, document_positions, example_arrays
from ratlm.data.sft import encode_records
from ratlm.data.tokenizer import byte_tokenizer
from ratlm.data.tokens import Encoder, TokenStream

EOS = 258


def test_stream_rows_restart_at_documents_and_mask_the_boundary():
    enc = Encoder(byte_tokenizer())
    docs = list(enc.documents(["abc", "defgh", "ij"]))
    stream = TokenStream([np.concatenate(docs)])
    assert len(stream) == 3 + 1 + 5 + 1 + 2 + 1
    rows = StreamRows(stream, seq_len=6, eos=EOS)
    assert len(rows) == 2
    r0, r1 = rows[0], rows[1]
    assert r0["input_ids"].tolist() == [*b"abc", EOS, *b"de"]
    assert r0["position_ids"].tolist() == [0, 1, 2, 3, 0, 1]
    # the EOS of "abc" does not predict "d"; "c" predicts EOS (the model learns to end)
    assert r0["labels"].tolist() == [*b"bc", EOS, IGNORE, *b"ef"]
    assert r1["input_ids"].tolist() == [*b"fgh", EOS, *b"ij"]
    assert r1["position_ids"].tolist() == [0, 1, 2, 3, 0, 1]
    assert r1["labels"].tolist() == [*b"gh", EOS, IGNORE, *b"j", EOS]
    assert document_positions(np.array([EOS, 5, EOS, EOS, 7]), EOS).tolist() == [0, 0, 1, 0, 0]


def test_packed_documents_train_like_separate_documents():
    """The loss of a packed row equals the losses of its documents computed alone."""
    torch.manual_seed(0)
    m = RATForCausalLM(RATConfig.from_preset("rat-tiny", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             chunk_size=4, vocab_size=259)).eval()
    enc = Encoder(byte_tokenizer())
    texts = ["def f(x):\n    return x\n", "import os\n"]
    stream = TokenStream([np.concatenate(list(enc.documents(texts)))])
    row = collate([StreamRows(stream, len(stream) - 1, EOS)[0]])
    with torch.no_grad():
        logits = m(input_ids=row["input_ids"], position_ids=row["position_ids"], use_cache=False).logits
        packed = torch.nn.functional.cross_entropy(logits[0], row["labels"][0], ignore_index=IGNORE, reduction="sum")
        alone = 0.0
        for t in texts:
            ids = torch.tensor([[*t.encode(), EOS]])
            lg = m(input_ids=ids, use_cache=False).logits
            alone += torch.nn.functional.cross_entropy(lg[0, :-1], ids[0, 1:], reduction="sum")
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-4)


def test_sft_loss_only_on_response_tokens():
    enc = Encoder(byte_tokenizer())
    records = [{"prompt": "Q: 2+2?\nA:", "response": " 4"}, {"prompt": "Say hi:", "response": " hi there"}]
    examples, cut = encode_records(records, enc, seq_len=64)
    assert cut == 0
    rows = PackedRows(examples, seq_len=64, pad=256)
    assert len(rows) == 1  # both fit in one row
    row = rows[0]
    learned = row["labels"][row["labels"] != IGNORE].tolist()
    assert learned == [*b" 4", EOS, *b" hi there", EOS]
    n1 = len("Q: 2+2?\nA: 4")
    assert row["position_ids"][:n1].tolist() == list(range(n1)) and row["position_ids"][n1] == 0
    assert row["attention_mask"].sum() == n1 + len("Say hi: hi there")
    assert (row["labels"][row["attention_mask"] == 0] == IGNORE).all()
    batch = collate([row, rows[0]])
    assert batch["attention_mask"].shape == (2, 64)


def test_sft_truncation_keeps_only_examples_with_a_response():
    inputs, targets = example_arrays([1, 2, 3, 4], [5, 6], EOS, seq_len=4)
    assert inputs.tolist() == [1, 2, 3, 4] and targets.tolist() == [IGNORE, IGNORE, IGNORE, 5]
    assert example_arrays([1, 2, 3, 4, 5], [6], EOS, seq_len=3) is None
