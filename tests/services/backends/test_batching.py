"""The dynamic batcher's logic, over a recording fake batch runner (the real ONNX Runtime
path is tested in test_onnxruntime_backend.py)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.backends.batching import DynamicBatcher
from services.runtime.config import BatchingConfig
from services.runtime.errors import ResourceExhausted


class RecordingRunner:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.delay_s = delay_s

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(inputs)
        await asyncio.sleep(self.delay_s)
        ids = inputs["ids"]
        return {"sum": ids.sum(axis=1, keepdims=True), "width": np.full((len(ids), 1), ids.shape[1])}


def _request(rows: int, width: int, value: int) -> dict[str, np.ndarray]:
    return {"ids": np.full((rows, width), value, dtype=np.int64)}


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


class ConcurrencyRunner(RecordingRunner):
    """Counts how many batches run at the same time."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.running = self.most = 0

    async def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().__call__(inputs)
        finally:
            self.running -= 1


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_at_most_in_flight_batches_run_at_once(in_flight: int) -> None:
    """One batch at a time for a model in this process; one per replica for a remote one."""
    runner = ConcurrencyRunner(delay_s=0.02)
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=2), in_flight=in_flight)
    results = await asyncio.gather(*(batcher.submit(_request(1, 2, i)) for i in range(12)))
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


async def test_full_queue_answers_resource_exhausted() -> None:
    runner = RecordingRunner(delay_s=0.2)
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=2, max_queue_delay_microseconds=0, max_queue_size=2))
    first = asyncio.ensure_future(batcher.submit(_request(2, 1, 1)))
    await asyncio.sleep(0.05)  # running now; the queue is empty again
    queued = asyncio.ensure_future(batcher.submit(_request(2, 1, 2)))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="queued"):
        await batcher.submit(_request(1, 1, 3))
    assert (await first)["sum"].tolist() == [[1], [1]]
    assert (await queued)["sum"].tolist() == [[2], [2]]
    await batcher.close()


async def test_cancelled_calls_are_not_run() -> None:
    runner = RecordingRunner(delay_s=0.1)
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0))
    running = asyncio.ensure_future(batcher.submit(_request(1, 1, 1)))
    await asyncio.sleep(0.02)
    waiting = asyncio.ensure_future(batcher.submit(_request(1, 1, 99)))
    await asyncio.sleep(0)
    waiting.cancel()
    await running
    await asyncio.sleep(0.15)
    await batcher.close()
    assert [int(b["ids"][0, 0]) for b in runner.batches] == [1]


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


async def test_closing_fails_waiting_callers_with_unavailable() -> None:
    from services.runtime.errors import Unavailable

    runner = RecordingRunner(delay_s=0.2)
    batcher = DynamicBatcher("m", runner, BatchingConfig(max_batch_size=1, max_queue_delay_microseconds=0))
    running = asyncio.ensure_future(batcher.submit(_request(1, 1, 1)))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(batcher.submit(_request(1, 1, 2)))
    await asyncio.sleep(0)
    await batcher.close()
    for call in (running, queued):
        with pytest.raises(Unavailable, match="shutting down"):
            await call


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
