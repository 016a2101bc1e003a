"""The retrieval service's input rules end to end (issue #12): user text is plain text, explicit
values are never replaced, no non-finite number leaves the server, prompts leave room for the
text, blank text follows one rule, numbers keep their value, limits answer INVALID_ARGUMENT (never
INTERNAL), cheap checks run before embedding, and every stored document can be read back.

On an in-process-backend server of this module's own, on each store (embedded and Milvus: the
same statuses and messages on both): these rules live in the servicer, embedder and tokenizer,
above the backend; the backend-dependent behaviour (embeddings, batching) is tested on every
backend in test_service.py."""

from __future__ import annotations

import concurrent.futures
import functools
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sdk
from sdk._contract import MAX_MESSAGE_BYTES
from sdk._proto.facet.v1 import retrieval_pb2, retrieval_pb2_grpc
from sdk._tensors import tensor_from_numpy
from services.retrieval.config import RetrievalConfig
from tests.services.retrieval.fixtures import STORES, store_env

pytestmark = pytest.mark.integration

LIMITS = RetrievalConfig()
BLANK_TEXTS = ["", " ", "\t\n\r", "\u200b", "\ufeff", "\u200d\u200c", "\u3000\u00a0", "\u2800", "\u3164", "\u2028"]


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, start_server):  # type: ignore[no-untyped-def]
    with store_env(request.param, request) as env:
        yield start_server(env=env)


@pytest.fixture(scope="module")
def client(server) -> Iterator[sdk.Client]:  # type: ignore[no-untyped-def]
    with sdk.Client(server.address) as c:
        yield c


@pytest.fixture(scope="module")
def channel(server) -> Iterator[grpc.Channel]:  # type: ignore[no-untyped-def]
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> retrieval_pb2_grpc.RetrievalStub:
    """The raw gRPC stub: requests the SDK would refuse to build reach the server."""
    return retrieval_pb2_grpc.RetrievalStub(channel)


def _name() -> str:
    return f"r-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def collection(client: sdk.Client) -> str:
    name = _name()
    client.create_collection(name)
    return name


