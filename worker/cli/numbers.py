"""Whole numbers as typed on a command line or in a file: ASCII digits only. Python's int() also
takes Arabic-Indic and fullwidth digits, '+1', ' 1' and '1_000', which no one means as an id."""

from __future__ import annotations

import re

ASCII_DIGITS = re.compile(r"[0-9]+")


def ascii_int(text: str) -> int | None:
    """The number `text` spells in ASCII digits, or None if it is anything else."""
    return int(text) if ASCII_DIGITS.fullmatch(text) else None
