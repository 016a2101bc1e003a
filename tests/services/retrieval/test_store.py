"""DocumentStore on a real SQLite file and real FAISS indexes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from services.retrieval.store import DocumentStore
from services.runtime.errors import NotFound, ResourceExhausted
from tests.services.retrieval.store_files import saved_index_file

DIM = 16


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    return DocumentStore(tmp_path)


def test_metadata_stored_with_escaped_keys_by_an_older_facet_is_rewritten_so_filters_match(tmp_path: Path) -> None:
    import sqlite3

    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    store.upsert("c", ["a", "b"], ["", ""], _vectors(2), [{"ünï 😀": "ja", "n": 1}, {"plain": "x"}])
    store.close()
    db = sqlite3.connect(tmp_path / "retrieval.sqlite3")  # as Facet stored it before: \\u escapes, user_version 0
    db.execute("UPDATE documents SET metadata = ? WHERE id = 'a'", (json.dumps({"ünï 😀": "ja", "n": 1}, separators=(",", ":")),))
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    reopened = DocumentStore(tmp_path)
    assert [h.id for h in reopened.search("c", _vectors(1)[0], 10, {"ünï 😀": "ja"})] == ["a"]
    assert reopened.get("c", ["a"])[0].metadata == {"ünï 😀": "ja", "n": 1}


def test_reopen_loads_saved_index(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    store.upsert("c", ["a", "b"], ["", ""], _vectors(2), [{}, {}])
    store.close()
    reopened = DocumentStore(tmp_path)
    assert reopened.index_origins == {"c": "loaded"} and reopened.rebuilds == 0  # not rebuilt from SQLite
    assert [h.id for h in reopened.search("c", _vectors(2)[1], 1)] == ["b"]


@pytest.mark.parametrize("damage", ["stale", "missing", "corrupt"])
def test_index_is_rebuilt_from_sqlite_when_stale_missing_or_corrupt(tmp_path: Path, damage: str) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM, index_type="hnsw")
    vecs = _vectors(3)
    store.upsert("c", ["a", "b"], ["", ""], vecs[:2], [{}, {}])
    store.save_indexes()
    store.upsert("c", ["z"], [""], vecs[2:3], [{}])  # committed to SQLite, index file now stale
    if damage == "missing":
        store.save_indexes()
        saved_index_file(tmp_path, "c").unlink()
    elif damage == "corrupt":
        store.save_indexes()
        saved_index_file(tmp_path, "c").write_bytes(b"not an index")
    # no close(): as after kill -9, the index file is whatever was saved last
    reopened = DocumentStore(tmp_path)
    # stale: the saved index is loaded and the later upsert applied; missing or corrupt: rebuilt
    assert reopened.index_origins == {"c": "loaded" if damage == "stale" else "rebuilt"}
    assert [h.id for h in reopened.search("c", vecs[2], 1)] == ["z"]
    assert reopened.collection("c").document_count == 3
    assert json.loads((tmp_path / "indexes" / "c.json").read_text())["generation"] >= 1


def test_hnsw_tombstones_are_compacted(store: DocumentStore) -> None:
    store.create_collection("c", dimension=DIM, index_type="hnsw")
    ids = [f"d{i}" for i in range(1200)]
    vecs = _vectors(1200)
    store.upsert("c", ids, ids, vecs, [{} for _ in ids])
    store.delete_documents("c", ids[:1100])
    hits = store.search("c", vecs[1150], top_k=10)
    assert hits[0].id == "d1150"
    assert all(int(h.id[1:]) >= 1100 for h in hits)


def test_delete_collection_removes_documents_and_files(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    store.upsert("c", ["a"], [""], _vectors(1), [{}])
    store.save_indexes()
    assert store.delete_collection("c") == 1
    assert not list((tmp_path / "indexes").iterdir())
    with pytest.raises(NotFound):
        store.collection("c")
    store.create_collection("c", dimension=DIM)
    assert store.collection("c").document_count == 0


def test_an_index_file_of_a_deleted_collection_is_not_loaded_for_its_successor(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    old = _vectors(2, seed=1)
    store.upsert("c", ["old1", "old2"], ["", ""], old, [{}, {}])
    store.save_indexes()
    stale = {p.name: p.read_bytes() for p in (tmp_path / "indexes").iterdir()}
    store.delete_collection("c")
    store.create_collection("c", dimension=DIM)
    new = _vectors(2, seed=2)
    store.upsert("c", ["new1", "new2"], ["", ""], new, [{}, {}])  # the same write generation as before
    for name, data in stale.items():  # as if a writer thread finished after the delete
        (tmp_path / "indexes" / name).write_bytes(data)
    reopened = DocumentStore(tmp_path)
    assert {h.id for h in reopened.search("c", old[0], top_k=5)} == {"new1", "new2"}


def test_saving_on_another_thread_while_writing_keeps_index_and_generation_consistent(tmp_path: Path) -> None:
    import threading

    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM, index_type="hnsw")
    vecs = _vectors(400, seed=3)
    stop = threading.Event()

    def saver() -> None:
        while not stop.is_set():
            store.save_index("c")

    thread = threading.Thread(target=saver)
    thread.start()
    for i in range(0, 400, 20):
        ids = [f"d{j}" for j in range(i, i + 20)]
        store.upsert("c", ids, ids, vecs[i : i + 20], [{} for _ in ids])
    stop.set()
    thread.join()
    reopened = DocumentStore(tmp_path)  # no close(): the files as the saver left them
    assert reopened.collection("c").document_count == 400
    assert [h.id for h in reopened.search("c", vecs[399], top_k=1)] == ["d399"]


def test_an_index_failure_after_commit_leaves_index_and_counts_following_sqlite(
    store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.retrieval import store as store_module

    store.create_collection("c", dimension=DIM)
    vecs = _vectors(3)
    store.upsert("c", ["a"], [""], vecs[:1], [{}])

    def broken_add(self: object, labels: np.ndarray, vectors: np.ndarray) -> None:
        raise MemoryError("simulated")

    with monkeypatch.context() as patch:
        patch.setattr(store_module._Index, "add", broken_add)
        with pytest.raises(MemoryError):
            store.upsert("c", ["b", "c"], ["", ""], vecs[1:], [{}, {}])
    # the upsert committed: SQLite has it, and the index was rebuilt to match
    assert store.collection("c").document_count == 3
    assert [h.id for h in store.search("c", vecs[2], top_k=1)] == ["c"]
    store.save_indexes(force=True)
    reopened = DocumentStore(store.data_dir)
    assert [h.id for h in reopened.search("c", vecs[1], top_k=1)] == ["b"]


def test_a_failed_index_write_is_retried(store: DocumentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.retrieval import index_files

    store.create_collection("c", dimension=DIM)
    store.upsert("c", ["a"], [""], _vectors(1), [{}])

    def no_space(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(index_files, "_write_durably", no_space)
        with pytest.raises(ResourceExhausted, match="indexes/c.*no space left"):
            store.save_index("c")
    assert store.dirty_collections() == ["c"]
    assert not list(store.index_dir.iterdir())  # no partial file left behind
    assert store.save_indexes() == 1 and store.dirty_collections() == []


def test_hnsw_search_skips_tombstones_without_losing_results(store: DocumentStore) -> None:
    store.create_collection("c", dimension=DIM, index_type="hnsw")
    ids = [f"d{i}" for i in range(300)]
    vecs = _vectors(300)
    store.upsert("c", ids, ids, vecs, [{"even": i % 2 == 0} for i in range(300)])
    store.delete_documents("c", ids[:200])  # below the compaction threshold: tombstones stay
    hits = store.search("c", vecs[250], top_k=10)
    assert len(hits) == 10 and hits[0].id == "d250" and all(int(h.id[1:]) >= 200 for h in hits)
    filtered = store.search("c", vecs[250], top_k=10, filter={"even": True})
    assert len(filtered) == 10 and all(int(h.id[1:]) >= 200 and int(h.id[1:]) % 2 == 0 for h in filtered)