def _code(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


# -- 1. user text is text -------------------------------------------------------------------------


def test_special_token_strings_are_embedded_as_plain_text(client: sdk.Client, stub: retrieval_pb2_grpc.RetrievalStub) -> None:
    text = "[CLS] a [SEP] b [MASK] [PAD] [UNK]"
    spaced = "[ CLS ] a [ SEP ] b [ MASK ] [ PAD ] [ UNK ]"  # the same characters, no special-token string
    reply = stub.Embed(retrieval_pb2.EmbedRequest(texts=[text, spaced, "hello", "hello [PAD] [PAD] [PAD]"]))
    counts = list(reply.token_counts)
    # "[", "cl", "##s", "]" ... : 4 + 1 + 3 + 1 + 3 + 3 + 4 pieces, plus the template's [CLS] and [SEP]
    assert counts[0] == counts[1] == 21
    vectors = client.embed([text, spaced, "hello", "hello [PAD] [PAD] [PAD]"])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    assert float(vectors[2] @ vectors[3]) < 0.99, "[PAD] in user text was read as padding"


def test_special_token_strings_are_plain_text_in_upsert_search_and_prompt(client: sdk.Client, collection: str) -> None:
    client.upsert(collection, ids=["sep", "plain"], texts=["x [SEP] y", "x [ SEP ] y"])
    by_id = {d.id: np.asarray(d.vector) for d in client.get(collection, ["sep", "plain"], include_vectors=True)}
    np.testing.assert_allclose(by_id["sep"], by_id["plain"], atol=1e-5)
    hits = client.search(collection, "[MASK] [SEP]", top_k=2, include_vectors=True)
    query = client.embed(["[ MASK ] [ SEP ]"])[0]
    assert hits[0].score == pytest.approx(float(query @ by_id[hits[0].id]), abs=1e-4)
    np.testing.assert_allclose(
        client.embed(["y"], prompt="[CLS] query: "), client.embed(["[ CLS ] query: y"]), atol=1e-5
    )


# -- 4. explicit values are not silently replaced ---------------------------------------------------


def test_top_k_zero_is_refused_and_unset_means_ten(client: sdk.Client, stub: retrieval_pb2_grpc.RetrievalStub, collection: str) -> None:
    client.upsert(collection, ids=[f"d{i}" for i in range(12)], vectors=np.eye(12, 384, dtype=np.float32) + 0.01)
    for top_k in (0, -1, LIMITS.max_top_k + 1):
        with pytest.raises(sdk.InvalidArgument, match="top_k"):
            client.search(collection, np.ones(384), top_k=top_k)
        explicit = _vector_request(collection, top_k=top_k)  # what any client sends: the server's own check
        code, details = _code(functools.partial(stub.Search, explicit))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and f"top_k must be 1..{LIMITS.max_top_k}" in details
    assert len(stub.Search(_vector_request(collection)).hits) == 10
    assert len(client.search(collection, np.ones(384), top_k=1)) == 1


# -- 5. no non-finite number leaves the server --------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_vectors_whose_scores_would_overflow_are_refused(client: sdk.Client, metric: str) -> None:
    name = _name()
    client.create_collection(name, dimension=4, metric=metric)
    for value in (3e38, 1e30, 6e17):  # 6e17 x 2 (the norm of 4 equal components) > 1e18
        with pytest.raises(sdk.InvalidArgument, match="max_vector_norm"):
            client.upsert(name, ids=["big"], vectors=np.full((1, 4), value))
        with pytest.raises(sdk.InvalidArgument, match="max_vector_norm"):
            client.search(name, np.full(4, value))
    assert client.get(name, ["big"]) == []
    # just under the limit: stored as sent, and every score is finite
    near = np.full((2, 4), 4.9e17, dtype=np.float32) * np.array([[1.0], [-1.0]], dtype=np.float32)
    client.upsert(name, ids=["p", "n"], vectors=near)
    stored = {d.id: np.asarray(d.vector) for d in client.get(name, ["p", "n"], include_vectors=True)}
    if metric != "cosine":
        np.testing.assert_array_equal(stored["p"], near[0])
    else:
        np.testing.assert_allclose(stored["p"], np.full(4, 0.5), rtol=1e-6)
    hits = client.search(name, near[1], top_k=2)
    assert len(hits) == 2 and all(np.isfinite(h.score) for h in hits)


# -- 6. a prompt never replaces the text; blank text follows one rule -----------------------------------


def test_prompt_that_leaves_no_room_is_refused(client: sdk.Client, collection: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match="prompt takes 300 tokens") as info:
        client.embed(["hello"], prompt="cat " * 300)
    assert "254" in info.value.message  # what the model reads besides [CLS] and [SEP]
    with pytest.raises(sdk.InvalidArgument, match="prompt takes 254 tokens"):
        client.embed(["hello"], prompt="cat " * 254)
    client.upsert(collection, ids=["a"], texts=["hello"])
    with pytest.raises(sdk.InvalidArgument, match="prompt"):
        client.search(collection, "hello", prompt="cat " * 300)
    # a long prompt that leaves room: the text still counts
    room = client.embed(["hello", "goodbye"], prompt="cat " * 250)
    assert float(room[0] @ room[1]) < 0.9999


@pytest.mark.parametrize("blank", BLANK_TEXTS, ids=[repr(t) for t in BLANK_TEXTS])
def test_blank_text_is_refused_everywhere_it_would_be_embedded(client: sdk.Client, collection: str, blank: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match="blank"):
        client.embed(["fine", blank])
    with pytest.raises(sdk.InvalidArgument, match="blank"):
        client.embed([blank], prompt="query: ")
    with pytest.raises(sdk.InvalidArgument, match="blank"):
        client.upsert(collection, ids=["ok", "b"], texts=["fine", blank])
    with pytest.raises(sdk.InvalidArgument, match="blank"):
        client.search(collection, blank)
    assert client.get(collection, ["ok", "b"]) == []
    # beside a vector the text is payload, stored as given
    client.upsert(collection, ids=["v"], texts=[blank], vectors=np.ones((1, 384)))
    assert client.get(collection, ["v"])[0].text == blank


def test_text_the_tokenizer_drops_entirely_is_refused(client: sdk.Client) -> None:
    # combining marks alone are visible but the uncased tokenizer strips them: nothing is left to embed
    with pytest.raises(sdk.InvalidArgument, match="no token"):
        client.embed(["\u0301\u0302"])


# -- 8. numbers keep their value ----------------------------------------------------------------------


def test_integers_beyond_2_53_are_refused_with_the_key(client: sdk.Client, stub: retrieval_pb2_grpc.RetrievalStub, collection: str) -> None:
    client.upsert(collection, ids=["edge", "small"], vectors=np.ones((2, 384)), metadata=[{"n": 2**53}, {"n": 2**53 - 1}])
    assert [h.id for h in client.search(collection, np.ones(384), filter={"n": 2**53})] == ["edge"]
    for value in (2**53 + 1, -(2**53) - 1, 2**64):
        with pytest.raises(sdk.InvalidArgument, match=r"metadata\[0\].*deep.*n.*2\*\*53"):
            client.upsert(collection, ids=["x"], vectors=np.ones((1, 384)), metadata=[{"deep": {"n": value}}])
        with pytest.raises(sdk.InvalidArgument, match=r"filter.*n.*2\*\*53"):
            client.search(collection, np.ones(384), filter={"n": value})
    # a client that sends the double itself: the server refuses what it cannot hold exactly
    doc = retrieval_pb2.Document(id="x", vector=[1.0] * 384)
    doc.metadata.update({"big": float(2**53 + 2), "list": [1, float(2**60)]})
    code, details = _code(lambda: stub.Upsert(retrieval_pb2.UpsertRequest(collection=collection, documents=[doc])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "documents[0].metadata" in details and "2**53" in details
    request = retrieval_pb2.SearchRequest(collection=collection, vector=tensor_from_numpy(np.ones(384, np.float32)))
    request.filter.update({"n": float(2**53 + 2)})
    code, details = _code(lambda: stub.Search(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "filter.n" in details
    assert client.get(collection, ["x"]) == []


# -- 9. limits with clear messages, and no INTERNAL for any bad input ------------------------------------


def test_filter_key_limit(client: sdk.Client, collection: str) -> None:
    keys = {f"k{i}": i for i in range(LIMITS.max_filter_keys)}
    client.upsert(collection, ids=["all"], vectors=np.ones((1, 384)), metadata=[keys])
    assert [h.id for h in client.search(collection, np.ones(384), filter=keys)] == ["all"]
    for count in (LIMITS.max_filter_keys + 1, 499, 2000):
        with pytest.raises(sdk.InvalidArgument, match="max_filter_keys"):
            client.search(collection, np.ones(384), filter={f"k{i}": i for i in range(count)})


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_metadata_depth_limit(client: sdk.Client, channel: grpc.Channel, collection: str) -> None:
    client.upsert(collection, ids=["ok"], vectors=np.ones((1, 384)), metadata=[_nested(LIMITS.max_metadata_depth)])
    assert client.get(collection, ["ok"])[0].metadata == _nested(LIMITS.max_metadata_depth)
    document = _field(1, b"deep") + _field(3, b"".join(np.ones(384, "<f4").tobytes() for _ in range(1)))
    document += _field(4, _deep_struct_bytes(LIMITS.max_metadata_depth + 1))
    code, details = _code(lambda: _raw(channel, "Upsert", _field(1, collection.encode()) + _field(2, document)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "retrieval.max_metadata_depth" in details
    assert client.get(collection, ["deep"]) == []


ODD_STRINGS = [
    "", "\x00", "\x01\x7f", "'", '"', "\\", "a.b", "$", "$.a", "[0]", "*", "%", "_", "--", "; DROP TABLE documents;",
    "\u200b", "\ufeff", "\u202e", "😀", "👩‍👩‍👧", "e\u0301", "北京", "Привет", "\U0010ffff", "\ufffd", "x" * 256, "x" * 257, " ",
]


def _vector_request(collection: str, **fields: Any) -> retrieval_pb2.SearchRequest:
    return retrieval_pb2.SearchRequest(collection=collection, vector=tensor_from_numpy(np.ones(384, np.float32)), **fields)


def _fuzz_requests(collection: str) -> Iterator[tuple[str, str, bytes]]:
    """(case, method, serialized request): malformed input for every RPC."""
    r = retrieval_pb2
    ones = [1.0] * 384

    def vector_search(**fields: Any) -> bytes:
        return _vector_request(collection, **fields).SerializeToString()

    def upsert(document: retrieval_pb2.Document) -> bytes:
        return r.UpsertRequest(collection=collection, documents=[document]).SerializeToString()

    def search(vector: np.ndarray) -> bytes:
        return r.SearchRequest(collection=collection, vector=tensor_from_numpy(vector)).SerializeToString()

    for s in ODD_STRINGS:
        yield f"upsert id {s!r}", "Upsert", upsert(r.Document(id=s, vector=ones))
        yield f"get id {s!r}", "Get", r.GetRequest(collection=collection, ids=[s]).SerializeToString()
        yield f"collection {s!r}", "CreateCollection", r.CreateCollectionRequest(name=s).SerializeToString()
        yield f"search collection {s!r}", "Search", _vector_request(s).SerializeToString()
        yield f"delete collection {s!r}", "DeleteCollection", r.DeleteCollectionRequest(name=s).SerializeToString()
        yield f"metadata key {s!r}", "Upsert", upsert(r.Document(id=f"m{hash(s)}", vector=ones, metadata=_struct({s: s, "list": [s, {s: [s]}]})))
        yield f"filter key {s!r}", "Search", vector_search(filter=_struct({s: s}))
        yield f"embed {s!r}", "Embed", r.EmbedRequest(texts=[s], prompt=s).SerializeToString()
        yield f"search text {s!r}", "Search", r.SearchRequest(collection=collection, text=s, prompt=s).SerializeToString()
        yield f"delete id {s!r}", "DeleteDocuments", r.DeleteDocumentsRequest(collection=collection, ids=[f"x{s}"]).SerializeToString()
    values: list[Any] = [[], [1, 2], {"a": 1}, {}, [[[]]]]
    for value in values:
        yield f"filter value {value!r}", "Search", vector_search(filter=_struct({"k": value}))
    for depth in (30, 60, 200):  # past protobuf's 100 levels the bytes are built by hand
        deep = _deep_struct_bytes(depth)
        yield f"metadata {depth} deep", "Upsert", _field(1, collection.encode()) + _field(2, _field(1, b"deep") + _field(4, deep))
        yield f"filter {depth} deep", "Search", vector_search() + _field(5, deep)
    yield "metadata 5000 keys", "Upsert", upsert(r.Document(id="wide", vector=ones, metadata=_struct({f"k{i}": [i] * 10 for i in range(5000)})))
    yield "huge id", "Get", r.GetRequest(collection=collection, ids=["i" * 1_000_000]).SerializeToString()
    yield "huge text beside a vector", "Upsert", upsert(r.Document(id="t", text="t" * 5_000_000, vector=ones))
    yield "huge filter string", "Search", vector_search(filter=_struct({"k": "v" * 10_000_000}))
    yield "no query", "Search", r.SearchRequest(collection=collection).SerializeToString()
    yield "empty tensor", "Search", search(np.zeros(0, np.float32))
    yield "int tensor", "Search", search(np.ones(384, np.int64))
    yield "2-D tensor", "Search", search(np.ones((2, 384), np.float32))
    yield "zero vector", "Search", search(np.zeros(384, np.float32))
    yield "subnormal vector", "Search", search(np.full(384, 1e-45, np.float32))
    yield "zero upsert vector", "Upsert", upsert(r.Document(id="z", vector=[0.0] * 384))
    yield "unknown metric", "CreateCollection", _field(1, _name().encode()) + bytes([2 << 3, 99])
    yield "unknown index type", "CreateCollection", _field(1, _name().encode()) + bytes([3 << 3, 77])
    yield "huge dimension", "CreateCollection", r.CreateCollectionRequest(name=_name(), dimension=2**31 - 1).SerializeToString()
    yield "negative hnsw", "CreateCollection", r.CreateCollectionRequest(name=_name(), index_type=r.INDEX_TYPE_HNSW, hnsw_m=-1, hnsw_ef_search=-1).SerializeToString()
    yield "top_k huge", "Search", vector_search(top_k=2**31 - 1)
    yield "1024 texts to embed", "Embed", r.EmbedRequest(texts=["x"] * 1024).SerializeToString()
    over = LIMITS.max_request_chars // LIMITS.max_text_chars + 1
    yield "over the character budget", "Embed", r.EmbedRequest(texts=["x" * LIMITS.max_text_chars] * over).SerializeToString()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    length, size = b"", len(payload)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            break
    return bytes([number << 3 | 2]) + length + payload


def _deep_struct_bytes(depth: int) -> bytes:
    """A Struct {"n": {"n": ... {"leaf": 1}}} nested `depth` objects deep, serialized."""
    value = _struct({"leaf": 1}).SerializeToString()
    for _ in range(depth - 1):
        # Struct.fields entry: key (1) "n", value (2) a Value whose struct_value (5) is `value`
        value = _field(1, _field(1, b"n") + _field(2, _field(5, value)))
    return value


def _raw(channel: grpc.Channel, method: str, payload: bytes) -> bytes:
    call = channel.unary_unary(f"/facet.v1.Retrieval/{method}")
    return bytes(call(payload, timeout=60))


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def test_no_bad_input_gets_internal(client: sdk.Client, channel: grpc.Channel, collection: str) -> None:
    client.upsert(collection, ids=["seed"], texts=["a document"])
    internal = []
    accepted = set()
    for case, method, payload in _fuzz_requests(collection):
        code, details = _code(functools.partial(_raw, channel, method, payload))
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS):
            internal.append(f"{case}: {code.name} {details}")
        if code == grpc.StatusCode.OK:
            accepted.add(case)
    assert internal == []
    assert client.embed(["still serving"]).shape == (1, 384)
    # every id of 1..256 characters and every metadata key is stored, and reads back as sent
    assert {f"upsert id {s!r}" for s in ODD_STRINGS if 1 <= len(s) <= 256} <= accepted
    for s in ODD_STRINGS:
        assert f"metadata key {s!r}" in accepted
        [doc] = client.get(collection, [f"m{hash(s)}"])
        assert doc.metadata == {s: s, "list": [s, {s: [s]}]}


# -- 10, 11. cheap checks first, the event loop stays free ------------------------------------------------


def _batched_rows(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith('facet_batch_size_sum{model="all-minilm-l6-v2"}'):
            return float(line.split()[-1])
    return 0.0


def _upsert_request(collection: str, ids: list[str], texts: list[str], metadata: list[dict[str, Any]] | None = None) -> retrieval_pb2.UpsertRequest:
    documents = [retrieval_pb2.Document(id=i, text=t) for i, t in zip(ids, texts, strict=True)]
    for doc, meta in zip(documents, metadata or [], strict=False):
        doc.metadata.update(meta)
    return retrieval_pb2.UpsertRequest(collection=collection, documents=documents)


def test_upsert_is_checked_before_anything_is_embedded(server, stub: retrieval_pb2_grpc.RetrievalStub, collection: str) -> None:  # type: ignore[no-untyped-def]
    # raw requests: the SDK refuses several of these itself; the server must too, before embedding
    texts = ["a long sentence about many different things " * 200] * 256
    ids = [f"t{i}" for i in range(256)]
    ok: list[dict[str, Any]] = [{} for _ in range(255)]
    cases: list[tuple[retrieval_pb2.UpsertRequest, str]] = [
        (_upsert_request(collection, ids, texts, [*ok, {"x": float("nan")}]), "documents[255].metadata must be JSON"),
        (_upsert_request(collection, ids, texts, [*ok, {"x": "y" * 20_000}]), "retrieval.max_metadata_bytes"),
        (_upsert_request(collection, ids, texts, [*ok, _nested(LIMITS.max_metadata_depth + 1)]), "retrieval.max_metadata_depth"),
        (_upsert_request(collection, ids, texts, [*ok, {"n": float(2**60)}]), "2**53"),
        (_upsert_request(collection, ids, [*texts[:255], "\u200b "]), "blank"),
        (_upsert_request(collection, [*ids[:255], "x" * 300], texts), "characters"),
        (_upsert_request(collection, ids, [*texts[:255], "é" * 20_001]), "retrieval.max_document_text_bytes"),
        (_upsert_request(collection, [f"d{i}" for i in range(101)], ["word " * 8000] * 101), "retrieval.max_request_chars"),
        (_upsert_request("no-such-collection", ids, texts), "no-such-collection"),
    ]
    before = _batched_rows(server.metrics_port)
    for request, message in cases:
        code, details = _code(functools.partial(stub.Upsert, request))
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND) and message in details, (code, details)
    assert _batched_rows(server.metrics_port) == before, "a refused upsert was embedded first"
    stub.Upsert(_upsert_request(collection, ["fine"], ["a fine text"]))
    assert _batched_rows(server.metrics_port) > before


HEALTH_DEADLINE_S = 1.0


def test_health_answers_while_a_large_embed_runs(server) -> None:  # type: ignore[no-untyped-def]
    import psutil

    texts = ["word " * (LIMITS.max_text_chars // 5)] * (LIMITS.max_request_chars // LIMITS.max_text_chars)  # the whole budget
    process = psutil.Process(server.process.pid)
    request = health_pb2.HealthCheckRequest(service="facet.v1.Retrieval")
    with sdk.Client(server.address, timeout_s=600) as c, grpc.insecure_channel(server.address) as channel:
        c.embed(["warm up"])
        rss_before = process.memory_info().rss
        health = health_pb2_grpc.HealthStub(channel)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            for _ in range(3):
                future = pool.submit(c.embed, texts)
                answered = 0
                while not future.done():
                    # DEADLINE_EXCEEDED here is the failure: the event loop was held
                    assert health.Check(request, timeout=HEALTH_DEADLINE_S).status == health_pb2.HealthCheckResponse.SERVING
                    answered += 1
                assert future.result().shape == (len(texts), 384)
                assert answered >= 1
        grown = process.memory_info().rss - rss_before
    assert grown < 512 * 2**20, f"RSS grew {grown / 2**20:.0f} MiB over three large embeds"


def test_request_character_budget(client: sdk.Client) -> None:
    per_text = LIMITS.max_text_chars
    over = LIMITS.max_request_chars // per_text + 1
    with pytest.raises(sdk.InvalidArgument, match="retrieval.max_request_chars"):
        client.embed(["word " * (per_text // 5)] * over)
    with pytest.raises(sdk.InvalidArgument, match="retrieval.max_request_chars"):
        client.embed(["w"] * over, prompt="p" * (per_text - 1))


def test_long_texts_are_cut_before_tokenizing_with_the_same_result(client: sdk.Client) -> None:
    head = "Paris is the capital of France and its largest city. " * 40  # far past 256 tokens
    texts = [head + "tail " * 15_000, head, head + "x" * 50_000, head.replace(" ", "\u3000") + "y" * 1000]
    vectors = client.embed(texts)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-5)
    np.testing.assert_allclose(vectors[2], vectors[1], atol=1e-5)
    assert np.isfinite(vectors).all()


# -- 13. every stored document can be read back ---------------------------------------------------------


def test_stored_size_limits(client: sdk.Client, collection: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match="max_metadata_bytes"):
        client.upsert(collection, ids=["m"], vectors=np.ones((1, 384)), metadata=[{"blob": "x" * 25_000_000}])
    with pytest.raises(sdk.InvalidArgument, match="max_document_text_bytes"):
        client.upsert(collection, ids=["t"], texts=["ü" * (LIMITS.max_document_text_bytes // 2 + 1)], vectors=np.ones((1, 384)))
    assert client.get(collection, ["m", "t"]) == []


def test_a_full_batch_of_the_largest_documents_reads_back(client: sdk.Client, stub: retrieval_pb2_grpc.RetrievalStub, collection: str) -> None:
    n = LIMITS.max_documents_per_request
    text = "t" * LIMITS.max_document_text_bytes
    metadata = _struct({"blob": "m" * (LIMITS.max_metadata_bytes - 16)})
    assert metadata.ByteSize() <= LIMITS.max_metadata_bytes
    for start in range(0, n, n // 4):  # four upserts: each well under the message limit
        documents = [
            retrieval_pb2.Document(id=f"{'i' * 250}{k:05d}", text=text, vector=[1.0] * 384, metadata=metadata)
            for k in range(start, start + n // 4)
        ]
        stub.Upsert(retrieval_pb2.UpsertRequest(collection=collection, documents=documents))
    ids = [f"{'i' * 250}{k:05d}" for k in range(n)]
    reply = stub.Get(retrieval_pb2.GetRequest(collection=collection, ids=ids, include_vectors=True))
    assert len(reply.documents) == n and reply.ByteSize() <= MAX_MESSAGE_BYTES
    hits = client.search(collection, np.ones(384), top_k=LIMITS.max_top_k, include_vectors=True)
    assert len(hits) == LIMITS.max_top_k


def test_get_with_vectors_that_cannot_fit_is_refused(client: sdk.Client, collection: str) -> None:
    name = _name()
    client.create_collection(name, dimension=32768, metric="dot")  # the largest both stores take
    with pytest.raises(sdk.InvalidArgument, match="fit in one reply"):
        client.get(name, [f"id{i}" for i in range(LIMITS.max_documents_per_request)], include_vectors=True)
    with pytest.raises(sdk.InvalidArgument, match="fit in one reply"):
        client.search(name, np.ones(32768), top_k=LIMITS.max_top_k, include_vectors=True)
    assert client.get(name, [f"id{i}" for i in range(LIMITS.max_documents_per_request)]) == []


@pytest.mark.parametrize(
    ("call", "rule"),
    [
        (lambda c, coll: c.create_collection("x" * 14_000), "use 1-128 characters"),
        (lambda c, coll: c.get("n" * 14_000, ["a"]), "use 1-128 characters"),
        (lambda c, coll: c.search(coll, "q", filter={"k" * 5_000: 1}), "1-256 characters"),
    ],
    ids=["collection name", "collection in get", "filter key"],
)
def test_a_long_echoed_name_is_cut_so_the_rule_stays_in_the_message(client: sdk.Client, collection: str, call, rule: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sdk.InvalidArgument) as info:
        call(client, collection)
    assert rule in info.value.message and "characters)" in info.value.message and len(info.value.message) < 400
