"""`name=value` options as users write them on the command line: one parser for all commands."""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .errors import UserError

_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true'/'false' (yes/no, on/off) -> bool, 'none' -> None, else the string."""
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_pairs(items: str | Iterable[str] | dict | None, what: str, continuation: bool = False) -> dict:
    """'a=1,b=x' (or a list of 'a=1' items) -> {'a': 1, 'b': 'x'}; `what` names the option in errors.
    With `continuation`, a comma-separated part without '=' continues the previous value
    (data_files=a.json,b.json)."""
    if isinstance(items, dict):
        return dict(items)
    if items is None:
        return {}
    parts = items.split(",") if isinstance(items, str) else list(items)
    out: dict = {}
    last = None
    for part in parts:
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            if continuation and last is not None and isinstance(items, str):
                out[last] = f"{out[last]},{part}"
                continue
            raise ValueError(f"{what}: bad option {part!r}; write NAME=VALUE (several separated by commas)")
        last = name.strip()
        out[last] = parse_value(value.strip())
    return out


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """A size as users write it: '4GiB', '512MiB', '1.5GB', '1e9', '1000000' -> bytes (a positive int)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise UserError(f"cannot read {text!r} as a size; write e.g. 4GiB, 512MiB, 2GB or a number of bytes")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n < 1:
        raise UserError(f"a size must be positive, got {text!r}")
    return n
