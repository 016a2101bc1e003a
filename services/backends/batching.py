"""A dynamic batcher with Triton's knobs, admission by estimated cost, and fair scheduling.

Batching. Requests queue while the model is busy; when it is free, queued requests (up to
`max_batch_size` rows) run together. With `max_queue_delay_microseconds` > 0 the batcher also
waits that long for company before running a batch that is not full; with 0 (the default, as
in Triton) an idle model runs a lone request at once. Inputs whose non-batch axes differ (token
sequences of different lengths) are right-padded with zeros to the longest, in groups that pad
cheaply (`services.backends.padding`).

Bounded work. The batcher learns what its batches cost (`services.backends.cost.CostModel`:
seconds from rows x width, measured on every batch). A batch is cut where its estimated run
time would pass `max_batch_duration_ms`, and a request larger than that (or than
`max_batch_size` rows) is split into chunks queued together. When a call is cancelled (its
client went away, its deadline passed), its chunks that have not started are dropped: the next
call waits at most for the one chunk already running.

Admission. A request is refused at once, before any inference runs for it, with a message
that names the limit's config key:

- RESOURCE_EXHAUSTED, `batching.max_queue_size`: the rows already queued plus its own would
  pass the limit;
- RESOURCE_EXHAUSTED, `batching.deadline_admission`: the work that would run before its last
  chunk finishes (the running batches' remaining time, the queued work scheduled ahead of it,
  its own chunks; divided among `in_flight` runners) is estimated to end after the call's
  deadline (`services.backends.deadline`: the interceptor records each RPC's deadline). Overload:
  the SDK's caller may retry later; the message counts other calls' rows apart from this call's;
- DEADLINE_EXCEEDED, `batching.deadline_admission`: the call's own work alone, on an idle model,
  is estimated to take longer than its deadline allows. Its own work is every request of the call
  (the same `CallScope`): a service that submits one call as several requests (a long document's
  windows, in length groups) is judged on all of them, never refused as overload by its own
  earlier requests. Not overload: a retry would fail the same way, the call needs a longer
  deadline or less work (the service may add its own remedy to the message).

Every estimate is the cost model's (`services.backends.cost`), fitted on the model's recent
batches: the messages say "about" and where the figure comes from.

Scheduling. Requests are queued per call and served in order of virtual finish time by cost
(`services.backends.fair_queue`): a small call goes ahead of the later chunks of the large
calls queued before it, and a large call's chunks still run after a bounded number of others.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping

import numpy as np
from prometheus_client import Counter, Gauge

from services.backends.cost import CostModel
from services.backends.deadline import CallScope, current_call
from services.backends.fair_queue import Entry, FairQueue
from services.backends.padding import length_groups, pad_concat, width
from services.runtime.config import BatchingConfig
from services.runtime.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from services.runtime.metrics import METRICS

Arrays = Mapping[str, np.ndarray]
RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]

# Merging requests into a batch (and chunks back into a reply) copies their arrays: above this
# many bytes the copy runs on a worker thread, so the event loop (health checks, other calls)
# never waits for it; below it the hop to a thread costs more than the copy.
COPY_OFF_LOOP_BYTES = 1 << 20

QUEUE_LIMIT_KEY = "batching.max_queue_size"
DEADLINE_LIMIT_KEY = "batching.deadline_admission"

REJECTED = Counter(
    "facet_batcher_rejected",
    "Requests a dynamic batcher refused before running them, by model and the limit (config key) that refused them",
    ["model", "limit"],
    registry=METRICS.registry,
)
QUEUED_ROWS = Gauge("facet_batcher_queued_rows", "Rows waiting in a dynamic batcher, by model", ["model"], registry=METRICS.registry)
BACKLOG_S = Gauge(
    "facet_batcher_backlog_seconds",
    "Estimated seconds to finish the batches running and queued in a dynamic batcher, by model",
    ["model"],
    registry=METRICS.registry,
)


class _Request:
    """One chunk of a call's rows, queued until a batch takes it."""

    __slots__ = ("inputs", "rows", "width", "future", "enqueued", "scope")

    def __init__(self, inputs: Arrays, rows: int, row_width: int, future: asyncio.Future[dict[str, np.ndarray]], scope: CallScope | None) -> None:
        self.inputs = inputs
        self.rows = rows
        self.width = row_width  # the longest non-batch extent: a token input's length, 1 for fixed rows
        self.future = future
        self.enqueued = time.perf_counter()
        self.scope = scope


