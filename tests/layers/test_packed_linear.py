"""Linear layers with packed weights for CPU inference (ratlm.ops.linear, ratlm.layers.common.Linear):
the same values as nn.Linear, and nn.Linear's path wherever the packed one does not apply."""
import pytest
import torch
from models.hf_tiny import KINDS, fresh_model

from ratlm.layers.common import Linear, pack_linears, unpack_linears
from ratlm.ops import linear as packing

needs_pack = pytest.mark.skipif(not packing.can_pack(torch.float32), reason="this torch build cannot pack weights")


def marked(out_features=24, in_features=16, bias=True, seed=0):
    torch.manual_seed(seed)
    lin = Linear(in_features, out_features, bias=bias)
    assert pack_linears(lin) == 1 and lin.pack
    return lin


@needs_pack
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(16,), (1, 16), (1, 1, 16), (2, 16), (5, 16), (2, 7, 16)])
def test_packed_values_equal_nn_linear(shape, bias):
    lin = marked(bias=bias)
    x = torch.randn(*shape)
    with torch.no_grad():
        y = lin(x)
    assert (lin._packed is not None) == (x.numel() > 16)  # the packed path ran, except for a single row
    torch.testing.assert_close(y, torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-6)
    # a strided (non-contiguous) input too
    xs = torch.randn(2, 9, 16)[:, ::2]
    with torch.inference_mode():
        torch.testing.assert_close(lin(xs), torch.nn.functional.linear(xs, lin.weight, lin.bias), rtol=1e-5,
                                   atol=1e-6)


@needs_pack
def test_with_gradients_it_is_nn_linear():
    lin = marked()
    x = torch.randn(3, 16, requires_grad=True)
    lin(x).square().sum().backward()
    assert lin._packed is None  # never packed: training goes through nn.Linear
    ref = Linear(16, 24)
    ref.load_state_dict(lin.state_dict())
    x2 = x.detach().clone().requires_grad_(True)
    ref(x2).square().sum().backward()
    torch.testing.assert_close(lin.weight.grad, ref.weight.grad, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)


@needs_pack
def test_the_copy_follows_the_weight():
    """Changed in place (an optimizer step, load_state_dict), or replaced: the next call packs again."""
    lin = marked()
    x = torch.randn(4, 16)
    with torch.no_grad():
        lin(x)
        first = lin._packed
        lin(x)
        assert lin._packed is first  # packed once
        lin.weight.mul_(2.0)
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5,
                                   atol=1e-6)
        assert lin._packed is not first
        lin.load_state_dict({"weight": torch.randn(24, 16), "bias": torch.zeros(24)})
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5,
                                   atol=1e-6)
        lin.weight = torch.nn.Parameter(torch.randn(24, 16))
        torch.testing.assert_close(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias), rtol=1e-5,
                                   atol=1e-6)


def test_other_dtypes_autocast_and_unpacked_use_nn_linear():
    lin = marked()
    with torch.no_grad():
        lin64 = marked().double()
        x64 = torch.randn(3, 16, dtype=torch.float64)
        assert torch.equal(lin64(x64), torch.nn.functional.linear(x64, lin64.weight, lin64.bias))
        assert lin64._packed is None  # float64: no oneDNN packing
        x = torch.randn(3, 16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert lin(x).dtype == torch.bfloat16
        assert lin._packed is None
        unpack_linears(lin)
        assert not lin.pack and torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))
        assert lin._packed is None
        lb = marked().to(torch.bfloat16)
        xb = torch.randn(3, 16, dtype=torch.bfloat16)
        torch.testing.assert_close(lb(xb), torch.nn.functional.linear(xb, lb.weight, lb.bias))
        assert (lb._packed is not None) == packing.can_pack(torch.bfloat16)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("RATLM_PACK_WEIGHTS", "0")
    assert pack_linears(Linear(4, 4)) == 0
    monkeypatch.setenv("RATLM_PACK_WEIGHTS", "1")
    assert pack_linears(Linear(4, 4)) == 1


@needs_pack
@pytest.mark.parametrize("kind", list(KINDS))
def test_models_decode_alike_packed_or_not(kind):
    """Every mixer and hybrid: prefill and cached decode steps give the same logits (fp32 tolerance) with
    packed weights as without, and the same greedy tokens."""
    model = fresh_model(kind)
    ids = torch.randint(0, 256, (2, 11))

    def run():
        out = []
        with torch.no_grad():
            cache = model.make_cache(2)
            logits = model(ids, cache=cache, use_cache=True).logits
            out.append(logits)
            nxt = logits[:, -1:].argmax(-1)
            for _ in range(6):
                logits = model(nxt, cache=cache, use_cache=True).logits
                out.append(logits)
                nxt = logits[:, -1:].argmax(-1)
        return out

    plain = run()
    n = pack_linears(model)
    assert n == 4 * len(KINDS[kind]) + 1  # in/out projections and the MLP of each layer, the LM head
    packed = run()
    assert sum(m._packed is not None for m in model.modules() if isinstance(m, Linear)) == n
    for a, b in zip(plain, packed):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert torch.equal(a[:, -1].argmax(-1), b[:, -1].argmax(-1))
