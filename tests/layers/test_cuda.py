"""CUDA parity (the automatic CUDA backend: flex_attention, compiled) with the plain PyTorch backend on the
CPU, forward and backward, and finite bfloat16. Marked `cuda`; skipped without a GPU
(`python -m pytest -m cuda` on a CUDA machine; scripts/device_check.py runs them first)."""
import pytest
import torch

from ratlm.layers import RAT, SlidingWindowAttention

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LAYERS = {"rat16": lambda: RAT(256, 4, chunk_size=16), "rat64": lambda: RAT(256, 4, chunk_size=64),
          "swa128": lambda: SlidingWindowAttention(256, 4, window=128)}


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("T", [1000, 4096])
@pytest.mark.parametrize("name", list(LAYERS))
def test_cuda_matches_cpu(name, T):
    torch.manual_seed(0)
    ref = LAYERS[name]()
    x = torch.randn(2, T, 256, requires_grad=True)
    y_ref = ref(x)
    y_ref.square().mean().backward()
    gpu = LAYERS[name]().cuda()
    gpu.load_state_dict(ref.state_dict())
    xc = x.detach().cuda().requires_grad_(True)
    y = gpu(xc)
    y.square().mean().backward()
    # TF32 may be on for CUDA matmuls; 1e-3 still catches any wrong mask or state
    assert _rel(y.cpu(), y_ref) < 1e-3
    assert _rel(xc.grad.cpu(), x.grad) < 1e-3


@pytest.mark.parametrize("name", list(LAYERS))
def test_cuda_bfloat16_is_finite(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().cuda().bfloat16()
    x = torch.randn(2, 1000, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    y.float().square().mean().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
