import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run best on one thread; on a shared, busy CPU, torch's thread pool can make them
    10-100x slower. (Applies to every test in this folder.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

