"""Whole numbers as typed on a command line or in a file: ASCII digits only. Python's int() also
takes Arabic-Indic and fullwidth digits, '+1', ' 1' and '1_000', which no one means as an id."""

from __future__ import annotations

import re
from collections.abc import Callable

ASCII_DIGITS = re.compile(r"[0-9]+")
# More than any id or quantity has (a bigint has 19): a longer number is out of every range, and
# past 4,300 digits int() itself refuses it.
MAX_DIGITS = 20
SHOWN_CHARACTERS = 40  # of a value echoed in an error: enough to recognise it, one line in all


def ascii_int(text: str) -> int | None:
    """The number `text` spells in ASCII digits, or None if it is anything else (or longer than
    any id)."""
    if not ASCII_DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"  # leading zeros count against int()'s limit too
    return int(digits) if len(digits) <= MAX_DIGITS else None


def quoted(text: str) -> str:
    """`text` as an error shows what was typed: quoted, and cut short if it is long."""
    return cut_short(text, repr)


def cut_short(text: str, shown: Callable[[str], str] = str) -> str:
    """`text` as `shown`, of its first SHOWN_CHARACTERS only if it is longer, saying how long."""
    if len(text) <= SHOWN_CHARACTERS:
        return shown(text)
    return f"{shown(text[:SHOWN_CHARACTERS])}... ({len(text):,} characters)"
