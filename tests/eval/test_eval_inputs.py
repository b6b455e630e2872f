"""Bad input to `ratlm eval`: one line, exit 2, checked before any model runs."""
import re

import pytest

from ratlm.cli import main


def one_error(capsys, argv, pattern):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert re.search(pattern, err), err


@pytest.mark.parametrize("option, match", [
    ("digits=abc", "option digits='abc' must be a whole number >= 1"),
    ("digits=0", "option digits=0 must be a whole number >= 1"),
    ("haystack=3", "option haystack=3 must be a word"),
])
def test_retrieval_options_are_type_checked(random_dirs, capsys, tmp_path, option, match):
    one_error(capsys, ["eval", "retrieval", random_dirs[0], "--task", "passkey", "-o", option, "--lengths", "64",
                       "-n", "1", "--out", tmp_path], match)


def test_ppl_tokenizer_larger_than_the_vocabulary(random_dirs, text_file, capsys, tmp_path):
    from ratlm.data.bpe import train_bpe

    train_bpe([open(text_file).read()] * 4, 300).save_pretrained(tmp_path / "bpe")
    one_error(capsys, ["eval", "ppl", random_dirs[0], "--data", text_file, "--tokenizer", tmp_path / "bpe",
                       "--out", tmp_path / "o"], "the tokenizer has 300 tokens but the model's vocabulary has only 259")


def test_out_that_is_a_file_is_refused_before_the_run(random_dirs, text_file, capsys, tmp_path):
    (tmp_path / "taken").write_text("x")
    for cmd in (["ppl", "--data", text_file], ["length", "--data", text_file], ["retrieval", "--task", "passkey"]):
        one_error(capsys, ["eval", cmd[0], random_dirs[0], *cmd[1:], "--out", tmp_path / "taken"],
                  "--out .*taken is a file; give a folder")


def test_data_that_is_not_utf8_names_file_and_offset(random_dirs, capsys, tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    one_error(capsys, ["eval", "ppl", random_dirs[0], "--data", tmp_path / "latin.txt", "--out", tmp_path / "o"],
              "latin.txt: not UTF-8 text \\(byte 0xe9 at offset 3\\)")
