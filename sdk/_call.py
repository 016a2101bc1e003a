"""One RPC as data, shared by Client and AsyncClient (which only differ in how they send it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf import message

R = TypeVar("R")


@dataclass(frozen=True)
class Call(Generic[R]):
    """One RPC: which service and method, the request, and how to read the response."""

    service: str
    method: str
    request: message.Message
    parse: Callable[[Any], R]
