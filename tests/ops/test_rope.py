import torch

from ratlm.ops import rope
from ratlm.ops.rope import apply_rope, rope_cos_sin, rotate


def test_rotate_matches_apply_rope():
    x = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    pos = torch.tensor([[3, 4, 5, 6, 7, 8, 9], [0, 1, 2, 3, 4, 5, 6]])
    cos, sin = rope_cos_sin(pos, 8, dtype=torch.float64)
    torch.testing.assert_close(rotate(x, pos), apply_rope(x, cos[:, :, None], sin[:, :, None]))
    cos, sin = rope_cos_sin(torch.arange(5, 12), 8, dtype=torch.float64)
    torch.testing.assert_close(rotate(x, 5), apply_rope(x, cos[:, None], sin[:, None]))


def test_table_made_in_inference_mode_still_trains(monkeypatch):
    """The cached table is shared: made under inference_mode, it must still be usable with autograd."""
    monkeypatch.setattr(rope, "_TABLES", {})
    with torch.inference_mode():
        rotate(torch.randn(1, 4, 1, 8), 0)
    x = torch.randn(1, 4, 1, 8, requires_grad=True)
    rotate(x, 0).sum().backward()
    assert x.grad is not None


def test_rotate_rows_matches_apply_rope():
    """One position for every vector (a python int, past the first table's size so that it grows), or one per
    row (a tensor broadcast over the vectors)."""
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.tensor([1500]), 8, dtype=torch.float64)
    torch.testing.assert_close(rope.rotate_rows(x, 1500), apply_rope(x, cos, sin))
    pos = torch.tensor([[2], [0], [9]])
    cos, sin = rope_cos_sin(pos, 8, dtype=torch.float64)
    torch.testing.assert_close(rope.rotate_rows(x, pos), apply_rope(x, cos, sin))
