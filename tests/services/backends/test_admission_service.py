"""Overload end to end: a real retrieval server (the real embedding model, ONNX Runtime in-process,
the dynamic batcher), called through the SDK. What the server is doing is read from its own
/metrics (queued rows, batches run, refusals by limit), never from sleeps or wall-clock times.

- a call whose deadline cannot be met is refused at once, with a status and message that name
  the limit, and none of its rows is run;
- a full queue is refused naming its own limit: a test tells which limit fired;
- a small call is not starved behind large ones, and health answers while the model is busy;
- a cancelled call's queued work is dropped.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import sdk
from services.backends.batching import DEADLINE_LIMIT_KEY, QUEUE_LIMIT_KEY
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2"
# one row of the model's longest input (256 tokens, truncated)
LONG_TEXT = "a long sentence about many different things, with clauses that keep the model busy " * 24


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The value of one sample of the server's /metrics (0.0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    wanted = {"model": MODEL, **labels}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return float(sample.value)
    return 0.0


def queued_rows(server: ServerProcess) -> float:
    return metric(server, "facet_batcher_queued_rows")


def rows_run(server: ServerProcess) -> float:
    return metric(server, "facet_batch_size_sum")


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    """Poll the server until `condition()` holds; fail naming `what` after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


def embed(client: sdk.AsyncClient, rows: int, timeout_s: float = 600.0, text: str = LONG_TEXT) -> asyncio.Task[object]:
    """An Embed call of `rows` texts in flight."""
    return asyncio.ensure_future(client.embed([text] * rows, timeout_s=timeout_s))


async def cancel(calls: list[asyncio.Task[object]]) -> None:
    for c in calls:
        c.cancel()
    await asyncio.gather(*calls, return_exceptions=True)


@pytest.fixture(scope="module")
def server(start_server) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    """A retrieval server with the default limits, its /metrics on."""
    yield start_server(env={"FACET_SERVER_METRICS_PORT": "0"})


@pytest.fixture
def idle(server: ServerProcess) -> ServerProcess:
    """The module's server, once nothing is queued on it (a previous test's calls are gone)."""
    end = time.monotonic() + 120
    while queued_rows(server) > 0:
        assert time.monotonic() < end, "the server's queue never emptied"
        time.sleep(0.05)
    return server


async def test_a_small_call_is_not_starved_behind_large_ones_and_health_answers(idle: ServerProcess) -> None:
    async with sdk.AsyncClient(idle.address) as client:
        await client.embed(["warm"], timeout_s=600)
        batches = metric(idle, "facet_batch_size_count")
        large = [embed(client, 32) for _ in range(3)]
        await until(lambda: queued_rows(idle) >= 64 and metric(idle, "facet_batch_size_count") > batches, "the large calls are queued")
        with grpc.insecure_channel(idle.address) as channel:  # the event loop is free while the model works
            for _ in range(3):
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=1.0)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        small = await client.embed(["a short question"], timeout_s=120)
        assert small.shape == (1, 384)
        assert not any(c.done() for c in large), "a large call queued before the small one finished first"
        assert queued_rows(idle) > 0
        await cancel(large)


async def test_a_cancelled_call_s_queued_work_is_dropped(idle: ServerProcess) -> None:
    async with sdk.AsyncClient(idle.address) as client:
        before, batches = rows_run(idle), metric(idle, "facet_batch_size_count")
        large = embed(client, 64)
        await until(lambda: metric(idle, "facet_batch_size_count") > batches and queued_rows(idle) > 0, "the large call runs")
        await cancel([large])
        await until(lambda: queued_rows(idle) == 0, "the cancelled call's chunks leave the queue", timeout_s=10)
        # served after at most the chunk that was running when the call was cancelled
        assert (await client.embed(["next"], timeout_s=120)).shape == (1, 384)
        assert queued_rows(idle) == 0
        assert rows_run(idle) - before < 64 + 1, "every row of the cancelled call was run"


async def test_a_call_whose_deadline_cannot_be_met_is_refused_at_once(idle: ServerProcess) -> None:
    """Blockers queue several seconds of work (by the server's own estimate). A call of the
    same size whose deadline is half that backlog gets RESOURCE_EXHAUSTED naming
    batching.deadline_admission, not DEADLINE_EXCEEDED: it was refused before it was queued; and
    when the blockers have finished, exactly their rows have been run."""
    rows = 8
    async with sdk.AsyncClient(idle.address) as client:
        await client.embed([LONG_TEXT] * rows, timeout_s=600)  # a measured batch of this size
        before = rows_run(idle)
        refused = metric(idle, "facet_batcher_rejected_total", limit=DEADLINE_LIMIT_KEY)
        blockers = [embed(client, rows) for _ in range(4)]
        await until(lambda: queued_rows(idle) >= 3 * rows, "the blockers are queued")
        backlog_s = metric(idle, "facet_batcher_backlog_seconds")
        assert backlog_s > 0
        with pytest.raises(sdk.ResourceExhausted) as refusal:
            await client.embed([LONG_TEXT] * rows, timeout_s=backlog_s / 2)
        assert DEADLINE_LIMIT_KEY in refusal.value.message and "before its deadline" in refusal.value.message
        assert metric(idle, "facet_batcher_rejected_total", limit=DEADLINE_LIMIT_KEY) == refused + 1
        await asyncio.gather(*blockers)
        assert rows_run(idle) - before == 4 * rows, "rows of the refused call were run"


@pytest.fixture(scope="module")
def small_queue_server(start_server) -> Iterator[ServerProcess]:  # type: ignore[no-untyped-def]
    yield start_server(env={"FACET_SERVER_METRICS_PORT": "0", "FACET_BATCHING_MAX_QUEUE_SIZE": "32"})


async def test_a_full_queue_is_refused_naming_its_limit(small_queue_server: ServerProcess) -> None:
    server = small_queue_server
    async with sdk.AsyncClient(server.address) as client:
        calls = [embed(client, 16) for _ in range(6)]
        outcomes = await asyncio.wait_for(_first_refusal(calls), timeout=300)
        assert QUEUE_LIMIT_KEY in outcomes.message and "rows queued" in outcomes.message
        assert DEADLINE_LIMIT_KEY not in outcomes.message
        assert metric(server, "facet_batcher_rejected_total", limit=QUEUE_LIMIT_KEY) >= 1
        assert metric(server, "facet_batcher_rejected_total", limit=DEADLINE_LIMIT_KEY) == 0
        await cancel(calls)


async def _first_refusal(calls: list[asyncio.Task[object]]) -> sdk.ResourceExhausted:
    for done in asyncio.as_completed(calls):
        try:
            await done
        except sdk.ResourceExhausted as exc:
            return exc
    pytest.fail("6 concurrent 16-row calls against a queue of 32 rows were all accepted")
