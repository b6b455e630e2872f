"""`name=value` options as users write them on the command line: one parser for all commands."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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
