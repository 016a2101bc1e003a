"""A dynamic batcher with Triton's knobs.

Requests queue while the model is busy; when it is free, the queued requests (up to
`max_batch_size` rows) run together. With `max_queue_delay_microseconds` > 0 the
batcher also waits that long for company before running a batch that is not full;
with 0 (the default, as in Triton) an idle model runs a lone request at once.

Inputs whose non-batch axes differ (token sequences of different lengths) are
right-padded with zeros to the longest, in groups that pad cheaply (see
`services.backends.padding`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import numpy as np

from services.backends.padding import length_groups, pad_concat, width
from services.runtime.config import BatchingConfig
from services.runtime.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.runtime.metrics import METRICS

Arrays = Mapping[str, np.ndarray]
RunBatch = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


class _Pending:
    __slots__ = ("inputs", "rows", "width", "future", "enqueued")

    def __init__(self, inputs: Arrays, rows: int, future: asyncio.Future[dict[str, np.ndarray]]) -> None:
        self.inputs = inputs
        self.rows = rows
        # the longest non-batch axis: the sequence length of token inputs, 1 for fixed-size rows
        self.width = width(list(inputs.values()))
        self.future = future
        self.enqueued = time.perf_counter()


def _fail_all(items: list[_Pending], exc: BaseException) -> None:
    for p in items:
        if not p.future.done():
            p.future.set_exception(exc)


class DynamicBatcher:
    """Queues requests for one model and runs them in batches through `run_batch`, up to
    `in_flight` batches at a time (1 for a model in this process, like one Triton instance; the
    number of replicas for a remote model)."""

    def __init__(self, model: str, run_batch: RunBatch, config: BatchingConfig, in_flight: int = 1) -> None:
        self.model = model
        self._run = run_batch
        self._config = config
        self._in_flight = in_flight
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._queued_rows = 0
        self._workers: list[asyncio.Task[None]] = []
        self._carry: _Pending | None = None  # taken from the queue but did not fit the last batch

    async def submit(self, inputs: Arrays) -> dict[str, np.ndarray]:
        rows = int(next(iter(inputs.values())).shape[0])
        if rows > self._config.max_batch_size:
            return await self._run_split(inputs, rows)
        if self._queued_rows + rows > self._config.max_queue_size:
            raise ResourceExhausted(
                f"model {self.model} has {self._queued_rows} rows queued (limit {self._config.max_queue_size}); retry later"
            )
        if not self._workers or any(w.done() for w in self._workers):
            loop = asyncio.get_running_loop()
            self._workers = [w for w in self._workers if not w.done()]
            self._workers += [loop.create_task(self._work()) for _ in range(self._in_flight - len(self._workers))]
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._queued_rows += rows
        self._queue.put_nowait(_Pending(inputs, rows, future))
        return await future

    async def _run_split(self, inputs: Arrays, rows: int) -> dict[str, np.ndarray]:
        step = self._config.max_batch_size
        parts = [
            await self.submit({k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, rows, step)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _take_batch(self) -> list[_Pending]:
        first = self._carry if self._carry is not None else await self._queue.get()
        self._carry = None
        batch, rows = [first], first.rows
        deadline = time.perf_counter() + self._config.max_queue_delay_microseconds / 1e6
        while rows < self._config.max_batch_size:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if rows + item.rows > self._config.max_batch_size:
                self._carry = item  # does not fit: it leads the next batch
                break
            batch.append(item)
            rows += item.rows
        return batch

    async def _work(self) -> None:
        while True:
            batch = await self._take_batch()
            self._queued_rows -= sum(p.rows for p in batch)
            live = [p for p in batch if not p.future.done()]  # cancelled calls are not run
            now = time.perf_counter()
            for p in live:
                METRICS.queue_time.labels(self.model).observe(now - p.enqueued)
            for indices in length_groups([p.width for p in live], [p.rows for p in live]):
                await self._run_group([live[i] for i in indices])

    async def _run_group(self, group: list[_Pending]) -> None:
        METRICS.batch_size.labels(self.model).observe(sum(p.rows for p in group))
        try:
            try:
                merged = {name: pad_concat([p.inputs[name] for p in group]) for name in group[0].inputs}
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
            outputs = await self._run(merged)
        except asyncio.CancelledError:  # the batcher is closing
            _fail_all(group, Unavailable(f"model {self.model} is shutting down; retry"))
            raise
        except Exception as exc:  # noqa: BLE001 - delivered to every caller in the group
            _fail_all(group, exc)
            return
        start = 0
        for p in group:
            part = {k: v[start : start + p.rows] for k, v in outputs.items()}
            start += p.rows
            if not p.future.done():
                p.future.set_result(part)

    async def close(self) -> None:
        """Stop the worker; callers still waiting get UNAVAILABLE (the SDK retries those)."""
        for worker in self._workers:
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        self._workers = []
        waiting = [self._carry] if self._carry is not None else []
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        _fail_all(waiting, Unavailable(f"model {self.model} is shutting down; retry"))
        self._carry, self._queued_rows = None, 0
