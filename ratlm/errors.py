"""Errors a user can fix: raised by library code, printed by the CLI as one line (exit 2)."""
from __future__ import annotations


class UserError(Exception):
    """Bad input or a bad option: the message says what is wrong and how to fix it, in one line."""
