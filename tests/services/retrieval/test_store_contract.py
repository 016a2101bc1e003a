"""What every collection store does alike (`CollectionStore`), on both stores: the embedded one
(a real SQLite file and real FAISS indexes) and Milvus (a real Milvus 2.3 standalone, a database
of its own per test). Same results, same statuses, same messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.retrieval.collections import CollectionStore
from services.retrieval.config import RetrievalConfig
from services.retrieval.store import DocumentStore
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from tests.services.retrieval.fixtures import STORES, milvus_database

DIM = 16


def _vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CollectionStore]:
    if request.param == "embedded":
        embedded = DocumentStore(tmp_path)
        yield embedded
        embedded.close()
        return
    from services.retrieval.milvus_store import MilvusStore

    uri = request.getfixturevalue("milvus_uri")
    with milvus_database(uri) as database:
        milvus = MilvusStore(RetrievalConfig(store="milvus", milvus_uri=uri, milvus_database=database))
        yield milvus
        milvus.close()


def test_upsert_is_idempotent_by_id_and_replaces(store: CollectionStore) -> None:
    store.create_collection("c", dimension=DIM)
    vecs = _vectors(3)
    assert store.upsert("c", ["a", "b", "c"], ["A", "B", "C"], vecs, [{}, {}, {}]) == (3, 3)
    assert store.upsert("c", ["a", "b", "c"], ["A", "B", "C"], vecs, [{}, {}, {}]) == (3, 0)
    assert store.collection("c").document_count == 3
    store.upsert("c", ["a"], ["A2"], vecs[2:3], [{"v": 2}])
    [doc] = store.get("c", ["a"])
    assert (doc.text, doc.metadata) == ("A2", {"v": 2})
    # the old vector of "a" is gone: the query of c's vector finds a and c, nothing stale
    hits = store.search("c", vecs[2], top_k=10)
    assert sorted(h.id for h in hits) == ["a", "b", "c"]
    assert store.collection("c").document_count == 3


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_search_orders_by_similarity_and_deletes_disappear(store: CollectionStore, index_type: str) -> None:
    store.create_collection("c", dimension=DIM, index_type=index_type)
    vecs = _vectors(50)
    ids = [f"d{i}" for i in range(50)]
    store.upsert("c", ids, ids, vecs, [{} for _ in ids])
    hits = store.search("c", vecs[7], top_k=5)
    assert hits[0].id == "d7" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.delete_documents("c", ["d7", "missing"]) == 1
    assert "d7" not in {h.id for h in store.search("c", vecs[7], top_k=5)}
    assert len(store.search("c", vecs[7], top_k=5)) == 5
    assert store.collection("c").document_count == 49


def test_l2_scores_are_squared_distances_ascending_and_dot_products_descending(store: CollectionStore) -> None:
    store.create_collection("l2", dimension=2, metric="l2")
    store.upsert("l2", ["o", "x"], ["", ""], np.array([[0, 0], [3, 4]], np.float32), [{}, {}])
    hits = store.search("l2", np.array([0, 0], np.float32), top_k=2)
    assert [(h.id, h.score) for h in hits] == [("o", 0.0), ("x", 25.0)]
    store.create_collection("dot", dimension=2, metric="dot")
    store.upsert("dot", ["small", "big"], ["", ""], np.array([[1, 0], [3, 4]], np.float32), [{}, {}])
    hits = store.search("dot", np.array([1, 1], np.float32), top_k=2)
    assert [(h.id, round(h.score, 5)) for h in hits] == [("big", 7.0), ("small", 1.0)]


def test_cosine_collections_store_unit_vectors(store: CollectionStore) -> None:
    store.create_collection("c", dimension=2)
    store.upsert("c", ["a"], [""], np.array([[3, 4]], np.float32), [{}])
    [doc] = store.get("c", ["a", "missing"], include_vectors=True)
    assert doc.vector is not None and doc.vector.dtype == np.float32
    np.testing.assert_allclose(doc.vector, [0.6, 0.8], rtol=1e-6)
    [hit] = store.search("c", np.array([6, 8], np.float32), top_k=3, include_vectors=True)
    assert hit.score == pytest.approx(1.0, abs=1e-6) and hit.vector is not None
    np.testing.assert_allclose(hit.vector, [0.6, 0.8], rtol=1e-6)
    assert store.get("c", ["a"])[0].vector is None


def test_metadata_filter_is_typed_equality(store: CollectionStore) -> None:
    store.create_collection("c", dimension=DIM)
    meta = [
        {"lang": "en", "n": 1.0, "ok": True, "none": None},
        {"lang": "de", "n": 2.0, "ok": False, "nested": {"lang": "en"}},
        {"lang": "en", "n": 2.0, "zero": -0.0, "list": ["en"]},
    ]
    store.upsert("c", ["a", "b", "c"], ["", "", ""], _vectors(3), meta)
    q = _vectors(1, seed=5)[0]

    def ids(filter: dict[str, object]) -> list[str]:
        return sorted(h.id for h in store.search("c", q, 10, filter))

    assert ids({"lang": "en"}) == ["a", "c"]
    assert ids({"lang": "en", "n": 2}) == ["c"]  # 2 matches 2.0
    assert ids({"ok": True}) == ["a"]
    assert ids({"ok": False}) == ["b"]
    assert ids({"n": True}) == []  # 1.0 is not true
    assert ids({"ok": 1}) == []  # and true is not 1
    assert ids({"none": None}) == ["a"]
    assert ids({"missing": None}) == []  # an absent key is not null
    assert ids({"zero": 0}) == ["c"]  # -0.0 equals 0
    assert ids({"n": "1.0"}) == []  # a string is not a number
    assert ids({"lang": "fr"}) == []
    assert ids({"nested": "en"}) == [] and ids({"list": "en"}) == []  # only top-level scalars match
    with pytest.raises(InvalidArgument, match="filter value"):
        store.search("c", q, 10, {"lang": ["en"]})


HARD_VALUES = ['say "hi"', "back\\slash", "\\", '"', "tab\tnew\nline\x01\x7f", "ü ß 日本 😀", "", "a' or 1 == 1 or '", 'x" or id != "']


def test_filters_with_quotes_backslashes_control_characters_and_unicode_match_exactly(store: CollectionStore) -> None:
    store.create_collection("c", dimension=DIM)
    keys = ["plain", "ünï cødé 😀", "with space", "it's"]
    ids = [f"d{i}" for i in range(len(HARD_VALUES))]
    meta = [{key: value for key in keys} for value in HARD_VALUES]
    store.upsert("c", ids, ids, _vectors(len(ids)), meta)
    q = _vectors(1, seed=9)[0]
    for key in keys:
        for doc_id, value in zip(ids, HARD_VALUES, strict=True):
            assert [h.id for h in store.search("c", q, 10, {key: value})] == [doc_id], (key, value)
    assert [h.metadata for h in store.search("c", q, 10, {"plain": HARD_VALUES[0]})] == [meta[0]]
    # ids are literals too: Get and DeleteDocuments of ids with the same characters
    store.upsert("c", HARD_VALUES[:-1], HARD_VALUES[:-1], _vectors(len(HARD_VALUES) - 1, seed=3), [{} for _ in HARD_VALUES[:-1]])
    assert [d.id for d in store.get("c", HARD_VALUES[:-1])] == HARD_VALUES[:-1]
    assert store.delete_documents("c", ["a' or 1 == 1 or '", '"']) == 2
    assert store.collection("c").document_count == len(ids) + len(HARD_VALUES) - 1 - 2
    # a NUL in a filter value is refused: SQLite's JSON functions end strings there
    store.upsert("c", ["nul"], [""], _vectors(1, seed=4), [{"plain": "nul\x00byte"}])
    with pytest.raises(InvalidArgument, match="contains NUL"):
        store.search("c", q, 10, {"plain": "nul\x00byte"})


@pytest.mark.parametrize("key", ['a"b', "back\\slash", "new\nline", "k" * 257, ""])
def test_filter_keys_that_cannot_be_matched_are_refused_alike(store: CollectionStore, key: str) -> None:
    store.create_collection("c", dimension=DIM)
    with pytest.raises(InvalidArgument, match="filter key .* is invalid: 1-256 characters, no quotes, backslashes or control characters"):
        store.search("c", _vectors(1)[0], 10, {key: 1})


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_filtered_search_returns_every_match_up_to_top_k(store: CollectionStore, index_type: str) -> None:
    store.create_collection("c", dimension=DIM, index_type=index_type, hnsw_m=8, hnsw_ef_search=16)
    n = 551
    vectors = _vectors(n, seed=1)
    ids = [f"d{i}" for i in range(n)]
    public = set(np.random.default_rng(2).choice(n, 60, replace=False).tolist())
    store.upsert("c", ids, ids, vectors, [{"tenant": "public" if i in public else "private"} for i in range(n)])
    for seed in range(5):
        query = _vectors(1, seed=100 + seed)[0]
        hits = store.search("c", query, 60, {"tenant": "public"})
        assert sorted(int(h.id[1:]) for h in hits) == sorted(public)
        assert len(store.search("c", query, 500, {"tenant": "private"})) == 491


def test_collections_are_listed_counted_and_deleted(store: CollectionStore) -> None:
    assert store.list_collections() == []
    store.create_collection("b-2", dimension=4, metric="l2", index_type="hnsw", hnsw_m=8, hnsw_ef_search=40)
    store.create_collection("a_1", dimension=DIM)
    store.upsert("a_1", ["x", "y"], ["", ""], _vectors(2), [{}, {}])
    listed = store.list_collections()
    assert [(c.name, c.metric, c.index_type, c.dimension, c.document_count, c.hnsw_m, c.hnsw_ef_search) for c in listed] == [
        ("a_1", "cosine", "flat", DIM, 2, 32, 128),
        ("b-2", "l2", "hnsw", 4, 0, 8, 40),
    ]
    assert store.delete_collection("a_1") == 2
    assert [c.name for c in store.list_collections()] == ["b-2"]
    with pytest.raises(NotFound, match="collection 'a_1' does not exist; create it with CreateCollection"):
        store.search("a_1", _vectors(1)[0], 3)
    with pytest.raises(NotFound, match="'a_1'"):
        store.delete_collection("a_1")
    store.create_collection("a_1", dimension=2)  # the name can be used again, with new settings
    assert store.collection("a_1").dimension == 2 and store.collection("a_1").document_count == 0


def test_names_that_differ_only_in_dash_and_underscore_are_different_collections(store: CollectionStore) -> None:
    store.create_collection("a-b", dimension=DIM)
    store.create_collection("a_b", dimension=DIM)
    store.upsert("a-b", ["only-in-dash"], [""], _vectors(1), [{}])
    assert store.collection("a-b").document_count == 1 and store.collection("a_b").document_count == 0


def test_bad_collections_and_vectors_get_the_same_messages(store: CollectionStore) -> None:
    store.create_collection("c", dimension=DIM)
    with pytest.raises(AlreadyExists, match="collection 'c' already exists; delete it first or pick another name"):
        store.create_collection("c", dimension=DIM)
    with pytest.raises(InvalidArgument, match="collection name 'no spaces' is invalid: use 1-128 characters"):
        store.create_collection("no spaces", dimension=DIM)
    with pytest.raises(InvalidArgument, match="metric must be one of"):
        store.create_collection("m", dimension=DIM, metric="hamming")
    with pytest.raises(InvalidArgument, match="hnsw_m must be 2..256"):
        store.create_collection("m", dimension=DIM, index_type="hnsw", hnsw_m=1)
    with pytest.raises(NotFound, match="'nope'"):
        store.search("nope", _vectors(1)[0], 3)
    with pytest.raises(NotFound, match="'nope'"):
        store.get("nope", ["a"])
    with pytest.raises(InvalidArgument, match="vectors of collection 'c' have dimension 16, got 3"):
        store.upsert("c", ["a"], [""], np.zeros((1, 3), np.float32), [{}])
    with pytest.raises(InvalidArgument, match="vectors of collection 'c' have dimension 16, got 3"):
        store.search("c", np.zeros(3, np.float32), 3)
    bad = _vectors(1)
    bad[0, 0] = np.nan
    with pytest.raises(InvalidArgument, match="finite"):
        store.upsert("c", ["a"], [""], bad, [{}])
    with pytest.raises(InvalidArgument, match="a zero vector has no direction"):
        store.upsert("c", ["a"], [""], np.zeros((1, DIM), np.float32), [{}])
    assert store.collection("c").document_count == 0  # nothing half-written
    assert [c.name for c in store.list_collections()] == ["c"]
