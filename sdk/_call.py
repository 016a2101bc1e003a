"""One RPC as data, shared by Client and AsyncClient (which only differ in how they send it).

A capability module declares its `Service` once and builds a `Call` per method; the transport
(`sdk._transport`) opens the channel, sends the call and maps errors, for any capability.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from google.protobuf import message

from sdk._contract import capability

R = TypeVar("R")


@dataclass(frozen=True)
class Service:
    """What the transport needs to reach one capability.

    Attributes:
        capability: its name in `sdk._contract.CAPABILITIES`, e.g. "retrieval"; it picks the
            address (`FACET_<NAME>_ADDR`, the default port) and the gRPC service name.
        stub: the generated stub class, e.g. `retrieval_pb2_grpc.RetrievalStub`; it is called
            with a channel (sync or `grpc.aio`).
        idempotent: the RPC method names that are safe to send again after UNAVAILABLE (the
            same request twice leaves the same state as once); only these are retried
            (`sdk._retry`). A server-streaming one is retried only before its first message.
            An RPC left out is never retried: the safe default for a new one.
    """

    capability: str
    stub: Callable[[Any], Any]
    idempotent: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        capability(self.capability)  # a name missing from the registry fails at import


@dataclass(frozen=True)
class Call(Generic[R]):
    """One RPC: which service and method, the request, and how to read a response message
    (the one response of a unary call, or each message of a server stream)."""

    service: Service
    method: str
    request: message.Message
    parse: Callable[[Any], R]
