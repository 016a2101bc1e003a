"""The `[rerank]` and `[batching]` settings a deployment changes, on real servers (ONNX Runtime):
windowing off, the pairs limit, and the batching of concurrent calls' pairs."""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

import sdk
from tests.services.rerank.fixtures import RERANKER

pytestmark = pytest.mark.integration

QUERY = "Where is the Eiffel Tower?"
LONG = "The weather report for the coming week promises rain and strong wind along the coast. " * 60


def _metric(address: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{address}/metrics").read().decode()
    found = re.search(rf'^{name}\{{model="{RERANKER}"\}} (\S+)$', text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_windowing_off_refuses_a_long_document_unless_truncated(start_rerank_server) -> None:  # type: ignore[no-untyped-def]
    server = start_rerank_server({"FACET_RERANK_WINDOWING": "false"})
    with sdk.Client(rerank=server.address) as client:
        with pytest.raises(sdk.InvalidArgument, match=r"documents\[1\] has \d+ tokens.*windowing is off \(rerank.windowing\).*truncate=True"):
            client.rerank(QUERY, ["short", LONG])
        [result] = client.rerank(QUERY, [LONG], truncate=True)
        assert result.truncated and not result.windowed


def test_the_pairs_limit_counts_windows(start_rerank_server) -> None:  # type: ignore[no-untyped-def]
    server = start_rerank_server({"FACET_RERANK_MAX_DOCUMENTS_PER_REQUEST": "4", "FACET_RERANK_MAX_PAIRS_PER_REQUEST": "4"})
    with sdk.Client(rerank=server.address) as client:
        with pytest.raises(sdk.InvalidArgument, match=r"rerank.max_documents_per_request \(4\)"):
            client.rerank(QUERY, ["a"] * 5)
        with pytest.raises(sdk.InvalidArgument, match=r"rerank.max_pairs_per_request \(4\).*truncate=True"):
            client.rerank(QUERY, [LONG])  # one document, many windows
        assert client.rerank(QUERY, [LONG], truncate=True)[0].truncated  # one pair


def test_concurrent_calls_are_batched_together(start_rerank_server) -> None:  # type: ignore[no-untyped-def]
    """Eight one-document calls at once run as one batch of eight rows: the batcher (which waits
    up to 60 s for company here, and runs a batch as soon as it holds 8 rows) joins the pairs of
    separate calls. Counted by the service's own batch metrics, not by timing."""
    env = {
        "FACET_BATCHING_MAX_BATCH_SIZE": "8",
        "FACET_BATCHING_MAX_QUEUE_DELAY_MICROSECONDS": "60000000",
        "FACET_BATCHING_MAX_BATCH_DURATION_MS": "0",  # no cut by estimated run time: only the 8 rows end the batch
    }
    server = start_rerank_server(env)
    metrics = f"127.0.0.1:{server.metrics_port}"
    batches, rows = _metric(metrics, "facet_batch_size_count"), _metric(metrics, "facet_batch_size_sum")

    async def calls() -> list[sdk.RerankResult]:
        async with sdk.AsyncClient(rerank=server.address) as client:
            return await asyncio.gather(*(client.rerank(QUERY, ["It is in Paris."]) for _ in range(8)))

    results = asyncio.run(calls())
    assert len({r[0].score for r in results}) == 1  # the same pair, the same score, whatever its batch
    assert _metric(metrics, "facet_batch_size_sum") - rows == 8
    assert _metric(metrics, "facet_batch_size_count") - batches == 1


def test_a_document_too_long_for_the_deadline_is_refused_as_such_with_the_remedy(start_rerank_server) -> None:  # type: ignore[no-untyped-def]
    """A document of 200,000 one-token words is about 2,350 overlapping windows of MiniLM's 128 tokens:
    several times more work than a 2 s deadline allows even on an idle service (about 10 s on 2
    cores; the margin keeps it so on a machine a few times faster). It is refused before it is
    tokenized (admission sizes its windows from its words), as DEADLINE_EXCEEDED (a retry fails
    the same way) that counts the call's own windows and says what helps (truncate=True, a longer
    deadline), never RESOURCE_EXHAUSTED "retry later" for rows that are its own; truncate=True
    scores it at once."""
    server = start_rerank_server({"FACET_RERANK_MAX_DOCUMENT_CHARS": "400000"})
    document = "a " * 200_000
    with sdk.Client(rerank=server.address) as client:
        with pytest.raises(sdk.DeadlineExceeded) as refused:
            client.rerank(QUERY, [document], timeout_s=2.0)
        message = refused.value.message
        assert "even when idle" in message and "batching.deadline_admission" in message
        windows = int(re.search(r"this call's (\d+) rows", message).group(1))  # type: ignore[union-attr]
        assert windows >= 200_000 // 128  # its windows, not one row per document
        assert "truncate=True" in message and "timeout_s" in message
        assert "retry later" not in message and "other calls" not in message
        [result] = client.rerank(QUERY, [document], truncate=True, timeout_s=30.0)
        assert result.truncated
        # a query too long for the model's window is refused as such first, not as a slow call
        with pytest.raises(sdk.InvalidArgument, match=r"query takes \d+ tokens.*truncate=True"):
            client.rerank(" ".join(["word"] * 200), [document], timeout_s=2.0)
