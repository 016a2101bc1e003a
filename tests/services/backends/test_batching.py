"""The dynamic batcher: batching and padding, admission by estimated cost, fair scheduling between
calls, bounded chunks and dropped work of cancelled calls. A real batcher over real run functions
(numpy work, run when the test lets them: no sleeps, no clocks asserted); the real ONNX Runtime
path is tested in test_onnxruntime_backend.py and the service end to end in test_admission_service.py."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
import pytest

from services.backends import deadline
from services.backends.batching import DEADLINE_LIMIT_KEY, QUEUE_LIMIT_KEY, DynamicBatcher
from services.backends.cost import CostModel
from services.backends.fair_queue import FairQueue
from services.runtime.config import BatchingConfig, ConfigError
from services.runtime.errors import DeadlineExceeded, ResourceExhausted, Unavailable

T = TypeVar("T")


class RecordingRunner:
    def __init__(self) -> None:
        self.batches: list[dict[str, np.ndarray]] = []

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(inputs)
        await asyncio.sleep(0)
        ids = inputs["ids"]
        return {"sum": ids.sum(axis=1, keepdims=True), "width": np.full((len(ids), 1), ids.shape[1])}


class GatedRunner:
    """Runs one batch when the test releases it; `started` yields each batch as it starts.
    Each row's first id says which request it belongs to."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.started: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._gate = asyncio.Semaphore(0)
        self.running = self.most = 0

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = inputs["ids"]
        self.batches.append(ids)
        self.started.put_nowait(ids)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self._gate.acquire()
        finally:
            self.running -= 1
        return {"sum": ids.sum(axis=1, keepdims=True), "first": ids[:, :1].copy()}

    def release(self, batches: int = 1) -> None:
        for _ in range(batches):
            self._gate.release()

    def order(self) -> list[list[int]]:
        """Which requests (first id of each row, deduplicated in order) each batch ran."""
        return [list(dict.fromkeys(int(v) for v in b[:, 0])) for b in self.batches]

    def ran(self, tag: int) -> bool:
        return any((b[:, 0] == tag).any() for b in self.batches)


def _request(rows: int, width: int, value: int) -> dict[str, np.ndarray]:
    return {"ids": np.full((rows, width), value, dtype=np.int64)}


