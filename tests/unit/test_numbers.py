"""Whole numbers as typed: ASCII digits only, and never int()'s own refusal of a long one."""

from __future__ import annotations

import pytest

from worker.cli.numbers import ascii_int, cut_short, quoted


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("42", 42),
        ("0", 0),
        ("007", 7),
        ("0" * 5000 + "1", 1),  # leading zeros are no digits of the number, but count for int()
        ("9" * 20, 10**20 - 1),
        ("9" * 21, None),  # longer than any id or quantity
        ("9" * 5000, None),
        ("+1", None),
        ("\u0661", None),
        ("", None),
    ],
)
def test_ascii_int_reads_ascii_digits_of_any_length_without_a_traceback(
    text: str, number: int | None
) -> None:
    assert ascii_int(text) == number


def test_a_long_value_is_shown_cut_short_saying_how_long() -> None:
    assert quoted("x" * 40) == repr("x" * 40)
    assert quoted("x" * 41) == f"{'x' * 40!r}... (41 characters)"
    assert cut_short("7" * 1000) == f"{'7' * 40}... (1,000 characters)"
