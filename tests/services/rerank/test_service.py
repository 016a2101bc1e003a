"""The rerank service end to end: a real server process on every backend, a real (tiny) trained
cross-encoder, the SDK."""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import sdk
from sdk._proto.facet.v1 import rerank_pb2
from services.model_repository import ModelRepository
from services.rerank.catalog import File, Prop
from services.rerank.config import RerankConfig
from tests.services.rerank.fixtures import RERANKER, SECOND_RERANKER

pytestmark = pytest.mark.integration

# The tiny test model is trained on Quora duplicate questions: its relevant document is a
# paraphrase of the query, the others unrelated questions.
QUERY = "How can I learn Python programming quickly?"
ANSWER = "What is the best way to learn Python fast?"
DOCUMENTS = ["What is the capital of Australia?", ANSWER, "Why do cats purr?", "Who won the football world cup in 2010?"]
# A long document: unrelated sentences, then a paragraph about the query.
UNRELATED = "The train leaves the station at noon every day."
RELEVANT = (
    "What is the best way to learn Python fast? Which course helps a beginner learn Python programming quickly? "
    "How do I learn to program in Python in one month? What should I do to learn Python programming quickly?"
)


@pytest.fixture(scope="module")
def client(rerank_server) -> Iterator[sdk.Client]:  # type: ignore[no-untyped-def]
    with sdk.Client(rerank=rerank_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def info(client: sdk.Client) -> sdk.RerankerInfo:
    return client.get_reranker(RERANKER)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- behaviour ---------------------------------------------------------------------------------


def test_scores_are_the_cross_encoders_logits(client: sdk.Client, rerank_repository: ModelRepository) -> None:
    """The service's logits are sentence-transformers' CrossEncoder.predict on the same pairs
    (the saved directory beside the ONNX model): the pair template and the export agree."""
    import torch
    from sentence_transformers import CrossEncoder

    directory = rerank_repository.get(RERANKER).file(File.CROSS_ENCODER)
    reference = CrossEncoder(str(directory), device="cpu").predict([(QUERY, d) for d in DOCUMENTS], activation_fn=torch.nn.Identity())
    ranked = client.rerank(QUERY, DOCUMENTS, raw_scores=True)
    ours = np.array([r.score for r in sorted(ranked, key=lambda r: r.index)])
    np.testing.assert_allclose(ours, np.asarray(reference, dtype=np.float64), atol=1e-4)


def test_rerank_orders_scores_and_calibrates(client: sdk.Client, info: sdk.RerankerInfo) -> None:
    ranked = client.rerank(QUERY, DOCUMENTS, return_documents=True)
    assert isinstance(ranked, sdk.RerankResult) and ranked.model == RERANKER and not ranked.none_relevant
    assert sorted(r.index for r in ranked) == list(range(len(DOCUMENTS)))
    assert ranked[0].index == 1  # the answer
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(r.document == DOCUMENTS[r.index] and not r.windowed and not r.truncated for r in ranked)
    logits = {r.index: r.score for r in client.rerank(QUERY, DOCUMENTS, raw_scores=True)}
    for r in ranked:  # probability = sigmoid(logit / temperature); the default score is the probability
        assert r.probability == pytest.approx(_sigmoid(logits[r.index] / info.temperature), abs=1e-6)
        assert r.score == r.probability
    assert client.rerank(QUERY, DOCUMENTS)[0].document is None


def test_top_n_as_cohere(client: sdk.Client) -> None:
    full = [r.index for r in client.rerank(QUERY, DOCUMENTS)]
    assert [r.index for r in client.rerank(QUERY, DOCUMENTS, top_n=2)] == full[:2]
    for every in (None, 0, -3, len(DOCUMENTS), 1000):  # unset, <= 0 or above the count: every document
        assert [r.index for r in client.rerank(QUERY, DOCUMENTS, top_n=every)] == full


def test_min_probability_drops_and_says_none_relevant(client: sdk.Client) -> None:
    probabilities = sorted(r.probability for r in client.rerank(QUERY, DOCUMENTS))
    cut = (probabilities[1] + probabilities[2]) / 2
    kept = client.rerank(QUERY, DOCUMENTS, min_probability=cut)
    assert [r.probability >= cut for r in kept] == [True, True] and not kept.none_relevant
    assert len(client.rerank(QUERY, DOCUMENTS, min_probability=0.0)) == len(DOCUMENTS)
    above_all = min(1.0, probabilities[-1] + 1e-9)
    nothing = client.rerank(QUERY, DOCUMENTS, min_probability=above_all)
    assert len(nothing) == 0 and nothing.none_relevant


def _windows(tokenizer_file: str, query: str, document: str, max_seq_length: int) -> list[str]:
    """The document's windows as the README defines them, derived here from the tokenizer alone:
    `max_seq_length - 3 - query tokens` document tokens each, consecutive windows sharing
    `rerank.window_overlap_tokens` (at most half a window), the last one ending at the document's end."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tokenizer_file)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    query_ids = tokenizer.encode(query, add_special_tokens=False).ids
    ids = tokenizer.encode(document, add_special_tokens=False).ids
    room = max_seq_length - 3 - len(query_ids)
    step = room - min(RerankConfig().window_overlap_tokens, room // 2)
    starts = [0]
    while starts[-1] + room < len(ids):
        starts.append(starts[-1] + step)
    return [tokenizer.decode(ids[start : start + room]) for start in starts]


def test_a_long_document_is_scored_by_its_best_window(client: sdk.Client, info: sdk.RerankerInfo, rerank_repository: ModelRepository) -> None:
    """A relevant paragraph after more unrelated text than one window holds: the document's score
    is the highest of its windows' scores (each window scored alone gives the same logits), so
    windowing finds the paragraph; truncation scores the unrelated start only."""
    # only whole-word tokens, so windows decode to themselves; the relevant part fills the last window alone
    long_document = f"{' '.join([UNRELATED] * 12)} {' '.join([RELEVANT] * 4)}"
    windowed = client.rerank(QUERY, [long_document], raw_scores=True)[0]
    truncated = client.rerank(QUERY, [long_document], raw_scores=True, truncate=True)[0]
    assert windowed.windowed and not windowed.truncated
    assert truncated.truncated and not truncated.windowed
    windows = _windows(str(rerank_repository.get(RERANKER).file(File.TOKENIZER)), QUERY, long_document, info.max_seq_length)
    assert len(windows) >= 2
    scores = [r.score for r in sorted(client.rerank(QUERY, windows, raw_scores=True), key=lambda r: r.index)]
    assert not any(r.windowed or r.truncated for r in client.rerank(QUERY, windows))
    assert windowed.score == pytest.approx(max(scores), abs=1e-4)
    assert truncated.score == pytest.approx(scores[0], abs=1e-4)
    assert windowed.score > truncated.score + 1.0  # the relevant paragraph's window wins


def test_truncate_cuts_a_query_too_long_for_the_window(client: sdk.Client, info: sdk.RerankerInfo) -> None:
    """A query that leaves fewer than `rerank.min_window_tokens` document tokens is refused
    without truncate, naming truncate=True, and with it is cut to fit; the result is that of
    the query's first tokens (what CrossEncoder.predict's truncation scores)."""
    long_query = "paris " * (info.max_seq_length + 2)  # one token per word
    documents = ["The Eiffel Tower is in Paris.", "Bananas are yellow."]
    with pytest.raises(sdk.InvalidArgument, match=r"pass truncate=True to cut it there"):
        client.rerank(long_query, documents)
    cut = client.rerank(long_query, documents, truncate=True, raw_scores=True)
    assert sorted(r.index for r in cut) == [0, 1] and not any(r.truncated or r.windowed for r in cut)
    assert cut.query_truncated and not client.rerank("paris", documents, truncate=True).query_truncated
    # max_seq_length - 3 special - rerank.min_window_tokens (16) query tokens, sent as they are
    same = client.rerank("paris " * (info.max_seq_length - 3 - 16), documents, raw_scores=True)
    assert {r.index: round(r.score, 4) for r in cut} == {r.index: round(r.score, 4) for r in same}


def test_rerankers_are_listed_and_served_by_name(client: sdk.Client, rerank_repository: ModelRepository) -> None:
    listed = client.list_rerankers()
    assert [r.name for r in listed] == [RERANKER, SECOND_RERANKER]
    assert [r.default for r in listed] == [True, False]
    first = listed[0]
    entry = rerank_repository.get(RERANKER)
    assert first.version == entry.version and first.max_seq_length == entry.properties[Prop.MAX_SEQ_LENGTH]
    assert first.temperature == pytest.approx(entry.properties[Prop.TEMPERATURE])
    assert first.base_model == entry.properties[Prop.BASE_MODEL]
    assert first.metrics == entry.properties.get(Prop.METRICS, {})
    assert client.get_reranker("") == first == client.get_reranker(RERANKER)
    second = client.get_reranker(SECOND_RERANKER)
    assert second.temperature == pytest.approx(2 * first.temperature) and not second.default
    # the same weights under another name: the same logits, its own temperature
    ours, theirs = client.rerank(QUERY, DOCUMENTS, raw_scores=True), client.rerank(QUERY, DOCUMENTS, model=SECOND_RERANKER)
    assert theirs.model == SECOND_RERANKER
    logits = {r.index: r.score for r in ours}
    for r in theirs:
        assert r.probability == pytest.approx(_sigmoid(logits[r.index] / second.temperature), abs=1e-6)


def test_special_token_strings_are_text(client: sdk.Client) -> None:
    [plain] = client.rerank(QUERY, ["Paris [SEP] France"], raw_scores=True)
    [split] = client.rerank(QUERY, ["Paris [ SEP ] France"], raw_scores=True)  # what "[SEP]" tokenizes to as text
    assert plain.score == pytest.approx(split.score, abs=1e-4)


async def test_async_client_does_the_same(rerank_server) -> None:  # type: ignore[no-untyped-def]
    async with sdk.AsyncClient(rerank=rerank_server.address) as client:
        ranked, listed = await asyncio.gather(client.rerank(QUERY, DOCUMENTS, top_n=1), client.list_rerankers())
        assert len(ranked) == 1 and ranked[0].index == 1
        assert listed[0].name == RERANKER
        with pytest.raises(sdk.NotFound):
            await client.get_reranker("no-such-reranker")


# -- runtime -----------------------------------------------------------------------------------


def test_health_reflection_and_metrics(rerank_server, client: sdk.Client) -> None:  # type: ignore[no-untyped-def]
    client.rerank(QUERY, DOCUMENTS)
    with grpc.insecure_channel(rerank_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "facet.v1.Rerank"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "facet.v1.Rerank" in services
    text = urllib.request.urlopen(f"http://127.0.0.1:{rerank_server.metrics_port}/metrics").read().decode()
    assert 'facet_requests_total{code="OK",method="/facet.v1.Rerank/Rerank"}' in text


# -- bad input: every RPC, the right status, a message that says what to fix ---------------------

_BAD_CALLS = [
    ("rerank: empty query", lambda c: c.rerank("", ["a"]), sdk.InvalidArgument, "query is blank"),
    ("rerank: blank query", lambda c: c.rerank(" \u200b\t", ["a"]), sdk.InvalidArgument, "query is blank"),
    ("rerank: query too long", lambda c: c.rerank("q" * 4097, ["a"]), sdk.InvalidArgument, "rerank.max_query_chars (4096)"),
    ("rerank: query fills the model", lambda c: c.rerank("word " * 800, ["a"]), sdk.InvalidArgument, "no room is left for a document"),
    (
        "rerank: query leaves too short a window",
        lambda c: c.rerank("paris " * 122, ["a " * 1000]),
        sdk.InvalidArgument,
        "query takes 122 tokens; the model reads 128 tokens per (query, document) pair, 3 of them special, so only 3 document "
        "tokens per window are left, under rerank.min_window_tokens (16)",
    ),
    ("rerank: no documents", lambda c: c.rerank("q", []), sdk.InvalidArgument, "at least one document"),
    ("rerank: too many documents", lambda c: c.rerank("q", ["a"] * 1001), sdk.InvalidArgument, "rerank.max_documents_per_request (1000)"),
    ("rerank: blank document", lambda c: c.rerank("q", ["a", " \n"]), sdk.InvalidArgument, "documents[1] is blank"),
    ("rerank: document too long", lambda c: c.rerank("q", ["x" * 100_001]), sdk.InvalidArgument, "rerank.max_document_chars (100000)"),
    ("rerank: call too long", lambda c: c.rerank("q", ["x" * 100_000] * 11), sdk.InvalidArgument, "rerank.max_request_chars (1000000)"),
    ("rerank: unknown model", lambda c: c.rerank("q", ["a"], model="no-such-reranker"), sdk.NotFound, f"available: {RERANKER}"),
    ("rerank: min_probability > 1", lambda c: c.rerank("q", ["a"], min_probability=1.5), sdk.InvalidArgument, "min_probability"),
    ("rerank: min_probability < 0", lambda c: c.rerank("q", ["a"], min_probability=-0.1), sdk.InvalidArgument, "min_probability"),
    ("rerank: min_probability NaN", lambda c: c.rerank("q", ["a"], min_probability=float("nan")), sdk.InvalidArgument, "min_probability"),
    ("rerank: documents as one string", lambda c: c.rerank("q", "abc"), sdk.InvalidArgument, "not one string"),
    ("rerank: top_n not an integer", lambda c: c.rerank("q", ["a"], top_n=2.0), sdk.InvalidArgument, "top_n"),
    ("get_reranker: unknown", lambda c: c.get_reranker("no-such-reranker"), sdk.NotFound, "no-such-reranker"),
    ("get_reranker: not a string", lambda c: c.get_reranker(3), sdk.InvalidArgument, "name"),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), _BAD_CALLS, ids=[c[0] for c in _BAD_CALLS])
def test_bad_input_gets_a_clear_status(client: sdk.Client, case, call, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as raised:
        call(client)
    assert message in raised.value.message
    assert "Traceback" not in raised.value.message
    assert len(client.rerank("still serving?", ["yes"])) == 1


def _raw_call(address: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/facet.v1.Rerank/{method}")(payload, timeout=30)
    return raised.value


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf")])
def test_min_probability_out_of_range_is_refused_by_the_service(rerank_server, value: float) -> None:  # type: ignore[no-untyped-def]
    request = rerank_pb2.RerankRequest(query="q", documents=["a"], min_probability=value)
    error = _raw_call(rerank_server.address, "Rerank", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "min_probability must be between 0 and 1" in error.details()


def test_invalid_utf8_is_invalid_argument(rerank_server) -> None:  # type: ignore[no-untyped-def]
    error = _raw_call(rerank_server.address, "Rerank", b"\x0a\x02\xff\xfe")  # field 1 (query), not UTF-8
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "UTF-8" in error.details()
