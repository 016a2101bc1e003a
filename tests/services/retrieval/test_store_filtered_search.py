"""A filtered search returns every match up to top_k (issue #12, item 3): min(top_k, matches) hits
at any selectivity, on flat and HNSW, on the exact path (few matches) and the widened HNSW path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.retrieval.config import RetrievalConfig
from services.retrieval.store import DocumentStore

DIM = 64
N = 551


def _store(tmp_path: Path, index_type: str, exact_max: int, n: int = N, seed: int = 0) -> tuple[DocumentStore, np.ndarray]:
    store = DocumentStore(tmp_path / index_type, RetrievalConfig(filter_exact_max_matches=exact_max))
    store.create_collection("c", dimension=DIM, index_type=index_type, hnsw_m=8, hnsw_ef_search=16)
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    # tag i: every document has bucket i % 100 and a parity, so filters match 1%, 10%, 50%, 100%
    meta = [{"bucket": i % 100, "even": i % 2 == 0, "all": "yes", "one": i == 17} for i in range(n)]
    store.upsert("c", ids, ids, vectors, meta)
    return store, vectors


def test_the_reported_case_hnsw_551_vectors_60_public_returns_60(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)  # default config
    store.create_collection("c", dimension=DIM, index_type="hnsw")
    vectors = np.random.default_rng(1).standard_normal((N, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(N)]
    public = set(np.random.default_rng(2).choice(N, 60, replace=False).tolist())
    store.upsert("c", ids, ids, vectors, [{"tenant": "public" if i in public else "private"} for i in range(N)])
    for seed in range(20):
        query = np.random.default_rng(100 + seed).standard_normal(DIM).astype(np.float32)
        hits = store.search("c", query, 60, {"tenant": "public"})
        assert sorted(int(h.id[1:]) for h in hits) == sorted(public)


FILTERS = [  # (filter, matching document numbers)
    ({"one": True}, [17]),
    ({"bucket": 3}, [i for i in range(N) if i % 100 == 3]),
    ({"bucket": 3, "even": False}, [i for i in range(N) if i % 100 == 3 and i % 2 == 1]),
    ({"even": True}, [i for i in range(N) if i % 2 == 0]),
    ({"all": "yes"}, list(range(N))),
]


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
@pytest.mark.parametrize("path", ["exact", "widened"])
def test_every_match_up_to_top_k_at_any_selectivity(tmp_path: Path, index_type: str, path: str) -> None:
    # "widened": no exact scoring of filtered candidates, so HNSW walks its graph with the filter
    store, vectors = _store(tmp_path, index_type, exact_max=10_000 if path == "exact" else 0)
    flat, _ = _store(tmp_path / "reference", "flat", exact_max=0)  # the ground truth: FAISS's flat scan
    rng = np.random.default_rng(7)
    for filter, matching in FILTERS:
        for top_k in (1, 5, 60, 300, 1000):
            query = rng.standard_normal(DIM).astype(np.float32)
            hits = store.search("c", query, top_k, filter)
            assert len(hits) == min(top_k, len(matching)), (filter, top_k)
            assert {int(h.id[1:]) for h in hits} <= set(matching)
            assert len({h.id for h in hits}) == len(hits)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            if path == "exact" or index_type == "flat":  # exact: the same documents as the flat scan
                truth = flat.search("c", query, top_k, filter)
                assert [h.id for h in hits] == [h.id for h in truth]
                assert np.allclose([h.score for h in hits], [h.score for h in truth], atol=1e-5)


def test_widened_hnsw_search_finds_matches_a_narrow_walk_misses(tmp_path: Path) -> None:
    """Without widening, HNSW with ef 16 finds only part of a 1% filter's matches; the store
    still returns them all."""
    store, vectors = _store(tmp_path, "hnsw", exact_max=0, n=3000)
    index = store._index("c")
    allowed = np.array([label for label in range(1, 3001) if (label - 1) % 100 == 3], dtype=np.int64)
    query = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    _, narrow = index.search(query, 30, allowed, ef_search=16)
    assert len(narrow) < 30  # the fault: a plain filtered HNSW walk loses matches
    hits = store.search("c", query, 30, {"bucket": 3})
    assert len(hits) == 30


@pytest.mark.parametrize("exact_max", [0, 10_000])
def test_tombstones_and_filters_together_still_fill_top_k(tmp_path: Path, exact_max: int) -> None:
    store, vectors = _store(tmp_path, "hnsw", exact_max=exact_max)
    deleted = [f"d{i}" for i in range(0, N, 3)]  # below the compaction threshold: tombstones stay
    store.delete_documents("c", deleted)
    live_even = [i for i in range(N) if i % 2 == 0 and i % 3 != 0]
    query = vectors[4]
    hits = store.search("c", query, 500, {"even": True})
    assert sorted(int(h.id[1:]) for h in hits) == live_even
    assert len(store.search("c", query, 1000)) == N - len(deleted)


def test_the_threshold_is_a_config_key() -> None:
    from services.runtime.config import ConfigError

    assert RetrievalConfig().filter_exact_max_matches == 10_000
    with pytest.raises(ConfigError, match="filter_exact_max_matches"):
        RetrievalConfig(filter_exact_max_matches=-1)


@pytest.mark.integration
def test_the_reported_case_through_the_sdk(start_server) -> None:  # type: ignore[no-untyped-def]
    import sdk

    server = start_server()
    vectors = np.random.default_rng(4).standard_normal((N, DIM)).astype(np.float32)
    public = set(range(0, N, 9)[:60])
    with sdk.Client(server.address) as client:
        client.create_collection("tickets", index_type="hnsw", dimension=DIM)
        client.upsert("tickets", ids=[f"t{i}" for i in range(N)], vectors=vectors,
                      metadata=[{"tenant": "public" if i in public else "private"} for i in range(N)])  # fmt: skip
        for i in range(0, N, 50):
            hits = client.search("tickets", vectors[i], top_k=60, filter={"tenant": "public"})
            assert sorted(int(h.id[1:]) for h in hits) == sorted(public)
            assert len(client.search("tickets", vectors[i], top_k=10, filter={"tenant": "public"})) == 10
