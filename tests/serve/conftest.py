import pytest


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test in this folder runs torch on one thread (the fixture is in tests/conftest.py)."""
