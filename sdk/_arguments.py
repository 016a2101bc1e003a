"""Client-side checks of the arguments of every public SDK method, written once.

Each check takes the value and the argument's name as the user wrote it (`"texts"`,
`"metadata[2]"`), returns the value in the form the request needs, and raises
`sdk.InvalidArgument` (also a ValueError and a TypeError) whose message starts with that name and
says what is expected. Nothing is sent when a check fails. What the checks cover is what the
*client* can know: types, what a protobuf field can hold (int32 range, float32 range, UTF-8),
JSON-safety of metadata, and signs (a count or an index is never negative). Ranges are the
service's to check (`top_k=0`, `retrieval.max_top_k`, ...): its INVALID_ARGUMENT gives the valid
range in force.

Rules that hold for every method:

- **A list of strings is a list.** Where a method takes several strings (`texts`, `ids`), one
  string is rejected (it would otherwise be read as one item per character); pass `[text]`.
  Any other iterable of strings (tuple, generator, numpy array of str) is taken in order.
- **Strings are Unicode text.** A string that cannot be encoded as UTF-8 (a lone surrogate such
  as "\\ud800", e.g. from a broken decode) is rejected with its position.
- **Integers are integers**: `int` or a numpy integer; bools, floats ("3.0") and strings are
  rejected; each has the range the protocol field can carry (and >= 0 for counts and indices).
- **Numbers are finite**: `int`, `float` or numpy scalars, no NaN or infinity, within float32's
  range where the protocol carries float32.
- **Arrays**: float arrays are sent as float32 and must be finite after that conversion (1e39
  overflows float32 to inf and is rejected); the number of dimensions is checked.
- **Metadata and filters are JSON**: dicts with string keys; values str, bool, None, finite
  numbers, integers within +-2**53 (stored as doubles: larger ones would silently change),
  lists and dicts, nested at most `MAX_JSON_DEPTH` levels.
- **timeout_s** is None (the client's default) or a finite number of seconds > 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np

from sdk._contract import MAX_JSON_DEPTH
from sdk._errors import InvalidArgument

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
# protobuf Struct stores every number as a double: integers beyond this lose their value.
MAX_EXACT_INTEGER = 2**53


def _kind(value: object) -> str:
    return type(value).__name__


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text(value: object, name: str) -> str:
    """A string that encodes as UTF-8.

    Raises:
        InvalidArgument: not a str, or a lone surrogate in it (the message gives its index).
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {_kind(value)} {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{name} is not valid Unicode text: {value[exc.start]!r} at index {exc.start} "
            "(a lone surrogate) cannot be encoded as UTF-8"
        ) from None
    return value