class _Reservation:
    """Work a call announced with `admit` and has not submitted yet (it is tokenizing); `seq`
    orders announcements: a call is checked against the work announced before its own only."""

    __slots__ = ("rows", "cells", "seq", "released")

    def __init__(self, rows: int, cells: float, seq: int) -> None:
        self.rows = rows
        self.cells = cells
        self.seq = seq
        self.released = False


def _fail_all(items: list[_Request], exc: BaseException) -> None:
    for p in items:
        if not p.future.done():
            p.future.set_exception(exc)


def _rows(inputs: Arrays) -> int:
    return int(next(iter(inputs.values())).shape[0])


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no event loop running here
        return None


async def _merged(parts: list[Arrays]) -> dict[str, np.ndarray]:
    """The parts' arrays concatenated along axis 0, right-padded to a common shape; a large copy
    runs on a worker thread. Raises ValueError for parts of different ranks."""

    def merge() -> dict[str, np.ndarray]:
        return {name: pad_concat([p[name] for p in parts]) for name in parts[0]}

    if len(parts) > 1 and sum(a.nbytes for p in parts for a in p.values()) > COPY_OFF_LOOP_BYTES:
        return await asyncio.get_running_loop().run_in_executor(None, merge)
    return merge()


class DynamicBatcher:
    """Queues requests for one model and runs them in batches through `run_batch`, up to
    `in_flight` batches at a time (1 for a model in this process, like one Triton instance; the
    number of replicas for a remote model).

    Args:
        model: the model's name, for messages and metrics.
        run_batch: runs one batch (named arrays, axis 0 the batch axis) and returns its outputs
            with the same number of rows.
        config: the `[batching]` section.
        in_flight: how many batches may run at once.
        cost: the running estimate of batch cost to use (and teach); a new `CostModel` by default.
    """

    def __init__(
        self, model: str, run_batch: RunBatch, config: BatchingConfig, in_flight: int = 1, cost: CostModel | None = None
    ) -> None:
        self.model = model
        self._run = run_batch
        self._config = config
        self._in_flight = in_flight
        self._queue: FairQueue[_Request] = FairQueue()
        self._queued_rows = 0
        self._workers: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()
        # run -> (started, estimated seconds, each call's share of its cells)
        self._running: dict[object, tuple[float, float, dict[CallScope | None, float]]] = {}
        self.cost = cost if cost is not None else CostModel()
        # work announced by `admit` and not submitted yet, per call; released on submit or when the call ends
        self._reservations: weakref.WeakKeyDictionary[CallScope, _Reservation] = weakref.WeakKeyDictionary()
        self._reserved_rows = 0
        self._reserved_cells = 0.0
        self._next_seq = 0
        # each call's place among announcements (its first `admit`), kept after it submits: the
        # call's later requests, and a second `admit` with its real size, keep that place
        self._seqs: weakref.WeakKeyDictionary[CallScope, int] = weakref.WeakKeyDictionary()
        self._queued_rows_gauge = QUEUED_ROWS.labels(model)
        self._backlog_gauge = BACKLOG_S.labels(model)

    # -- admission -------------------------------------------------------------------------

    def observe(self, inputs: Arrays, seconds: float) -> None:
        """Teach the cost estimate a run made outside the batcher (a warm-up run).

        Args:
            inputs: the arrays that ran (axis 0 the batch axis).
            seconds: how long the run took.
        """
        self.cost.observe(_rows(inputs) * width(list(inputs.values())), seconds)

    def _batch_cells(self) -> int | None:
        """The largest batch, in cells, estimated to run within `max_batch_duration_ms`; None: no cap."""
        if self._config.max_batch_duration_ms <= 0:
            return None
        return self.cost.cells_within(self._config.max_batch_duration_ms / 1e3)

    def _chunk_rows(self, row_width: int) -> int:
        cap = self._batch_cells()
        per_chunk = self._config.max_batch_size
        if cap is not None:
            per_chunk = min(per_chunk, max(1, cap // max(1, row_width)))
        return per_chunk

    def _estimate_s(self, cells: float, rows: int, requests: int) -> float:
        """Estimated seconds to run `requests` queued requests (chunks) of `rows` rows and `cells`
        cells in all: as few batches as the row and duration caps allow, and no more than one
        batch per request."""
        cap = self._batch_cells()
        batches = max(1, math.ceil(rows / self._config.max_batch_size), math.ceil(cells / cap) if cap else 1)
        return self.cost.estimate_s(cells, min(batches, max(1, requests)))

    def _running_remaining_s(self, now: float, scope: CallScope | None = None) -> float:
        """Estimated seconds left of the batches running; with `scope`, only that call's share of them."""
        return sum(
            max(0.0, estimate - (now - started)) * (1.0 if scope is None else shares.get(scope, 0.0))
            for started, estimate, shares in self._running.values()
        )

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch (not counting the batches running)."""
        return self._queued_rows

    @property
    def announced_rows(self) -> int:
        """Rows that admitted calls announced (`admit`) and have not submitted yet."""
        return self._reserved_rows

    def backlog_s(self) -> float:
        """Estimated seconds until the batches running and queued now have all run (0.0 before
        any batch has been measured)."""
        queued = self._estimate_s(self._queue.queued_cost, self._queued_rows, len(self._queue)) if self._queued_rows else 0.0
        return (self._running_remaining_s(time.monotonic()) + queued) / self._in_flight

    def _publish(self) -> None:
        self._queued_rows_gauge.set(self._queued_rows)
        self._backlog_gauge.set(self.backlog_s())

    def admit(self, rows: int, row_width: int = 1, scope: CallScope | None = None) -> None:
        """Refuse now a request of `rows` rows of `row_width` (sequence length, or 1) that could
        not be served: what `submit` checks before queueing, for a service to call before its
        own expensive preparation (tokenizing). Rows and width may be lower bounds: it refuses
        only what the estimate says cannot finish.

        An admitted call's work is announced: until the call submits (or ends), later calls'
        admission counts it as queued ahead of them, so a burst of calls that are all still
        tokenizing is refused as promptly as one whose work is already queued. When the call
        submits, it is checked again (with its real width) against the work queued and the work
        announced *before* its own: calls announced later never refuse an earlier one, so a
        burst cannot refuse itself whole. A call may `admit` again once it knows its real size
        (after tokenizing, before its first submit): it keeps its first place among announcements.

        Args:
            rows: the request's rows (>= 1).
            row_width: each row's width (sequence length for token inputs).
            scope: the call; None takes the one being served (`deadline.current_call()`).
        Raises:
            ResourceExhausted: the queue is full (message names `batching.max_queue_size`), or
                the work queued ahead would keep the request from finishing before the call's
                deadline (names `batching.deadline_admission`).
            DeadlineExceeded: the request alone, on an idle model, would not finish before the
                call's deadline (names `batching.deadline_admission`).
        """
        scope = scope if scope is not None else current_call()
        seq = None
        if scope is not None:
            self._release(scope)
            seq = self._seqs.get(scope)
        self._admit(rows, row_width, scope, seq)
        if scope is not None:
            if seq is None:
                seq = self._seqs[scope] = self._next_seq
                self._next_seq += 1
            reservation = _Reservation(rows, float(rows * row_width), seq)
            self._reservations[scope] = reservation
            self._reserved_rows += rows
            self._reserved_cells += reservation.cells
            # the call ends without submitting (bad input found while preparing, cancelled): free it
            task = _current_task()
            if task is not None:
                task.add_done_callback(lambda _t: self._unreserve(reservation))
            else:
                weakref.finalize(scope, self._unreserve, reservation)

    def _release(self, scope: CallScope) -> int | None:
        """Drop the call's announced work; return its announcement's `seq` (None: there was none)."""
        reservation = self._reservations.pop(scope, None)
        if reservation is None:
            return None
        self._unreserve(reservation)
        return reservation.seq

    def _announced_before(self, seq: int | None) -> tuple[int, float, int]:
        """(rows, cells, calls) announced and not submitted, before announcement `seq` (all: None)."""
        if seq is None:
            return self._reserved_rows, self._reserved_cells, len(self._reservations)
        earlier = [r for r in self._reservations.values() if r.seq < seq and not r.released]
        return sum(r.rows for r in earlier), sum(r.cells for r in earlier), len(earlier)

    def _unreserve(self, reservation: _Reservation) -> None:
        if not reservation.released:
            reservation.released = True
            self._reserved_rows -= reservation.rows
            self._reserved_cells -= reservation.cells

    def _admit(self, rows: int, row_width: int, scope: CallScope | None, announced_as: int | None = None) -> None:
        """Refuse a call that cannot be served (see `admit`); `announced_as`: the `seq` of the
        call's own announcement, when it made one: only work announced before it counts."""
        reserved_rows, reserved_cells, reserved_calls = self._announced_before(announced_as)
        limit = self._config.max_queue_size
        waiting = self._queued_rows + reserved_rows
        if waiting and waiting + rows > limit:
            REJECTED.labels(self.model, QUEUE_LIMIT_KEY).inc()
            raise ResourceExhausted(
                f"model {self.model} has {waiting} rows queued or announced and this call adds {rows}, over the "
                f"queue limit of {limit} rows ({QUEUE_LIMIT_KEY}); retry later"
            )
        if not self._config.deadline_admission or scope is None or not self.cost.calibrated:
            return
        now = time.monotonic()
        remaining = scope.remaining_s(now)
        if remaining is None:
            return
        per_chunk = self._chunk_rows(row_width)
        costs = [float(min(per_chunk, rows - start) * row_width) for start in range(0, rows, per_chunk)]
        last_tag = self._queue.finish_tags(scope, costs)[-1]
        # What runs before its last chunk: its own earlier requests (a service submits a call's
        # rows as several requests, e.g. a long document's windows by length group) and other calls'.
        own: list[Entry[_Request]] = []
        others: list[Entry[_Request]] = []
        for e in self._queue.ahead_of(last_tag):
            (own if e.item.scope is scope else others).append(e)
        own_rows = rows + sum(e.item.rows for e in own)
        own_cells = sum(costs) + sum(e.cost for e in own)
        other_rows = sum(e.item.rows for e in others) + reserved_rows
        cells = own_cells + sum(e.cost for e in others) + reserved_cells
        own_running = self._running_remaining_s(now, scope)  # its requests already running
        alone = (own_running + self._estimate_s(own_cells, own_rows, len(costs) + len(own))) / self._in_flight
        left = max(0.0, remaining)
        earlier = f" ({own_rows - rows} of them in its earlier requests, still queued)" if own else ""
        if alone > remaining:  # not an overload: retrying will not help
            REJECTED.labels(self.model, DEADLINE_LIMIT_KEY).inc()
            raise DeadlineExceeded(
                f"model {self.model} needs about {alone:.2f} s for this call's {own_rows} row{'s' if own_rows != 1 else ''}{earlier} even when idle "
                f"(estimated from its recent batches), more than the {left:.2f} s left before its deadline; refused "
                f"before running ({DEADLINE_LIMIT_KEY}): this call alone cannot finish in time, so a retry would fail "
                "the same way: give it a longer deadline (the SDK's timeout_s)"
                + (" or split it into smaller calls" if own_rows > 1 else "")  # one row cannot be split
            )
        requests = len(costs) + len(own) + len(others) + reserved_calls
        estimate = (self._running_remaining_s(now) + self._estimate_s(cells, own_rows + other_rows, requests)) / self._in_flight
        if estimate > remaining:
            REJECTED.labels(self.model, DEADLINE_LIMIT_KEY).inc()
            raise ResourceExhausted(
                f"model {self.model} cannot finish this call before its deadline: about {estimate:.2f} s of work "
                f"(estimated from its recent batches; {other_rows} rows of other calls queued or announced ahead of "
                f"this call's {own_rows}{earlier}) against {left:.2f} s left, refused before running "
                f"({DEADLINE_LIMIT_KEY}): the model is busy; retry later or with a longer deadline"
            )

    # -- queueing --------------------------------------------------------------------------

    async def submit(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Run `inputs` in a batch with other calls' requests; return its rows of the outputs.

        Args:
            inputs: named arrays with the same number of rows (axis 0).
        Returns:
            The outputs for these rows; axes padded for the batch stay padded.
        Raises:
            ResourceExhausted: refused by admission (see `admit`).
            InvalidArgument: inputs that cannot be padded together with the batch.
            DeadlineExceeded: refused by admission (see `admit`), or the call's deadline passed
                while it was queued.
            Unavailable: the batcher closed while the request waited.
        """
        rows = _rows(inputs)
        row_width = width(list(inputs.values()))
        scope = current_call()
        announced_as = None
        if scope is not None:
            self._release(scope)  # its announced work arrives now
            announced_as = self._seqs.get(scope)
        self._admit(rows, row_width, scope, announced_as)
        self._start_workers()
        loop = asyncio.get_running_loop()
        per_chunk = self._chunk_rows(row_width)
        flow = scope if scope is not None else CallScope(None)  # outside any call: the request is its own flow
        futures: list[asyncio.Future[dict[str, np.ndarray]]] = []
        for start in range(0, rows, per_chunk):
            stop = min(rows, start + per_chunk)
            part = inputs if (start, stop) == (0, rows) else {k: v[start:stop] for k, v in inputs.items()}
            future: asyncio.Future[dict[str, np.ndarray]] = loop.create_future()
            request = _Request(part, stop - start, row_width, future, scope)
            entry = self._queue.push(flow, request, cost=(stop - start) * row_width)
            future.add_done_callback(lambda _f, e=entry: self._forget(e))  # type: ignore[misc]
            futures.append(future)
        self._queued_rows += rows
        self._publish()
        self._wakeup.set()
        if len(futures) == 1:
            return await futures[0]
        parts = await asyncio.gather(*futures)  # cancelling the call cancels every chunk
        return await _merged(list(parts))

    def _forget(self, entry: Entry[_Request]) -> None:
        """A request's future is done: if it was still queued (cancelled), drop it from the queue."""
        if self._queue.remove(entry):
            self._queued_rows -= entry.item.rows
            self._publish()

    def _start_workers(self) -> None:
        if len(self._workers) == self._in_flight and not any(w.done() for w in self._workers):
            return
        loop = asyncio.get_running_loop()
        self._workers = [w for w in self._workers if not w.done()]
        self._workers += [loop.create_task(self._work()) for _ in range(self._in_flight - len(self._workers))]

    def _pop(self) -> _Request:
        request = self._queue.pop().item
        self._queued_rows -= request.rows
        return request

    async def _take_batch(self) -> list[_Request]:
        while self._queue.peek() is None:
            self._wakeup.clear()
            await self._wakeup.wait()
        first = self._pop()
        batch, rows, cells = [first], first.rows, first.rows * first.width
        cap = self._batch_cells()
        wait_until = time.monotonic() + self._config.max_queue_delay_microseconds / 1e6
        while rows < self._config.max_batch_size:
            head = self._queue.peek()
            if head is None:
                remaining = wait_until - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
                continue
            if rows + head.item.rows > self._config.max_batch_size or (cap is not None and cells + head.cost > cap):
                break  # does not fit: it leads the next batch
            request = self._pop()
            batch.append(request)
            rows, cells = rows + request.rows, cells + request.rows * request.width
        self._publish()
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._take_batch()
            now, clock = time.perf_counter(), time.monotonic()
            live = []
            for p in batch:
                if p.future.done():
                    continue  # cancelled: not run
                remaining = p.scope.remaining_s(clock) if p.scope is not None else None
                if remaining is not None and remaining <= 0:
                    p.future.set_exception(DeadlineExceeded(f"the call's deadline passed while it waited for model {self.model}"))
                    continue
                METRICS.queue_time.labels(self.model).observe(now - p.enqueued)
                live.append(p)
            for indices in length_groups([p.width for p in live], [p.rows for p in live]):
                group = [live[i] for i in indices if not live[i].future.done()]
                if group:
                    await self._run_group(group)

    async def _run_group(self, group: list[_Request]) -> None:
        METRICS.batch_size.labels(self.model).observe(sum(p.rows for p in group))
        run = object()
        try:
            try:
                merged = await _merged([p.inputs for p in group])
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
            cells = _rows(merged) * width(list(merged.values()))
            started = time.monotonic()
            shares: dict[CallScope | None, float] = {}
            for p in group:
                shares[p.scope] = shares.get(p.scope, 0.0) + p.rows * p.width / max(1, cells)
            self._running[run] = (started, self.cost.estimate_s(cells), shares)
            self._publish()
            outputs = await self._run(merged)
            self.cost.observe(cells, time.monotonic() - started)
        except asyncio.CancelledError:  # the batcher is closing
            _fail_all(group, Unavailable(f"model {self.model} is shutting down; retry"))
            raise
        except Exception as exc:  # noqa: BLE001 - delivered to every caller in the group
            _fail_all(group, exc)
            return
        finally:
            self._running.pop(run, None)
            self._publish()
        start = 0
        for p in group:
            part = {k: v[start : start + p.rows] for k, v in outputs.items()}
            start += p.rows
            if not p.future.done():
                p.future.set_result(part)

    async def close(self) -> None:
        """Stop the workers; callers still waiting get UNAVAILABLE (the SDK retries those)."""
        for worker in self._workers:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._workers = []
        _fail_all(self._queue.drain(), Unavailable(f"model {self.model} is shutting down; retry"))
        self._queued_rows = 0
        self._publish()
