"""`FacetUser`: the locust User every scenario subclasses, one `sdk.Client` per simulated user.

Each SDK call goes through `FacetUser.call`, which fires locust's `request` event named
`<Service>/<Rpc>` (e.g. "Retrieval/Search") with the call's latency in milliseconds and, on
failure, an exception whose message starts with the gRPC status code name
("UNAVAILABLE: ...", "RESOURCE_EXHAUSTED: ..."), so locust's failure table groups by status.
Imported only inside the locust process (it needs gevent's monkey-patching first).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sized
from typing import Any, ClassVar, TypeVar

import numpy as np
from locust import User, constant

import sdk
from sdk._contract import capability as contract

T = TypeVar("T")
# Unique per locust process: names what a run creates (collections, document ids).
PROCESS_ID = uuid.uuid4().hex[:8]
# Characters of a server's error message kept in a failure's name: locust groups failures by
# message, so a long message (one that quotes the request) would split one status into many rows.
FAILURE_MESSAGE_CHARS = 160


class CallFailed(Exception):
    """A failed call as locust records it: "<STATUS_CODE>: <message>"."""


def address_for(capability: str, host: str | None) -> str:
    """Where a user sends a capability's calls: `FACET_<NAME>_ADDR` when set (as the SDK reads
    it), else `host` (locust's `--host`, a host name; a scheme and a port in it are dropped) or
    localhost, at the capability's default port (where `facet up` starts it).

    Args:
        capability: a registry name, e.g. "retrieval".
        host: locust's `--host`, or None.
    Returns:
        "host:port".
    """
    row = contract(capability)
    explicit = os.environ.get(row.address_env)
    if explicit:
        return explicit
    name = (host or "").split("://", 1)[-1].strip("/") or "localhost"
    if name.startswith("["):  # [::1] or [::1]:50053
        name = name[: name.index("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return f"{name}:{row.default_port}"


def failure(exc: BaseException) -> CallFailed:
    """The exception locust records for a failed call: the gRPC status code name first."""
    if isinstance(exc, sdk.FacetError):
        message = (
            exc.message if len(exc.message) <= FAILURE_MESSAGE_CHARS else exc.message[:FAILURE_MESSAGE_CHARS] + "…"
        )
        return CallFailed(f"{exc.code.name}: {message}")
    return CallFailed(f"{type(exc).__name__}: {str(exc)[:FAILURE_MESSAGE_CHARS]}")


def response_length(result: object) -> int:
    """A reply's size as locust reports it: bytes of an array, else items of a list, else 0."""
    if isinstance(result, np.ndarray):
        return int(result.nbytes)
    if isinstance(result, list) and result and isinstance(result[0], np.ndarray):
        return sum(int(a.nbytes) for a in result)
    return len(result) if isinstance(result, Sized) else 0


_shared: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}  # one per key: gevent locks under locust's monkey-patching
_locks_lock = threading.Lock()


def shared(key: str, make: Callable[[], T | None]) -> T | None:
    """What the users of one locust process share (models discovered, clips simulated): made by
    the first user that asks, under the key's own lock (the users of other scenarios do not
    wait); a None (setup failed, recorded) is not kept.

    Args:
        key: names the value in this process, e.g. "sae.latents".
        make: makes it; None when it could not.
    Returns:
        The value, or None.
    """
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        if key not in _shared:
            value = make()
            if value is None:
                return None
            _shared[key] = value
        return _shared[key]  # type: ignore[no-any-return]


_in_flight_at_stop: list[float] = []  # seconds each call cut off by the end of the run had waited


def take_in_flight_at_stop() -> list[float]:
    """The calls the end of the run cut off (not in locust's stats): how long each had waited,
    seconds; emptied for the next run."""
    waits = list(_in_flight_at_stop)
    _in_flight_at_stop.clear()
    return waits


def shared_value(key: str) -> Any:
    """A shared value if some user made it, else None."""
    return _shared.get(key)


def forget_shared() -> None:
    """Empty the shared values (at the end of a run; the next run discovers again)."""
    with _locks_lock:
        _shared.clear()
        _locks.clear()


class FacetUser(User):
    """One simulated caller of one capability: its own `sdk.Client`, back-to-back calls.

    Subclasses set `capability` (a registry name) and `rpcs` (the RPCs their tasks call; a test
    checks a short run has calls of each), prepare their inputs in `setup()` and define
    weighted `@task`s that call `self.call("<Rpc>", self.client.<method>, ...)`. A user starts
    with one round of every task, in the order they are defined (so even a run of a few seconds
    calls each RPC, and the service is warm), then runs the weighted mix. `wait_time` is 0: each
    user is a closed loop, so users = calls in flight and throughput is what the service sustains.
    """

    abstract = True
    capability: ClassVar[str] = ""
    rpcs: ClassVar[tuple[str, ...]] = ()
    wait_time = constant(0)

    def on_start(self) -> None:
        addresses: dict[str, Any] = {self.capability: address_for(self.capability, self.host)}
        self.client = sdk.Client(**addresses)
        self.setup()
        for task in dict.fromkeys(self.tasks):  # each task once, in definition order
            task(self)  # type: ignore[operator]

    def setup(self) -> None:
        """Prepare the inputs (discover models, share what the process's users share); `self.client`
        is ready. Nothing by default."""

    def on_stop(self) -> None:
        self.client.close()

    @classmethod
    def after_run(cls, host: str | None) -> None:
        """Called once in the locust process when a run stops, before the shared values are
        forgotten: undo what the run created (e.g. a collection). Nothing by default.

        Args:
            host: locust's `--host`, as the users had it.
        """

    @property
    def service(self) -> str:
        """The gRPC service's short name, e.g. "Retrieval" (request names are `<service>/<rpc>`)."""
        return contract(self.capability).service_name.rsplit(".", 1)[-1]

    def call(self, rpc: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Call `method(*args, **kwargs)` and report it to locust as `<Service>/<rpc>`.

        A generator's result (a server stream) is read to its end inside the timing and
        returned as a list.

        Args:
            rpc: the RPC's name as in the proto, e.g. "Search".
            method: a bound `sdk.Client` method.
        Returns:
            The method's result, or None when the call failed (the failure is recorded).
        """
        start = time.perf_counter()
        result: Any = None
        error: CallFailed | None = None
        try:
            result = method(*args, **kwargs)
            if isinstance(result, Iterator):
                result = list(result)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, by status
            error = failure(exc)
            result = None
        except BaseException:  # GreenletExit: the run stopped this user with the call in flight
            _in_flight_at_stop.append(time.perf_counter() - start)
            raise
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"{self.service}/{rpc}",
            response_time=elapsed_ms,
            response_length=0 if result is None else response_length(result),
            exception=error,
            context={"capability": self.capability},
        )
        return result
