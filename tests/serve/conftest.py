import importlib.util

import pytest

# The HTTP side needs the serve extra (pip install -e ".[serve]"); without it only the engine's tests run.
SERVE_EXTRAS = ("fastapi", "uvicorn", "prometheus_client", "openai", "httpx")
MISSING = [m for m in SERVE_EXTRAS if importlib.util.find_spec(m) is None]
collect_ignore = ["test_http.py", "test_soak.py", "test_cli.py", "test_bench_serve.py"] if MISSING else []


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """Every test in this folder runs torch on one thread (the fixture is in tests/conftest.py)."""