def texts(value: object, name: str) -> list[str]:
    """A list of strings, each checked by `text`.

    Args:
        value: any iterable of str except a str itself (the SDK's one rule: a single string
            where a list is expected is rejected, never read character by character).
        name: the argument's name, e.g. "ids".
    Returns:
        The strings as a list, in order.
    Raises:
        InvalidArgument: a single str or bytes, a mapping, a non-iterable, or an item that is
            not a valid string (named with its index, e.g. "texts[3]").
    """
    if isinstance(value, str):
        raise InvalidArgument(f"{name} must be a list of strings, not one string: pass [{_shown(value)}]")
    if isinstance(value, (bytes, bytearray, memoryview, Mapping)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{name} must be a list of strings, got {_kind(value)} {_shown(value)}")
    if isinstance(value, np.ndarray) and value.ndim != 1:
        raise InvalidArgument(f"{name} must be a flat list of strings, got an array of shape {list(value.shape)}")
    items = list(value)
    return [text(item.item() if isinstance(item, np.str_) else item, f"{name}[{i}]") for i, item in enumerate(items)]


def integer(value: object, name: str, *, low: int = 0, high: int = INT32_MAX) -> int:
    """An integer in [low, high].

    Raises:
        InvalidArgument: a bool, float, str or other non-integer; a value out of range (the
            message gives the range).
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidArgument(f"{name} must be an integer, got {_kind(value)} {_shown(value)}")
    number = int(value)
    if not low <= number <= high:
        # without an upper limit of its own, int32's (the wire's) is no help to the reader
        rule = f"at least {low}" if high == INT32_MAX and number < low else f"between {low} and {high}"
        raise InvalidArgument(f"{name} must be {rule}, got {number}")
    return number


def optional_integer(value: object, name: str, *, low: int = 0, high: int = INT32_MAX) -> int | None:
    """None (the service's default), or an integer in [low, high] as `integer` checks it."""
    return None if value is None else integer(value, name, low=low, high=high)


def number(
    value: object, name: str, *, low: float | None = None, high: float | None = None, float32: bool = False
) -> float:
    """A finite real number, optionally in [low, high] and within float32's range.

    Raises:
        InvalidArgument: a bool, str or other non-number; NaN or infinity; out of range.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidArgument(f"{name} must be a number, got {_kind(value)} {_shown(value)}")
    try:
        result = float(value)
    except OverflowError:  # an int beyond float's range (10**400)
        raise InvalidArgument(f"{name} must be a finite number, got an integer beyond float's range") from None
    if not math.isfinite(result):
        raise InvalidArgument(f"{name} must be a finite number, got {result}")
    if float32 and abs(result) > FLOAT32_MAX:
        raise InvalidArgument(f"{name} must be within float32's range (|x| <= {FLOAT32_MAX:.4g}), got {result}")
    if (low is not None and result < low) or (high is not None and result > high):
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {result}")
    return result


def flag(value: object, name: str) -> bool:
    """A bool (Python's or numpy's).

    Raises:
        InvalidArgument: anything else, e.g. the string "false" (which would read as True).
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgument(f"{name} must be True or False, got {_kind(value)} {_shown(value)}")
    return bool(value)


def choice(value: object, name: str, options: Collection[str]) -> str:
    """One of `options`.

    Raises:
        InvalidArgument: anything else; the message lists the options.
    """
    if not isinstance(value, str) or value not in options:
        raise InvalidArgument(f"{name} must be one of {sorted(options)}, got {_shown(value)}")
    return value


def timeout(value: object, name: str = "timeout_s") -> float | None:
    """A deadline in seconds: None (take the default) or a finite number > 0.

    Raises:
        InvalidArgument: 0, a negative number, NaN, infinity or a non-number.
    """
    if value is None:
        return None
    seconds = number(value, name)
    if seconds <= 0:
        raise InvalidArgument(
            f"{name} must be a number of seconds > 0 (or None for the client's default), got {seconds}"
        )
    return seconds


def float_array(value: object, name: str, *, ndim: int | None, shape: str) -> np.ndarray:
    """A finite float32 array of `ndim` dimensions (None: any number of them).

    Args:
        value: an array or nested lists of real numbers (ints and floats of any width; not
            bools, strings or complex numbers).
        name: the argument's name.
        ndim: the number of dimensions required.
        shape: how the message writes the expected shape, e.g. "[n, d_in]".
    Returns:
        A C-contiguous float32 array.
    Raises:
        InvalidArgument: not numeric, ragged, the wrong number of dimensions, NaN or
            infinity, or values beyond float32's range (they would become infinity).
    """
    expected = f"a {ndim}-D float array {shape}" if ndim is not None else f"a float array {shape}"
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise InvalidArgument(f"{name} must be {expected}, got {_kind(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidArgument(f"{name} must be {expected}: {exc}") from None
    if array.dtype.kind not in "fiu":
        raise InvalidArgument(f"{name} must be {expected}, got dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise InvalidArgument(f"{name} must be {expected}, got shape {list(array.shape)}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidArgument(f"{name} must be finite (no NaN or inf)")
    with np.errstate(over="ignore"):
        result = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(result).all():
        raise InvalidArgument(f"{name} has values beyond float32's range (|x| <= {FLOAT32_MAX:.4g})")
    return result


def uint8_array(value: object, name: str, *, ndim: int, shape: str) -> np.ndarray:
    """A uint8 array of `ndim` dimensions (no conversion: other dtypes are rejected).

    Raises:
        InvalidArgument: not an array-like of uint8, or the wrong number of dimensions.
    """
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        raise InvalidArgument(f"{name} must be a uint8 array {shape}, got {_kind(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{name} must be a uint8 array {shape}: {exc}") from None
    if array.dtype != np.uint8 or array.ndim != ndim:
        raise InvalidArgument(f"{name} must be a uint8 array {shape}, got {array.dtype} {list(array.shape)}")
    return np.ascontiguousarray(array)


def json_object(value: object, name: str) -> dict[str, Any]:
    """A JSON object that protobuf's Struct stores exactly.

    Args:
        value: a mapping with str keys; values str, bool, None, finite numbers, integers within
            +-2**53, lists/tuples and mappings of the same, at most `MAX_JSON_DEPTH` levels deep.
        name: the argument's name; a bad value is named by its path, e.g. "metadata[0]['a'][2]".
    Returns:
        A plain dict copy (tuples become lists, numpy scalars Python numbers).
    Raises:
        InvalidArgument: not a mapping, a non-str key, a value of another type, NaN or
            infinity, an integer beyond +-2**53, a string that is not valid Unicode, nesting
            deeper than MAX_JSON_DEPTH (cycles included).
    """
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{name} must be a dict (a JSON object), got {_kind(value)} {_shown(value)}")
    result = _json(value, name, 1)
    assert isinstance(result, dict)
    return result


def _json(value: object, path: str, depth: int) -> Any:
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, str):
        return text(value, path)
    if isinstance(value, numbers.Integral):
        if abs(int(value)) > MAX_EXACT_INTEGER:
            raise InvalidArgument(
                f"{path} = {int(value)} cannot be stored exactly: numbers are stored as doubles, "
                f"so integers must be within +-2**53 ({MAX_EXACT_INTEGER}); send it as a string"
            )
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise InvalidArgument(f"{path} must be a finite number, got {float(value)}")
        return float(value)
    if isinstance(value, (Mapping, list, tuple)):
        if depth > MAX_JSON_DEPTH:
            raise InvalidArgument(f"{path} is nested deeper than {MAX_JSON_DEPTH} levels (the limit for JSON values)")
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidArgument(f"{path} has a key that is not a string: {_kind(key)} {_shown(key)}")
                text(key, f"{path} key {key!r}")
                out[key] = _json(item, f"{path}[{key!r}]", depth + 1)
            return out
        return [_json(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise InvalidArgument(
        f"{path} must be JSON-like (str, number, bool, None, list, dict), got {_kind(value)} {_shown(value)}"
    )


def json_objects(value: object, name: str, count: int) -> list[dict[str, Any] | None]:
    """One JSON object (or None) per item, `count` of them.

    Raises:
        InvalidArgument: a single mapping instead of a list, a length other than `count`, or
            an item that `json_object` rejects.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{name} must be a list with one dict (or None) per id, got {_kind(value)}")
    items = list(value)
    if len(items) != count:
        raise InvalidArgument(f"{name} has {len(items)} entries but ids has {count}")
    return [None if item is None else json_object(item, f"{name}[{i}]") for i, item in enumerate(items)]
