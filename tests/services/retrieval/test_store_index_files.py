"""Saved indexes are verified before use (issue #12, item 15) and loaded with only the changes
after their save applied (items 18 and 22): every test checks how the index was opened (loaded or
rebuilt), so it fails if every start rebuilds from SQLite, or if a bad file is used."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from services.retrieval.store import DocumentStore
from tests.services.retrieval.store_files import manifest, saved_index_file

DIM = 32
N = 300


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _filled(tmp_path: Path, index_type: str, collections: tuple[str, ...] = ("c",)) -> dict[str, np.ndarray]:
    store = DocumentStore(tmp_path)
    vectors = {}
    for k, name in enumerate(collections):
        store.create_collection(name, dimension=DIM, index_type=index_type)
        vectors[name] = _vectors(N, seed=k)
        ids = [f"{name}{i}" for i in range(N)]
        store.upsert(name, ids, ids, vectors[name], [{} for _ in ids])
    store.close()
    return vectors


def _wrong_searches(store: DocumentStore, name: str, vectors: np.ndarray) -> int:
    """Of N searches by a stored vector, how many do not find that document first."""
    return sum(store.search(name, vectors[i], top_k=1)[0].id != f"{name}{i}" for i in range(N))


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_a_saved_index_is_loaded_not_rebuilt(tmp_path: Path, index_type: str, caplog: pytest.LogCaptureFixture) -> None:
    vectors = _filled(tmp_path, index_type)
    with caplog.at_level(logging.INFO, logger="services.retrieval.store"):
        store = DocumentStore(tmp_path)
    assert store.index_origins == {"c": "loaded"} and store.rebuilds == 0
    assert [r.fields["applied_changes"] for r in caplog.records if getattr(r, "fields", {}).get("event") == "index_loaded"] == [0]  # type: ignore[attr-defined]
    assert _wrong_searches(store, "c", vectors["c"]) == 0
    assert store.dirty_collections() == []  # nothing to write again


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_same_size_random_bytes_in_an_index_file_are_detected(tmp_path: Path, index_type: str, where: str, caplog: pytest.LogCaptureFixture) -> None:
    vectors = _filled(tmp_path, index_type)
    path = saved_index_file(tmp_path, "c")
    size = path.stat().st_size
    offset = {"start": 0, "middle": size // 2, "end": size - 4096}[where]
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(4096))
    assert path.stat().st_size == size
    with caplog.at_level(logging.WARNING, logger="services.retrieval.store"):
        store = DocumentStore(tmp_path)
    assert store.index_origins == {"c": "rebuilt"} and store.rebuilds == 1
    assert any("SHA-256" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert _wrong_searches(store, "c", vectors["c"]) == 0


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
@pytest.mark.parametrize("swapped", ["data files", "data files and manifests"])
def test_two_collections_index_files_swapped_are_detected(tmp_path: Path, index_type: str, swapped: str) -> None:
    vectors = _filled(tmp_path, index_type, ("a", "b"))
    index_dir = tmp_path / "indexes"
    files = {name: [saved_index_file(tmp_path, name)] for name in ("a", "b")}
    if swapped == "data files and manifests":
        for name in ("a", "b"):
            files[name].append(index_dir / f"{name}.json")
    for a_file, b_file in zip(files["a"], files["b"], strict=True):  # swap the contents under each name
        a_bytes, b_bytes = a_file.read_bytes(), b_file.read_bytes()
        a_file.write_bytes(b_bytes)
        b_file.write_bytes(a_bytes)
    store = DocumentStore(tmp_path)
    assert store.index_origins == {"a": "rebuilt", "b": "rebuilt"}
    assert _wrong_searches(store, "a", vectors["a"]) == 0 and _wrong_searches(store, "b", vectors["b"]) == 0


@pytest.mark.parametrize(
    "field, value",
    [("dimension", 16), ("metric", "l2"), ("index_type", "hnsw"), ("uid", "0" * 32), ("collection", "z"),
     ("count", N + 1), ("generation", 10**6), ("max_label", -1), ("format", 1)],
)  # fmt: skip
def test_a_manifest_that_does_not_match_sqlite_or_the_file_is_rejected(tmp_path: Path, field: str, value: object) -> None:
    vectors = _filled(tmp_path, "flat")
    meta_path = tmp_path / "indexes" / "c.json"
    meta = manifest(tmp_path, "c")
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    store = DocumentStore(tmp_path)
    assert store.index_origins == {"c": "rebuilt"}
    assert _wrong_searches(store, "c", vectors["c"]) == 0


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_restart_after_a_crash_applies_only_the_changes_since_the_save(tmp_path: Path, index_type: str, caplog: pytest.LogCaptureFixture) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM, index_type=index_type)
    vectors = _vectors(N + 50, seed=9)
    ids = [f"c{i}" for i in range(N)]
    store.upsert("c", ids, ids, vectors[:N], [{} for _ in ids])
    store.delete_documents("c", ["c0", "c1"])  # removed before the save: in the saved index already
    assert store.save_indexes() == 1
    # after the save: replace 10, delete 20, add 50 (5 of them deleted again), then "kill -9" (no close)
    replacements = _vectors(10, seed=10)
    store.upsert("c", ids[10:20], ids[10:20], replacements, [{} for _ in range(10)])
    store.delete_documents("c", ids[20:40])
    new_ids = [f"c{i}" for i in range(N, N + 50)]
    store.upsert("c", new_ids, new_ids, vectors[N:], [{} for _ in new_ids])
    store.delete_documents("c", new_ids[:5])
    expected = {f"c{i}": replacements[i - 10] if 10 <= i < 20 else vectors[i] for i in range(2, N + 50)}
    for gone in ids[20:40] + new_ids[:5]:
        del expected[gone]
    with caplog.at_level(logging.INFO, logger="services.retrieval.store"):
        reopened = DocumentStore(tmp_path)
    assert reopened.index_origins == {"c": "loaded"} and reopened.rebuilds == 0
    [applied] = [r.fields["applied_changes"] for r in caplog.records if getattr(r, "fields", {}).get("event") == "index_loaded"]  # type: ignore[attr-defined]
    # removed from the saved index: 10 replaced + 20 deleted (the 5 added and deleted since were never in it);
    # added: the 10 replacements + the 45 new rows still there
    assert applied == 30 + 55
    assert reopened.collection("c").document_count == len(expected)
    for doc_id, vector in list(expected.items())[::7]:
        assert reopened.search("c", vector, top_k=1)[0].id == doc_id
    found = {h.id for h in reopened.search("c", vectors[0], top_k=1000)}
    assert found == set(expected)
    assert reopened.dirty_collections() == ["c"]  # saved again on the next round


def test_the_removal_log_is_pruned_by_a_save(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    ids = [f"c{i}" for i in range(20)]
    store.upsert("c", ids, ids, _vectors(20, 1), [{} for _ in ids])
    store.delete_documents("c", ids[:10])

    def logged() -> int:
        with sqlite3.connect(tmp_path / "retrieval.sqlite3") as db:
            return int(db.execute("SELECT COUNT(*) FROM removed_labels").fetchone()[0])

    assert logged() == 10
    store.save_indexes()
    assert logged() == 0
    store.delete_documents("c", ids[10:12])
    assert logged() == 2
    store.close()
    assert logged() == 0


def test_a_crash_between_data_file_and_manifest_keeps_the_previous_save(tmp_path: Path) -> None:
    vectors = _filled(tmp_path, "hnsw")
    previous = saved_index_file(tmp_path, "c")
    (tmp_path / "indexes" / "c.0123456789ab.faiss").write_bytes(b"half written")  # the next save, cut short
    (tmp_path / "indexes" / "c.0123456789ac.faiss.tmp").write_bytes(b"cut short")
    store = DocumentStore(tmp_path)
    assert store.index_origins == {"c": "loaded"}
    assert _wrong_searches(store, "c", vectors["c"]) == 0
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == sorted(["c.json", previous.name])  # leftovers removed
    store.upsert("c", ["x"], ["x"], _vectors(1, 5), [{}])
    store.close()
    assert saved_index_file(tmp_path, "c") != previous
    assert sorted(p.name for p in (tmp_path / "indexes").iterdir()) == sorted(["c.json", saved_index_file(tmp_path, "c").name])
