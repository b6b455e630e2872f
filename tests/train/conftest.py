"""Fixtures of the training tests (plain helpers are in train_helpers.py)."""
import pytest
from helpers import write_corpus


@pytest.fixture
def corpus_dir(tmp_path):
    """A small folder of Python files to train on."""
    return write_corpus(tmp_path / "src")
