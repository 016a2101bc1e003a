"""facet.v1.Tensor ↔ numpy for both ends, with the checks a server needs before trusting the bytes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import common_pb2

_TO_NUMPY: dict[Any, np.dtype[Any]] = {
    common_pb2.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    common_pb2.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    common_pb2.DATA_TYPE_INT64: np.dtype("<i8"),
    common_pb2.DATA_TYPE_INT32: np.dtype("<i4"),
    common_pb2.DATA_TYPE_UINT8: np.dtype("u1"),
    common_pb2.DATA_TYPE_BOOL: np.dtype("?"),
}
_FROM_NUMPY = {v.newbyteorder("="): k for k, v in _TO_NUMPY.items()}


def tensor_from_numpy(array: np.ndarray) -> common_pb2.Tensor:
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _FROM_NUMPY:
        raise TypeError(f"no Tensor dtype for {array.dtype}")
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return common_pb2.Tensor(dtype=_FROM_NUMPY[dtype], shape=list(array.shape), data=little.tobytes())


def finite_floats(values: Iterable[float], what: str) -> np.ndarray:
    """A repeated float field of a reply as float32 [n], checked finite. Raises InvalidArgument
    (the transport reports it as ProtocolError: a bad reply is the server's fault)."""
    array = np.asarray(list(values), dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidArgument(f"{what} must be finite (no NaN or inf)")
    return array


def finite_float(value: float, what: str) -> float:
    """A float field of a reply, checked finite. Raises InvalidArgument (the transport reports it
    as ProtocolError: a bad reply is the server's fault)."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{what} is not finite ({value})")
    return float(value)


def tensor_to_numpy(tensor: common_pb2.Tensor, what: str = "tensor") -> np.ndarray:
    """Decode and check a Tensor; non-finite floats are rejected. Raises InvalidArgument."""
    if tensor.dtype not in _TO_NUMPY:
        raise InvalidArgument(f"{what}: dtype is unset or unknown ({tensor.dtype})")
    dtype = _TO_NUMPY[tensor.dtype]
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{what}: negative dimension in shape {shape}")
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd shapes
    if expected != len(tensor.data):
        raise InvalidArgument(f"{what}: shape {shape} of {dtype} needs {expected} bytes, got {len(tensor.data)}")
    array = np.frombuffer(tensor.data, dtype=dtype).reshape(shape)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidArgument(f"{what} must be finite (no NaN or inf)")
    return array
