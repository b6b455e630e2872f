"""Fixtures for every test folder."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models run best on one thread; on a shared, busy CPU, torch's thread pool can make them
    10-100x slower. Folders of tiny-model tests switch it on for all their tests (their conftest.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_report_header(config):
    from helpers import missing_serve_extras

    missing = missing_serve_extras()
    if missing:
        return (f"serving tests over HTTP not collected: {', '.join(missing)} missing "
                '(pip install -e ".[test,serve]")')
