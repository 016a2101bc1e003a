"""Values from a request quoted in error messages stay readable whatever their length."""

from __future__ import annotations

from services.runtime.errors import SHOWN_CHARS, shown


def test_a_short_value_is_quoted_whole_and_a_long_one_is_cut_with_its_length() -> None:
    assert shown("pendulum") == "pendulum"
    long = "重力" * 5000
    quoted = shown(long)
    assert quoted.startswith(long[:SHOWN_CHARS]) and quoted.endswith("(10000 characters)")
    assert len(quoted) < SHOWN_CHARS + 30
