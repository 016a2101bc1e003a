"""google.protobuf.Struct / ListValue ↔ JSON-like Python values, for every capability whose
messages carry them (retrieval's metadata and filters, rerank's training records).

A Struct keeps every number as a double (google/protobuf/struct.proto: `double number_value`),
so an integer sent as 60 arrives as 60.0. `from_struct` gives integral numbers back as int:
the SDK sends only integers within +-2**53 (`sdk._arguments.json_object`), which a double holds
exactly, so every integer sent comes back equal and as an int.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from sdk._arguments import MAX_EXACT_INTEGER
from sdk._errors import InvalidArgument


def to_struct(data: Mapping[str, Any] | None, what: str) -> struct_pb2.Struct | None:
    """A dict as a Struct (None stays None).

    Args:
        data: a JSON-like mapping (already checked by `sdk._arguments.json_object`), or None.
        what: the argument's name, for the error.
    Returns:
        The Struct, or None for None.
    Raises:
        InvalidArgument: a value protobuf cannot store (not str, number, bool, None, list, dict).
    """
    if data is None:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(dict(data))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{what} must be JSON-like (str, number, bool, None, list, dict): {exc}") from None
    return struct


def from_struct(message: struct_pb2.Struct | struct_pb2.ListValue) -> Any:
    """A Struct as a dict, or a ListValue as a list, with integral numbers as int.

    Args:
        message: the Struct or ListValue of a reply.
    Returns:
        dict[str, Any] for a Struct, list[Any] for a ListValue; nested values likewise: str,
        bool, None, int (a number with no fractional part within +-2**53), float (any other
        number, and -0.0), list, dict.
    """
    return _integral(json_format.MessageToDict(message))


def _integral(value: Any) -> Any:
    if isinstance(value, float):
        negative_zero = value == 0.0 and math.copysign(1.0, value) < 0.0
        return int(value) if value.is_integer() and abs(value) <= MAX_EXACT_INTEGER and not negative_zero else value
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value