async def in_call(remaining_s: float | None, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` as the interceptor runs a call: in its own scope with `remaining_s` to its deadline."""
    deadline.enter_call(remaining_s)
    return await work()


def call(remaining_s: float | None, batcher: DynamicBatcher, inputs: dict[str, np.ndarray]) -> asyncio.Task[dict[str, np.ndarray]]:
    """A call in flight: its own task, its own scope (a flow of the fair queue)."""
    return asyncio.ensure_future(in_call(remaining_s, lambda: batcher.submit(inputs)))


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll (yielding to the loop) until `condition()` holds; fail after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0)


class Taught(CostModel):
    """A cost estimate taught measurements of a model that costs exactly `overhead_s +
    per_cell_s * cells`, and fixed there: the runs of these tests take no real time."""

    def __init__(self, per_cell_s: float, overhead_s: float = 0.0) -> None:
        super().__init__()
        for cells in (1, 4, 2, 8):
            super().observe(cells, overhead_s + per_cell_s * cells)

    def observe(self, cells: int, seconds: float) -> None:
        pass


# -- batching and padding ----------------------------------------------------------------------


async def test_concurrent_requests_share_one_padded_batch_and_get_their_own_rows() -> None:
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=16, max_queue_delay_microseconds=50_000))
    results = await asyncio.gather(*(batcher.submit(_request(2, width=w, value=w)) for w in (3, 5, 4)))
    await batcher.close()
    assert len(runner.batches) == 1
    assert runner.batches[0]["ids"].shape == (6, 5)  # right-padded to the longest
    for w, result in zip((3, 5, 4), results, strict=True):
        assert result["sum"].tolist() == [[w * w], [w * w]]  # padding adds zeros only


async def test_requests_of_very_different_lengths_run_in_separate_groups() -> None:
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=16, max_queue_delay_microseconds=50_000))
    widths = [40, 2, 3, 38, 2]
    results = await asyncio.gather(*(batcher.submit(_request(1, w, 1)) for w in widths))
    await batcher.close()
    assert sorted(b["ids"].shape for b in runner.batches) == [(2, 40), (3, 3)]
    assert [r["width"][0, 0] for r in results] == [40, 3, 3, 40, 3]
    assert [r["sum"][0, 0] for r in results] == widths


async def test_batches_never_exceed_max_batch_size() -> None:
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=20_000))
    await asyncio.gather(*(batcher.submit(_request(1, 2, i)) for i in range(10)))
    await batcher.close()
    assert [len(b["ids"]) for b in runner.batches] and max(len(b["ids"]) for b in runner.batches) <= 4
    assert sum(len(b["ids"]) for b in runner.batches) == 10


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_at_most_in_flight_batches_run_at_once(in_flight: int) -> None:
    """One batch at a time for a model in this process; one per replica for a remote one."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=2), in_flight=in_flight)
    calls = asyncio.gather(*(batcher.submit(_request(1, 2, i)) for i in range(12)))
    await until(lambda: runner.running == in_flight)
    for _ in range(12):  # every batch released one at a time: never more than in_flight at once
        runner.release()
        await asyncio.sleep(0)
    results = await calls
    await batcher.close()
    assert runner.most == in_flight
    assert [r["sum"][0, 0] for r in results] == [2 * i for i in range(12)]


async def test_a_request_larger_than_max_batch_size_is_split_in_order() -> None:
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_queue_delay_microseconds=0))
    inputs = {"ids": np.arange(10, dtype=np.int64)[:, None]}
    result = await batcher.submit(inputs)
    await batcher.close()
    assert result["sum"].ravel().tolist() == list(range(10))
    assert [len(b["ids"]) for b in runner.batches] == [4, 4, 2]


async def test_an_engine_error_reaches_every_caller_and_the_batcher_keeps_working() -> None:
    calls = {"n": 0}

    async def flaky(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("engine failed")
        return {"out": inputs["ids"]}

    batcher = DynamicBatcher("m", flaky, BatchingConfig(max_batch_size=8, max_queue_delay_microseconds=20_000))
    results = await asyncio.gather(*(batcher.submit(_request(1, 1, i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert (await batcher.submit(_request(1, 1, 7)))["out"].tolist() == [[7]]
    await batcher.close()


async def test_closing_fails_running_and_waiting_callers_with_unavailable() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0))
    running = asyncio.ensure_future(batcher.submit(_request(1, 1, 1)))
    await runner.started.get()
    queued = asyncio.ensure_future(batcher.submit(_request(1, 1, 2)))
    await until(lambda: batcher.queued_rows == 1)
    await batcher.close()
    for pending in (running, queued):
        with pytest.raises(Unavailable, match="shutting down"):
            await pending
    assert not runner.ran(2)


# -- admission: queue limit and deadline --------------------------------------------------------


async def test_full_queue_answers_resource_exhausted_naming_its_key() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=2, max_queue_delay_microseconds=0, max_queue_size=2))
    first = asyncio.ensure_future(batcher.submit(_request(2, 1, 1)))
    await runner.started.get()  # running: the queue is empty again
    queued = asyncio.ensure_future(batcher.submit(_request(2, 1, 2)))
    await until(lambda: batcher.queued_rows == 2)
    with pytest.raises(ResourceExhausted, match=f"2 rows queued or announced.*{QUEUE_LIMIT_KEY}"):
        await batcher.submit(_request(1, 1, 3))
    runner.release(2)
    assert (await first)["sum"].tolist() == [[1], [1]]
    assert (await queued)["sum"].tolist() == [[2], [2]]
    assert not runner.ran(3)
    await batcher.close()


async def test_a_call_whose_deadline_cannot_be_met_is_refused_at_once_and_never_runs() -> None:
    """0.1 s per row; one 4-row batch running and two queued: a 4-row call would finish after
    about 1.6 s (0.4 s on an idle model). With 1 s left it is refused before queueing, as
    overload (RESOURCE_EXHAUSTED); a 20-row call (2 s alone) as too large for its deadline
    (DEADLINE_EXCEEDED); with 60 s left, or no deadline, a call waits its turn."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0), cost=Taught(0.1))
    blockers = [call(None, batcher, _request(4, 1, v)) for v in (1, 2, 3)]
    await runner.started.get()
    await until(lambda: batcher.queued_rows == 8)
    assert batcher.backlog_s() > 1.0

    with pytest.raises(ResourceExhausted, match=rf"before its deadline.*8 rows of other calls queued or announced ahead of this call's 4\).*{DEADLINE_LIMIT_KEY}.*retry later"):
        await in_call(1.0, lambda: batcher.submit(_request(4, 1, 99)))
    assert batcher.queued_rows == 8  # nothing of it was queued
    with pytest.raises(DeadlineExceeded, match=rf"20 rows even when idle.*{DEADLINE_LIMIT_KEY}.*or split it into smaller calls"):
        await in_call(1.0, lambda: batcher.submit(_request(20, 1, 98)))  # 2 s on its own: no retry would help
    with pytest.raises(DeadlineExceeded, match="this call's 1 row even when idle") as one_row:  # 0.1 s alone, 0.05 s left
        await in_call(0.05, lambda: batcher.submit(_request(1, 1, 97)))
    assert "split" not in str(one_row.value)  # a single row cannot be split: only a longer deadline helps
    assert batcher.queued_rows == 8
    patient = call(60.0, batcher, _request(4, 1, 60))
    no_deadline = call(None, batcher, _request(4, 1, 70))
    await until(lambda: batcher.queued_rows == 16)
    runner.release(10)
    await asyncio.gather(*blockers, patient, no_deadline)
    await batcher.close()
    assert runner.ran(60) and runner.ran(70)
    assert not runner.ran(99) and not runner.ran(98), "the refused calls' rows were run"


async def test_a_call_sent_as_several_requests_is_refused_for_its_own_work_not_as_overload() -> None:
    """A service sends one call as several requests (a long document's windows, in length
    groups). On an idle model, five 4-row requests at 0.1 s per row with 1 s left: the first two
    fit; the third would finish after 1.2 s of the call's own work. Nothing else is queued, so it
    is DEADLINE_EXCEEDED (a retry fails the same way) naming the call's own earlier rows, never
    RESOURCE_EXHAUSTED "retry later" for rows that are its own."""
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0), cost=Taught(0.1))

    async def windows() -> list[object]:
        return await asyncio.gather(*(batcher.submit(_request(4, 1, v)) for v in range(1, 6)), return_exceptions=True)

    results = await in_call(1.0, windows)
    await batcher.close()
    assert [type(r).__name__ for r in results] == ["dict", "dict", "DeadlineExceeded", "DeadlineExceeded", "DeadlineExceeded"]
    message = str(results[2])
    assert "this call's 12 rows (8 of them in its earlier requests, still queued) even when idle" in message
    assert "estimated from its recent batches" in message and DEADLINE_LIMIT_KEY in message
    assert "this call alone cannot finish in time" in message and "timeout_s" in message
    assert "retry later" not in message and "other calls" not in message


async def test_a_call_s_own_running_request_counts_as_its_own_work() -> None:
    """The call's first request (4 rows, 0.4 s) is running when it sends 8 more rows (0.8 s) with
    1 s left: nothing of other calls runs or waits, so the refusal is DEADLINE_EXCEEDED for its own
    work, not RESOURCE_EXHAUSTED "the model is busy"."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=8, max_batch_duration_ms=0), cost=Taught(0.1))

    async def two_requests() -> BaseException | None:
        first = asyncio.ensure_future(batcher.submit(_request(4, 1, 1)))
        await runner.started.get()  # running
        try:
            await batcher.submit(_request(8, 1, 2))
        except (DeadlineExceeded, ResourceExhausted) as exc:
            runner.release()
            await first
            return exc
        return None

    refusal = await in_call(1.0, two_requests)
    await batcher.close()
    assert isinstance(refusal, DeadlineExceeded), refusal
    assert "this call alone cannot finish in time" in str(refusal) and not runner.ran(2)


async def test_overload_counts_other_calls_rows_apart_from_the_call_s_own() -> None:
    """Another call's 4 rows running and 8 queued; this call sends two 4-row requests with 1.7 s
    left. The first fits (0.4 + 0.8 + 0.4 s); the second would end after 2.0 s: overload, and the
    refusal names the other calls' 8 rows apart from this call's own 8 (4 in its earlier request)."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0), cost=Taught(0.1))
    blockers = [call(None, batcher, _request(4, 1, v)) for v in (1, 2, 3)]
    await runner.started.get()
    await until(lambda: batcher.queued_rows == 8)
    refused: list[BaseException] = []

    async def two_requests() -> dict[str, np.ndarray]:
        first = asyncio.ensure_future(batcher.submit(_request(4, 1, 50)))
        await until(lambda: batcher.queued_rows == 12)
        with pytest.raises(ResourceExhausted) as second:
            await batcher.submit(_request(4, 1, 51))
        refused.append(second.value)
        return await first

    both = asyncio.ensure_future(in_call(1.7, two_requests))
    await until(lambda: bool(refused))
    message = str(refused[0])
    assert "8 rows of other calls queued or announced ahead of this call's 8 (4 of them in its earlier requests, still queued))" in message
    assert "retry later" in message and DEADLINE_LIMIT_KEY in message
    runner.release(10)
    assert (await both)["sum"].tolist() == [[50]] * 4
    await asyncio.gather(*blockers)
    await batcher.close()
    assert not runner.ran(51)


async def test_a_small_call_is_admitted_when_only_a_little_is_scheduled_ahead_of_it() -> None:
    """A 40-row call queued as 10 chunks is 4 s of work; a 1-row call with 1 s left is still
    admitted, because fair queueing schedules it right after the running chunk."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0), cost=Taught(0.1))
    large = call(None, batcher, {"ids": np.arange(1, 41)[:, None]})
    await runner.started.get()
    assert batcher.backlog_s() > 3.0
    small = call(1.0, batcher, _request(1, 1, 99))
    await until(lambda: batcher.queued_rows == 37)
    runner.release(20)
    assert (await small)["sum"].tolist() == [[99]]
    assert (await large)["sum"].ravel().tolist() == list(range(1, 41))
    assert runner.order()[:2] == [[1, 2, 3, 4], [99]]
    await batcher.close()


@pytest.mark.parametrize("switched_off", [True, False])
async def test_no_deadline_refusal_when_switched_off_or_before_any_batch_was_measured(switched_off: bool) -> None:
    runner = GatedRunner()
    cost = Taught(10.0) if switched_off else CostModel()
    batcher = DynamicBatcher("m", runner, BatchingConfig(deadline_admission=not switched_off, max_batch_duration_ms=0), cost=cost)
    blocker = call(None, batcher, _request(4, 1, 1))
    await runner.started.get()
    hopeless = call(0.001, batcher, _request(4, 1, 2))
    await until(lambda: batcher.queued_rows == 4)  # admitted: queued
    await batcher.close()
    for pending in (blocker, hopeless):
        with pytest.raises(Unavailable):
            await pending


async def test_a_call_whose_deadline_passed_while_queued_is_not_run() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=1))  # nothing measured: admitted
    blocker = call(None, batcher, _request(1, 1, 1))
    await runner.started.get()
    expired = call(-1.0, batcher, _request(1, 1, 2))
    await until(lambda: batcher.queued_rows == 1)
    runner.release(2)
    await blocker
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        await expired
    assert not runner.ran(2)
    await batcher.close()


def test_admit_checks_without_queueing() -> None:
    batcher = DynamicBatcher("m", RecordingRunner(), BatchingConfig(max_batch_size=4), cost=Taught(0.1))
    batcher.admit(rows=5, row_width=1, scope=deadline.CallScope(time.monotonic() + 10))
    with pytest.raises(DeadlineExceeded, match=rf"200 rows even when idle.*{DEADLINE_LIMIT_KEY}.*longer deadline.*or split"):
        batcher.admit(rows=200, row_width=1, scope=deadline.CallScope(time.monotonic() + 10))  # 20 s of work
    batcher.admit(rows=200, row_width=1, scope=deadline.CallScope(None))
    assert batcher.queued_rows == 0


async def test_work_announced_by_admit_counts_ahead_until_the_call_submits_or_ends() -> None:
    """Calls that passed `admit` and are still preparing (tokenizing) hold their place: a burst
    of them is refused as promptly as queued work would be. Submitting turns the announcement
    into queued work; a call that ends without submitting (invalid input, cancelled) frees it."""
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0), cost=Taught(0.1))
    go = asyncio.Event()

    async def preparing(submits: bool) -> None:
        deadline.enter_call(None)
        batcher.admit(rows=4)
        await go.wait()
        if submits:
            await batcher.submit(_request(4, 1, 1))

    calls = [asyncio.ensure_future(preparing(submits)) for submits in (True, False, True)]
    await until(lambda: batcher.announced_rows == 12)
    with pytest.raises(ResourceExhausted, match=rf"12 rows of other calls queued or announced ahead of this call's 1\).*{DEADLINE_LIMIT_KEY}"):
        batcher.admit(rows=1, scope=deadline.CallScope(time.monotonic() + 1.0))  # 1.3 s ahead of it
    go.set()
    await asyncio.gather(*calls)  # the one that did not submit is freed when its task ends
    assert batcher.announced_rows == 0 and batcher.queued_rows == 0
    assert len(runner.batches) == 2  # the two that submitted ran once each: nothing counted twice
    batcher.admit(rows=1, scope=deadline.CallScope(time.monotonic() + 1.0))
    await batcher.close()


async def test_calls_announced_later_never_refuse_an_earlier_one() -> None:
    """A burst whose announcements underestimated its work (a width known only after
    tokenizing): at submit each call is checked against what was announced before it, so the
    first ones run and only the later ones are refused; before, every call counted all the others'
    announcements as ahead of it and the whole burst refused itself (bench_overload)."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=8, max_batch_duration_ms=0), cost=Taught(0.1))
    go = [asyncio.Event() for _ in range(3)]

    async def burst_call(i: int) -> dict[str, np.ndarray]:
        deadline.enter_call(1.0)
        batcher.admit(rows=3)  # announced: 0.3 s each, 0.9 s for the three
        await go[i].wait()
        return await batcher.submit(_request(5, 1, 10 + i))  # tokenized: 0.5 s of work

    calls = [asyncio.ensure_future(burst_call(i)) for i in range(3)]
    await until(lambda: batcher.announced_rows == 9)
    go[0].set()  # the first submits while the two later ones still hold 6 announced rows (0.6 s)
    await until(lambda: bool(runner.batches) or calls[0].done())
    assert not calls[0].done(), f"the first call was refused: {calls[0].exception()}"
    assert (await runner.started.get())[:, 0].tolist() == [10] * 5  # admitted: it runs
    go[2].set()  # the last: 0.5 s running + 0.3 s announced before it + its own 0.5 s > 1 s
    with pytest.raises(ResourceExhausted, match=DEADLINE_LIMIT_KEY):
        await calls[2]
    runner.release(2)
    go[1].set()
    assert (await calls[0])["sum"].tolist() == [[10]] * 5
    await asyncio.gather(calls[1], return_exceptions=True)
    await batcher.close()
    assert not runner.ran(12)


# -- scheduling: small calls are not starved, large ones still finish ---------------------------


async def test_a_small_call_goes_ahead_of_the_queued_chunks_of_many_large_calls() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0))
    first = call(None, batcher, _request(4, 1, 1))
    await runner.started.get()
    large = [call(None, batcher, _request(12, 1, 100 + i)) for i in range(20)]  # 3 chunks each
    await until(lambda: batcher.queued_rows == 240)
    small = call(None, batcher, _request(1, 1, 7))
    await until(lambda: batcher.queued_rows == 241)
    runner.release()
    await first
    assert (await runner.started.get())[:, 0].tolist() == [7]  # the next batch is the small call
    runner.release()
    assert (await small)["sum"].tolist() == [[7]]
    assert not any(t.done() for t in large)
    runner.release(100)
    await asyncio.gather(*large)
    # the large calls' first chunks run before any of their second chunks (round robin by cost)
    firsts = [b[0] for b in runner.order()[2:]]
    assert sorted(firsts[:20]) == list(range(100, 120))
    await batcher.close()


async def test_a_large_call_is_not_starved_by_a_stream_of_small_calls() -> None:
    """A new 1-row call arrives each time a batch starts (shortest-first would never run the
    large call again); the large call's chunks still run within a bounded number of batches."""
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0))
    large = call(None, batcher, _request(12, 1, 1))
    small: list[asyncio.Task[dict[str, np.ndarray]]] = []
    for i in range(60):
        await runner.started.get()
        if large.done():
            break
        queued = batcher.queued_rows
        small.append(call(None, batcher, _request(1, 1, 1000 + i)))
        await until(lambda q=queued: batcher.queued_rows == q + 1)  # type: ignore[misc]
        runner.release()
    assert large.done(), "the large call was starved by small ones"
    assert (await large)["sum"].ravel().tolist() == [1] * 12
    batches_with_large = [i for i, ids in enumerate(runner.order()) if 1 in ids]
    assert len(batches_with_large) == 3 and batches_with_large[-1] < 30
    runner.release(100)
    await asyncio.gather(*small)
    await batcher.close()


async def test_calls_without_a_scope_are_each_their_own_flow() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=1, max_batch_duration_ms=0))
    results = asyncio.gather(*(batcher.submit(_request(1, 1, v)) for v in (1, 2, 3)))
    await until(lambda: len(runner.batches) == 1 and batcher.queued_rows == 2)
    runner.release(3)
    assert [r["sum"][0, 0] for r in await results] == [1, 2, 3]  # equal costs: arrival order
    await batcher.close()


# -- bounded chunks and cancelled work ----------------------------------------------------------


async def test_large_requests_are_cut_into_chunks_of_the_batch_duration() -> None:
    """1 ms per cell and batches of at most 10 ms: a request of 8 rows of width 3 runs as
    chunks of 3, 3 and 2 rows, and comes back whole and in order."""
    runner = RecordingRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=64, max_batch_duration_ms=10), cost=Taught(0.001))
    inputs = {"ids": np.arange(24, dtype=np.int64).reshape(8, 3)}
    result = await batcher.submit(inputs)
    assert [b["ids"].shape for b in runner.batches] == [(3, 3), (3, 3), (2, 3)]
    assert result["sum"].ravel().tolist() == inputs["ids"].sum(1).tolist()
    await batcher.close()


async def test_small_requests_fill_a_batch_only_up_to_the_batch_duration() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=64, max_batch_duration_ms=10), cost=Taught(0.001))
    first = call(None, batcher, _request(1, 3, 0))
    await runner.started.get()
    calls = [call(None, batcher, _request(1, 3, v)) for v in range(1, 8)]
    await until(lambda: batcher.queued_rows == 7)
    runner.release(10)
    await asyncio.gather(first, *calls)
    assert [len(b) for b in runner.batches] == [1, 3, 3, 1]  # 3 rows of width 3: 9 cells, 9 ms
    await batcher.close()


async def test_a_cancelled_call_s_remaining_chunks_are_dropped() -> None:
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=4, max_batch_duration_ms=0))
    large = call(None, batcher, _request(40, 1, 1))
    await runner.started.get()
    assert batcher.queued_rows == 36
    large.cancel()
    await until(lambda: batcher.queued_rows == 0)  # dropped at once, not when their turn comes
    next_call = call(None, batcher, _request(1, 1, 2))
    runner.release()
    assert (await runner.started.get())[:, 0].tolist() == [2]  # right after the chunk that was running
    runner.release()
    assert (await next_call)["sum"].tolist() == [[2]]
    assert runner.order() == [[1], [2]]
    with pytest.raises(asyncio.CancelledError):
        await large
    await batcher.close()


async def test_large_batches_are_merged_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies of more than COPY_OFF_LOOP_BYTES run on a worker thread (health checks and other
    calls never wait for them); small ones stay on the loop, where a thread hop would cost more."""
    from services.backends import batching

    merged_on: list[int] = []
    real = batching.pad_concat

    def spy(arrays: list[np.ndarray]) -> np.ndarray:
        if len(arrays) > 1:  # a copy (one array is passed through)
            merged_on.append(threading.get_ident())
        return real(arrays)

    monkeypatch.setattr(batching, "pad_concat", spy)
    loop_thread = threading.get_ident()
    runner = GatedRunner()
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=8, max_batch_duration_ms=0))
    first = call(None, batcher, _request(1, 1, 0))
    await runner.started.get()
    small = [call(None, batcher, _request(1, 4, v)) for v in (1, 2)]
    await until(lambda: batcher.queued_rows == 2)
    runner.release()
    await runner.started.get()
    assert merged_on == [loop_thread]  # 2 x 32 bytes
    width = batching.COPY_OFF_LOOP_BYTES // 8 // 2 + 1  # two rows of int64: just over the threshold
    large = [call(None, batcher, _request(1, width, v)) for v in (3, 4)]
    await until(lambda: batcher.queued_rows == 2)
    runner.release(2)
    results = await asyncio.gather(first, *small, *large)
    assert [r["sum"][0, 0] for r in results[3:]] == [3 * width, 4 * width]
    assert len(merged_on) == 2 and merged_on[1] != loop_thread
    await batcher.close()


# -- the pieces: cost estimate, fair queue, call scope, config ----------------------------------


def test_cost_model_learns_overhead_and_per_cell_cost() -> None:
    cost = CostModel()
    assert not cost.calibrated and cost.cells_within(1.0) is None and cost.estimate_s(1000) == 0.0
    cost.observe(100, 0.012)
    assert cost.calibrated and cost.overhead_s == 0.0  # one size: proportional, the safe side
    assert math.isclose(cost.estimate_s(1000), 0.12)
    for cells in [10, 1000, 300, 50, 4000] * 12:  # the first measurement fades (weight 0.9**60)
        cost.observe(cells, 0.002 + 1e-5 * cells)
    assert math.isclose(cost.per_cell_s, 1e-5, rel_tol=1e-2) and math.isclose(cost.overhead_s, 0.002, rel_tol=0.05)
    assert math.isclose(cost.estimate_s(2000, batches=3), 3 * 0.002 + 0.02, rel_tol=1e-2)
    assert cost.cells_within(0.012) == pytest.approx(1000, rel=0.01)
    assert cost.cells_within(0.0) == 1
    for _ in range(60):  # the machine got 3x slower: the estimate follows
        for cells in (10, 1000, 4000):
            cost.observe(cells, 3 * (0.002 + 1e-5 * cells))
    assert math.isclose(cost.per_cell_s, 3e-5, rel_tol=0.05)


def test_cost_model_ignores_unusable_measurements_and_noise_never_goes_negative() -> None:
    cost = CostModel()
    cost.observe(0, 1.0)
    cost.observe(10, float("nan"))
    assert not cost.calibrated
    rng = np.random.default_rng(0)
    for cells in rng.integers(1, 100, 200):
        cost.observe(int(cells), 0.5 + float(rng.normal(0, 0.2)))  # cost that does not grow with size
    assert cost.per_cell_s >= 0 and cost.overhead_s >= 0


def test_fair_queue_orders_by_virtual_finish_and_drops_removed_entries() -> None:
    big, small = deadline.CallScope(None), deadline.CallScope(None)
    q: FairQueue[str] = FairQueue()
    q.push(big, "big-1", cost=4096)
    entry = q.push(big, "big-2", cost=4096)
    q.push(small, "small", cost=10)
    assert q.finish_tags(small, [5.0, 5.0]) == [15.0, 20.0]  # after the flow's queued item
    assert len(q) == 3 and q.queued_cost == 8202
    assert [e.item for e in q.ahead_of(10)] == ["small"]
    assert q.pop().item == "small"
    assert q.remove(entry) and not q.remove(entry)
    assert q.pop().item == "big-1"
    assert q.peek() is None and len(q) == 0 and q.queued_cost == 0
    with pytest.raises(IndexError):
        q.pop()
    q.push(None, "a", 1)
    q.push(None, "b", 1)
    assert q.drain() == ["a", "b"] and len(q) == 0


async def test_call_scope_reaches_the_tasks_a_call_starts_and_no_other_call() -> None:
    seen: list[deadline.CallScope | None] = []

    async def work() -> deadline.CallScope | None:
        return deadline.current_call()

    async def served(remaining_s: float | None) -> deadline.CallScope:
        scope = deadline.enter_call(remaining_s)
        seen.extend(await asyncio.gather(work(), work()))
        return scope

    one, two = await asyncio.gather(served(5.0), served(None))
    assert seen.count(one) == 2 and seen.count(two) == 2 and one is not two
    assert deadline.current_call() is None  # the test's own context: outside any call
    remaining = one.remaining_s()
    assert remaining is not None and 0 < remaining <= 5.0
    assert two.remaining_s() is None
    assert deadline.CallScope(None).remaining_s() is None
    inf_scope = await asyncio.ensure_future(in_call(float("inf"), lambda: work()))
    assert inf_scope is not None and inf_scope.deadline is None


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan")])
def test_max_batch_duration_must_be_finite_and_not_negative(value: float) -> None:
    with pytest.raises(ConfigError, match="batching.max_batch_duration_ms"):
        BatchingConfig(max_batch_duration_ms=value)


# -- padding ------------------------------------------------------------------------------------


def test_length_groups_sort_by_width_and_bound_padding_and_rows() -> None:
    from services.backends.padding import length_groups

    widths = [50, 10, 11, 48, 12, 49]
    groups = length_groups(widths)
    assert groups == [[1, 2, 4], [3, 5, 0]]
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert length_groups([10] * 5, max_rows=2) == [[0, 1], [2, 3], [4]]
    # rows weight the widths: one 8-row request of width 10 and one row of width 12 still pad cheaply
    assert length_groups([10, 12], rows=[8, 1]) == [[0, 1]]
    assert length_groups([]) == []


def test_requests_run_together_padded_and_split_back() -> None:
    """What the Triton and Ray Serve wrappers do with requests that arrive together: one padded
    run per group that pads cheaply, each request gets its own rows, and a run that fails fails
    only the requests of its group."""
    from services.backends.padding import run_together

    runs: list[tuple[int, ...]] = []

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ids = feeds["ids"]
        runs.append(ids.shape)
        if (ids < 0).any():
            raise ValueError("negative ids")
        return [ids.sum(1, keepdims=True), ids * 2]

    requests = [{"ids": np.array([[1, 2, 3]])}, {"ids": np.array([[4, 5], [6, 7]])}, {"ids": np.array([[1] * 40])}, {"ids": np.array([[-1] * 41])}]
    out = run_together(run, ["total", "doubled"], requests)
    assert runs == [(3, 3), (2, 41)]  # lengths 2 and 3 together; 40 and 41 together
    assert isinstance(out[0], dict) and out[0]["total"].tolist() == [[6]] and out[0]["doubled"].tolist() == [[2, 4, 6]]
    assert isinstance(out[1], dict) and out[1]["total"].tolist() == [[9], [13]] and out[1]["doubled"].tolist() == [[8, 10, 0], [12, 14, 0]]
    assert isinstance(out[2], ValueError) and isinstance(out[3], ValueError)
