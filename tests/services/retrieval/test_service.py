"""The retrieval service end to end: a real server process, the real model, the SDK."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import sdk
from sdk._proto.facet.v1 import retrieval_pb2

pytestmark = pytest.mark.integration

SENTENCES = {
    "paris": ("Paris is the capital and largest city of France.", {"lang": "en", "topic": "geo"}),
    "berlin": ("Berlin ist die Hauptstadt von Deutschland.", {"lang": "de", "topic": "geo"}),
    "cells": ("Mitochondria produce most of the chemical energy of a cell.", {"lang": "en", "topic": "bio"}),
    "python": ("Python is a programming language that emphasises readability.", {"lang": "en", "topic": "cs"}),
}


@pytest.fixture(scope="module")
def client(retrieval_address: str) -> sdk.Client:
    with sdk.Client(retrieval_address) as c:
        yield c


def _name() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def notes(client: sdk.Client) -> str:
    name = _name()
    client.create_collection(name)
    ids = list(SENTENCES)
    client.upsert(name, ids=ids, texts=[SENTENCES[i][0] for i in ids], metadata=[SENTENCES[i][1] for i in ids])
    return name


# -- behaviour ---------------------------------------------------------------------------------


def test_embed_matches_sentence_transformers(client: sdk.Client, rarb_data) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    from training.retrieval.export import packaged_minilm_dir, rarb_sentences

    texts = rarb_sentences(rarb_data, 64)
    ours = client.embed(texts)
    reference = SentenceTransformer(str(packaged_minilm_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (64, 384) and ours.dtype == np.float32
    assert float(np.min(np.sum(ours * reference, axis=1))) >= 0.9999


def test_embed_normalize_prompt_and_truncation(client: sdk.Client) -> None:
    unit = client.embed(["a sentence", "another"])
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    raw = client.embed(["a sentence"], normalize=False)
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 1e-3
    np.testing.assert_allclose(raw[0] / np.linalg.norm(raw[0]), unit[0], atol=1e-5)
    prompted = client.embed(["the cat"], prompt="query: ")
    np.testing.assert_allclose(prompted, client.embed(["query: the cat"]), atol=1e-5)
    long_text = "word " * 2000
    head = " ".join(["word"] * 300)
    # truncation at the model's 256 tokens: everything past it is ignored
    np.testing.assert_allclose(client.embed([long_text]), client.embed([head]), atol=1e-5)


def test_collection_lifecycle_and_search(client: sdk.Client, notes: str) -> None:
    [info] = [c for c in client.list_collections() if c.name == notes]
    assert (info.metric, info.index_type, info.dimension, info.document_count) == ("cosine", "flat", 384, 4)
    hits = client.search(notes, "What is the capital of France?", top_k=2)
    assert hits[0].id == "paris" and hits[0].text == SENTENCES["paris"][0]
    assert hits[0].metadata == {"lang": "en", "topic": "geo"}
    assert hits[0].score > hits[1].score
    assert {h.id for h in client.search(notes, "capital city", top_k=5, filter={"lang": "de"})} == {"berlin"}
    by_vector = client.search(notes, client.embed(["energy in cells"])[0], top_k=1, include_vectors=True)
    assert by_vector[0].id == "cells" and by_vector[0].vector is not None and by_vector[0].vector.shape == (384,)
    docs = client.get(notes, ["python", "nope", "paris"])
    assert [d.id for d in docs] == ["python", "paris"]
    assert client.delete(notes, ["python", "nope"]) == 1
    assert "python" not in {h.id for h in client.search(notes, "programming language", top_k=4)}
    assert client.delete_collection(notes) == 3
    assert notes not in {c.name for c in client.list_collections()}


def test_upsert_vectors_and_idempotence(client: sdk.Client) -> None:
    name = _name()
    client.create_collection(name, dimension=3, metric="l2", index_type="hnsw")
    vectors = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0]], np.float32)
    assert client.upsert(name, ids=["o", "x", "y"], vectors=vectors) == sdk.UpsertResult(upserted=3, created=3)
    assert client.upsert(name, ids=["o", "x", "y"], vectors=vectors).created == 0
    hits = client.search(name, [0.9, 0, 0], top_k=3)
    assert [h.id for h in hits] == ["x", "o", "y"]
    assert hits[0].score == pytest.approx(0.01, abs=1e-5)


async def test_async_client_does_the_same(retrieval_address: str) -> None:
    async with sdk.AsyncClient(retrieval_address) as client:
        name = _name()
        await client.create_collection(name)
        await client.upsert(name, ids=["a", "b"], texts=["The sun is a star.", "Bread is baked in an oven."])
        vectors, hits = await asyncio.gather(
            client.embed(["x", "y", "z"]), client.search(name, "Which object is a star?", top_k=1)
        )
        assert vectors.shape == (3, 384)
        assert hits[0].id == "a"
        with pytest.raises(sdk.NotFound):
            await client.search("missing-collection", "q")
        assert await client.delete_collection(name) == 2


# -- runtime -----------------------------------------------------------------------------------


def test_health_reflection_and_metrics(retrieval_server, client: sdk.Client, model_repository, triton_for) -> None:  # type: ignore[no-untyped-def]
    client.embed(["warm the metrics"])
    with grpc.insecure_channel(retrieval_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "facet.v1.Retrieval"):
            assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "facet.v1.Retrieval" in services and "grpc.health.v1.Health" in services
    text = urllib.request.urlopen(f"http://127.0.0.1:{retrieval_server.metrics_port}/metrics").read().decode()
    assert 'facet_requests_total{code="OK",method="/facet.v1.Retrieval/Embed"}' in text
    assert "facet_request_latency_seconds_bucket" in text
    if retrieval_server.backend in ("onnxruntime", "ray"):  # Facet batches (before the handle, on Ray): its batch metrics
        assert 'facet_batch_size_count{model="all-minilm-l6-v2"}' in text
        assert 'facet_queue_time_seconds_count{model="all-minilm-l6-v2"}' in text
    elif retrieval_server.backend == "triton":  # Triton batches: Triton's own metrics count the model's executions
        server = triton_for(model_repository).server
        triton = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
        assert 'nv_inference_exec_count{model="all-minilm-l6-v2",version="1"}' in triton


def test_errors_carry_the_request_id(client: sdk.Client) -> None:
    with pytest.raises(sdk.NotFound) as info:
        client.get("no-such-collection", ["a"])
    assert info.value.request_id and len(info.value.request_id) == 32
    assert "no-such-collection" in info.value.message


# -- bad input: every RPC, the right status, a message that says what to fix ---------------------

_BAD_CALLS = [
    ("embed: empty list", lambda c, n: c.embed([]), sdk.InvalidArgument, "at least one"),
    ("embed: over the batch limit", lambda c, n: c.embed(["x"] * 257), sdk.InvalidArgument, "limit is 256"),
    ("embed: too long, truncate=False", lambda c, n: c.embed(["word " * 400], truncate=False), sdk.InvalidArgument, "truncate"),
    ("embed: too many characters", lambda c, n: c.embed(["x" * 100_001]), sdk.InvalidArgument, "characters"),
    ("create: twice", lambda c, n: c.create_collection(n), sdk.AlreadyExists, "already exists"),
    ("create: bad name", lambda c, n: c.create_collection("a b"), sdk.InvalidArgument, "name"),
    ("create: bad dimension", lambda c, n: c.create_collection(_name(), dimension=-3), sdk.InvalidArgument, "dimension"),
    ("delete collection: unknown", lambda c, n: c.delete_collection("nope-x"), sdk.NotFound, "nope-x"),
    ("upsert: empty", lambda c, n: c.upsert(n, ids=[], texts=[]), sdk.InvalidArgument, "at least one"),
    ("upsert: unknown collection", lambda c, n: c.upsert("nope-x", ids=["a"], texts=["t"]), sdk.NotFound, "nope-x"),
    ("upsert: duplicate ids", lambda c, n: c.upsert(n, ids=["a", "a"], texts=["t", "u"]), sdk.InvalidArgument, "twice"),
    ("upsert: wrong dimension", lambda c, n: c.upsert(n, ids=["a"], vectors=np.ones((1, 5))), sdk.InvalidArgument, "dimension"),
    ("upsert: NaN vector", lambda c, n: c.upsert(n, ids=["a"], vectors=np.full((1, 384), np.nan)), sdk.InvalidArgument, "finite"),
    ("upsert: inf vector", lambda c, n: c.upsert(n, ids=["a"], vectors=np.full((1, 384), np.inf)), sdk.InvalidArgument, "finite"),
    ("upsert: no text, no vector", lambda c, n: c.upsert(n, ids=["a"], texts=[""]), sdk.InvalidArgument, "neither"),
    ("upsert: empty id", lambda c, n: c.upsert(n, ids=[""], texts=["t"]), sdk.InvalidArgument, "characters"),
    ("upsert: too many", lambda c, n: c.upsert(n, ids=[str(i) for i in range(1025)], vectors=np.ones((1025, 384))), sdk.InvalidArgument, "limit is 1024"),
    ("get: empty", lambda c, n: c.get(n, []), sdk.InvalidArgument, "at least one"),
    ("get: unknown collection", lambda c, n: c.get("nope-x", ["a"]), sdk.NotFound, "nope-x"),
    ("get: duplicate ids", lambda c, n: c.get(n, ["a", "a"]), sdk.InvalidArgument, "twice"),
    ("delete: empty", lambda c, n: c.delete(n, []), sdk.InvalidArgument, "at least one"),
    ("delete: unknown collection", lambda c, n: c.delete("nope-x", ["a"]), sdk.NotFound, "nope-x"),
    ("search: unknown collection", lambda c, n: c.search("nope-x", "q"), sdk.NotFound, "nope-x"),
    ("search: wrong dimension", lambda c, n: c.search(n, np.ones(7)), sdk.InvalidArgument, "dimension"),
    ("search: NaN vector", lambda c, n: c.search(n, np.full(384, np.nan)), sdk.InvalidArgument, "finite"),
    ("search: top_k too large", lambda c, n: c.search(n, "q", top_k=5000), sdk.InvalidArgument, "top_k"),
    ("search: nested filter", lambda c, n: c.search(n, "q", filter={"lang": {"in": ["en"]}}), sdk.InvalidArgument, "filter"),
    ("search: control character in filter key", lambda c, n: c.search(n, "q", filter={"\x00": 1}), sdk.InvalidArgument, "filter key"),
    ("search: NaN in filter", lambda c, n: c.search(n, "q", filter={"x": float("inf")}), sdk.InvalidArgument, "filter"),
    ("search: empty collection name", lambda c, n: c.search("", "q"), sdk.InvalidArgument, "collection name"),
    ("search: prompt too long", lambda c, n: c.search(n, "q", prompt="x" * 100_000), sdk.InvalidArgument, "limit is 100000"),
    ("embed: prompt too long", lambda c, n: c.embed(["a"], prompt="x " * 60_000), sdk.InvalidArgument, "prompt"),
    ("upsert: NaN in metadata", lambda c, n: c.upsert(n, ids=["a"], texts=["t"], metadata=[{"x": float("nan")}]), sdk.InvalidArgument, "metadata"),
    ("upsert: text too long beside a vector", lambda c, n: c.upsert(n, ids=["a"], texts=["x" * 100_001], vectors=np.ones((1, 384))), sdk.InvalidArgument, "characters"),
    ("create: hnsw_m too large", lambda c, n: c.create_collection(_name(), index_type="hnsw", hnsw_m=2**31 - 1), sdk.InvalidArgument, "hnsw_m"),
    ("get: too many ids", lambda c, n: c.get(n, [str(i) for i in range(1025)]), sdk.InvalidArgument, "limit is 1024"),
    ("delete: too many ids", lambda c, n: c.delete(n, [str(i) for i in range(1025)]), sdk.InvalidArgument, "limit is 1024"),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), _BAD_CALLS, ids=[c[0] for c in _BAD_CALLS])
def test_bad_input_gets_a_clear_status(client: sdk.Client, notes: str, case, call, error, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        call(client, notes)
    assert message in info.value.message
    assert "Traceback" not in info.value.message
    assert client.embed(["still serving"]).shape == (1, 384)


def _raw_call(address: str, method: str, payload: bytes, **options: int) -> grpc.RpcError:
    with grpc.insecure_channel(address, options=list(options.items())) as channel:
        call = channel.unary_unary(f"/facet.v1.Retrieval/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(payload, timeout=10)
    return info.value


def test_invalid_utf8_is_invalid_argument(retrieval_address: str, client: sdk.Client) -> None:
    # field 1 (texts), wire type 2, length 2, bytes that are not UTF-8
    error = _raw_call(retrieval_address, "Embed", b"\x0a\x02\xff\xfe")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in error.details()
    assert client.embed(["ok"]).shape == (1, 384)


def test_absurd_tensor_shape_is_invalid_argument(retrieval_address: str, notes: str) -> None:
    request = retrieval_pb2.SearchRequest(collection=notes)
    request.vector.dtype = 1  # float32
    request.vector.shape.extend([2**62, 4])  # the byte count overflows int64
    error = _raw_call(retrieval_address, "Search", request.SerializeToString())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in error.details()


def test_oversized_message_is_resource_exhausted(retrieval_address: str, client: sdk.Client) -> None:
    big = retrieval_pb2.EmbedRequest(texts=["x" * (1 << 20)] * 65).SerializeToString()  # > 64 MiB
    error = _raw_call(retrieval_address, "Embed", big, **{"grpc.max_send_message_length": -1})
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(sdk.ResourceExhausted):  # the SDK refuses to send it at all
        client.embed(["x" * (1 << 20)] * 65)
    assert client.embed(["ok"]).shape == (1, 384)


def test_expired_deadline(client: sdk.Client) -> None:
    with pytest.raises(sdk.DeadlineExceeded):
        client.embed(["x"] * 200, timeout_s=1e-4)
    assert client.embed(["ok"]).shape == (1, 384)


def test_api_key(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server(env={"FACET_API_KEY": "s3cret"})
    for key in (None, "wrong"):
        with sdk.Client(server.address, api_key=key or "") as c, pytest.raises(sdk.Unauthenticated, match="API key"):
            c.list_collections()
    with sdk.Client(server.address, api_key="s3cret") as c:
        assert c.embed(["hi"]).shape == (1, 384)
        assert c.model_info().name == "all-minilm-l6-v2"
    with grpc.insecure_channel(server.address) as channel:  # health stays open
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


