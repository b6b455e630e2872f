from ratlm.data.tokenizer import BYTE_VOCAB, byte_tokenizer, load_tokenizer


def test_byte_tokenizer_round_trip(tmp_path):
    tok = byte_tokenizer()
    text = "héllo wörld\n\tdef f(x):  return x ** 2  # ünïcode ✓"
    ids = tok(text).input_ids
    assert ids == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert len(tok) == BYTE_VOCAB and (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (256, 257, 258)
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    assert again(text).input_ids == ids and again.padding_side == "left"
