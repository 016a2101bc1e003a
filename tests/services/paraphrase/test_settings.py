"""The `[paraphrase]` and `[batching]` settings a deployment changes, on real servers (ONNX
Runtime): the limits as config keys, a cancelled stream stopping the decoder, and the decoder
steps of concurrent calls batched together."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import urllib.request
from collections.abc import Generator
from pathlib import Path

import pytest

import sdk
from deploy.service_process import ServiceError
from services.model_repository import ModelRepository
from services.paraphrase.config import ParaphraseConfig
from tests.services.paraphrase.fixtures import PARAPHRASER
from tests.serving import ServerProcess

EMBEDDING_MODEL = ParaphraseConfig().embedding_model

pytestmark = pytest.mark.integration

SOURCE = "How can I improve my English?"
STREAM = "/facet.v1.Paraphrase/ParaphraseStream"


def _metrics(server) -> str:  # type: ignore[no-untyped-def]
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()


def _metric(text: str, name: str, labels: str) -> float:
    found = re.search(rf"^{name}\{{{re.escape(labels)}\}} (\S+)$", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_limits_are_config_keys(start_paraphrase_server) -> None:  # type: ignore[no-untyped-def]
    server = start_paraphrase_server(
        {"FACET_PARAPHRASE_MAX_N": "2", "FACET_PARAPHRASE_MAX_BEAM_WIDTH": "3", "FACET_PARAPHRASE_MAX_TEXT_CHARS": "30",
         "FACET_PARAPHRASE_DEFAULT_BEAM_WIDTH": "2"}
    )  # fmt: skip
    with sdk.Client(paraphrase=server.address) as client:
        with pytest.raises(sdk.InvalidArgument, match=r"n must be between 1 and paraphrase.max_n \(2\), got 3"):
            client.paraphrase("How do I learn Python?", n=3)
        with pytest.raises(sdk.InvalidArgument, match=r"paraphrase.max_beam_width \(3\), got 4"):
            client.paraphrase("How do I learn Python?", beam_width=4)
        with pytest.raises(sdk.InvalidArgument, match=r"text has 31 characters; the limit is paraphrase.max_text_chars \(30\)"):
            client.paraphrase("How do I learn English quickly?")
        # beams without beam_width: max(2n, default_beam_width), at most max_beam_width; a beam
        # search proposes at most its beams
        assert client.paraphrase("How do I learn Python?", n=1).considered <= 2
        out = client.paraphrase("How do I learn Python?", n=2)
        assert len(out) <= 2 and out.considered <= 3


def test_a_cancelled_stream_stops_decoding(start_paraphrase_server) -> None:  # type: ignore[no-untyped-def]
    """The client cancels after the first token; the server runs no decoder step after the one it
    had already queued. Each step waits 1.5 s for company in the batcher (a lone caller here), so
    the stream cannot race ahead of the cancellation; the decoder-step counter (every step the
    service sends to the backend) and the batcher's executed batches show what ran, and an
    uncancelled stream of the same sentence shows that decoding had more steps to run."""
    server = start_paraphrase_server(
        {"FACET_BATCHING_MAX_BATCH_SIZE": "8", "FACET_BATCHING_MAX_QUEUE_DELAY_MICROSECONDS": "1500000",
         "FACET_BATCHING_MAX_BATCH_DURATION_MS": "0"}
    )  # fmt: skip
    labels = f'model="{PARAPHRASER}"'
    before = _metrics(server)
    with sdk.Client(paraphrase=server.address, timeout_s=120) as client:
        stream = client.paraphrase_stream(SOURCE, max_length=20)
        assert isinstance(stream, Generator)  # close() it to cancel the call (as the docstring says)
        first = next(stream)
        assert first.index == 0
        stream.close()  # cancels the call
        text = _metrics(server)
        while _metric(text, "facet_requests_total", f'code="CANCELLED",method="{STREAM}"') < 1:  # the server saw the cancel
            text = _metrics(server)
        steps = _metric(text, "facet_paraphrase_decoder_steps_total", labels) - _metric(before, "facet_paraphrase_decoder_steps_total", labels)
        batches = _metric(text, "facet_batch_size_count", labels) - _metric(before, "facet_batch_size_count", labels)
        # the step that produced the first token, and at most the one queued behind it (a cancel
        # slower than the 1.5 s it waits lets it run); never the rest of the 20 allowed
        assert batches <= 2 and steps <= 3
        # and none later: the stream's decoding loop is gone (its RPC is finished)
        assert _metric(_metrics(server), "facet_paraphrase_decoder_steps_total", labels) - _metric(before, "facet_paraphrase_decoder_steps_total", labels) == steps
        assert _metric(_metrics(server), "facet_requests_in_flight", f'method="{STREAM}"') == 0
        # uncancelled, the same stream goes on: four tokens (four steps) when allowed four
        assert len(list(client.paraphrase_stream(SOURCE, max_length=4))) == 4 > steps


def test_concurrent_calls_decoder_steps_are_batched_together(start_paraphrase_server) -> None:  # type: ignore[no-untyped-def]
    """Eight streams of the same sentence at once: the batcher (waiting up to 60 s for company,
    running as soon as it holds 8 rows) runs each decoder step of the eight calls as ONE batch of
    eight rows — batching across requests at step granularity. Counted by the service's metrics."""
    env = {
        "FACET_BATCHING_MAX_BATCH_SIZE": "8",
        "FACET_BATCHING_MAX_QUEUE_DELAY_MICROSECONDS": "60000000",
        "FACET_BATCHING_MAX_BATCH_DURATION_MS": "0",
    }
    server = start_paraphrase_server(env)
    labels = f'model="{PARAPHRASER}"'
    before = _metrics(server)

    async def calls() -> list[list[sdk.ParaphraseToken]]:
        async with sdk.AsyncClient(paraphrase=server.address, timeout_s=300) as client:

            async def one() -> list[sdk.ParaphraseToken]:
                return [t async for t in client.paraphrase_stream(SOURCE)]

            return await asyncio.gather(*(one() for _ in range(8)))

    results = asyncio.run(calls())
    ids = [[t.token_id for t in r] for r in results]
    assert all(i == ids[0] for i in ids)  # the same sentence decodes the same, whatever its batch
    after = _metrics(server)
    steps = _metric(after, "facet_paraphrase_decoder_steps_total", labels) - _metric(before, "facet_paraphrase_decoder_steps_total", labels)
    rows = _metric(after, "facet_batch_size_sum", labels) - _metric(before, "facet_batch_size_sum", labels)
    batches = _metric(after, "facet_batch_size_count", labels) - _metric(before, "facet_batch_size_count", labels)
    assert steps == 8 * batches and rows == steps  # every executed step batch held all eight calls' rows
    assert batches >= len(ids[0])  # one batch per generated token (and one more when [SEP] ends it)


def _copy_models(source: ModelRepository, names: list[str], root: Path) -> ModelRepository:
    for name in names:  # hard links: no bytes copied
        shutil.copytree(source.root / name, root / name, copy_function=os.link)
    return ModelRepository(root)


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ([EMBEDDING_MODEL], f"paraphraser '{PARAPHRASER}' (paraphrase.model) is not in the model repository"),
        ([PARAPHRASER, f"{PARAPHRASER}-encoder"], f"embedding model '{EMBEDDING_MODEL}' (paraphrase.embedding_model) is not in the model repository"),
    ],
    ids=["no paraphraser", "no embedding model"],
)
def test_a_missing_model_stops_the_start_with_the_build_command(
    paraphrase_repository: ModelRepository, tmp_path: Path, models: list[str], message: str
) -> None:
    repository = _copy_models(paraphrase_repository, models, tmp_path / "models")
    server = ServerProcess(repository.root, tmp_path / "data", service="paraphrase")
    with pytest.raises(ServiceError) as failed:
        server.start(timeout_s=120)
    assert message in str(failed.value) and "facet " in str(failed.value) and "build" in str(failed.value)
