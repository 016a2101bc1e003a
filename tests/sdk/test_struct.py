"""Struct / ListValue replies as Python values (`sdk._struct.from_struct`): protobuf keeps every
number as a double; the integers the SDK can send (within +-2**53) come back as int."""

from __future__ import annotations

import math

from google.protobuf import struct_pb2

from sdk._struct import from_struct, to_struct


def test_integral_numbers_within_two_to_the_53_are_int_and_the_rest_stay_float() -> None:
    struct = to_struct({"a": 60, "b": 2.0, "c": -(2**53), "d": 0.5, "e": 2.0**53 + 2, "f": 1e300, "g": -0.0}, "x")
    assert struct is not None
    got = from_struct(struct)
    assert got == {"a": 60, "b": 2, "c": -(2**53), "d": 0.5, "e": 2.0**53 + 2, "f": 1e300, "g": 0.0}
    assert {k: type(v) for k, v in got.items()} == {"a": int, "b": int, "c": int, "d": float, "e": float, "f": float, "g": float}
    assert math.copysign(1.0, got["g"]) == -1.0  # -0.0 keeps its sign


def test_a_list_value_and_nesting() -> None:
    values = struct_pb2.ListValue()
    values.extend([{"pairs": 128, "split": "train"}, [1, 1.5], True, None, "3"])
    got = from_struct(values)
    assert got == [{"pairs": 128, "split": "train"}, [1, 1.5], True, None, "3"]
    assert type(got[0]["pairs"]) is int and [type(v) for v in got[1]] == [int, float] and got[2] is True
