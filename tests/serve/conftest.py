import pytest
from helpers import missing_serve_extras

# The HTTP side needs the serve extra (pip install -e ".[serve]"); without it only the engine's tests run.
HTTP_TESTS = ["test_http.py", "test_soak.py", "test_cli.py", "test_bench_serve.py"]
collect_ignore = HTTP_TESTS if missing_serve_extras() else []


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test in this folder runs torch on one thread (the fixture is in tests/conftest.py)."""
