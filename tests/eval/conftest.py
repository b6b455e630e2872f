"""Session fixtures for the eval tests (the model builders are in eval_models.py)."""
import pytest
from eval_models import TEXT, copy_model, passkey_alphabet, random_model, save, trained_model


@pytest.fixture(scope="session")
def copy_dir(tmp_path_factory):
    return save(copy_model(passkey_alphabet()), tmp_path_factory.mktemp("copy"))


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    return save(trained_model(), tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def random_dirs(tmp_path_factory):
    return [save(random_model(p, train_length=32, **({"chunk_size": 8} if p.startswith("rat") else {})),
                 tmp_path_factory.mktemp(p)) for p in ("rat-tiny", "attention-tiny")]


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "text.txt"
    path.write_text(TEXT)
    return str(path)


@pytest.fixture(scope="session")
def mini_dir(tmp_path_factory):
    """Small LongBench-format tasks (ratlm eval longbench-mini): 3 examples of 3 paragraphs per task."""
    from ratlm.eval.longbench import mini

    path = tmp_path_factory.mktemp("longbench_mini")
    mini.write(str(path), n=3, k=3, seed=0)
    return str(path)
