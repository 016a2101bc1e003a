"""A missing or damaged database is never served as empty (issue #12, item 16), and storage
failures have a status naming the file (item 17): DocumentStore on real files, a real SQLite
quota (PRAGMA max_page_count, `retrieval.max_database_bytes`) for a full database."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from services.retrieval.config import RetrievalConfig
from services.retrieval.store import DATABASE_FILE, MARKER_FILE, DocumentStore, StoreUnusable
from services.runtime.errors import ResourceExhausted

DIM = 64


def _initialised(tmp_path: Path, n: int = 2000) -> Path:
    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    ids = [f"d{i}" for i in range(n)]
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    store.upsert("c", ids, [f"text {i}" for i in ids], vectors, [{"i": i} for i in range(n)])
    store.close()  # the last connection checkpoints the WAL into the database file
    return tmp_path / DATABASE_FILE


def test_a_new_data_dir_starts_empty_and_is_marked(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path / "new")
    assert store.list_collections() == []
    assert (tmp_path / "new" / MARKER_FILE).is_file()


@pytest.mark.parametrize("damage", ["deleted", "zero bytes"])
def test_a_database_that_existed_and_is_gone_refuses_to_start(tmp_path: Path, damage: str) -> None:
    db = _initialised(tmp_path)
    if damage == "deleted":
        db.unlink()
    else:
        db.write_bytes(b"")
    with pytest.raises(StoreUnusable, match=f"{db}: the database is (missing|empty \\(0 bytes\\)).*restore the database"):
        DocumentStore(tmp_path)
    assert not db.exists() or db.stat().st_size == 0  # nothing created in its place
    (tmp_path / MARKER_FILE).unlink()  # the operator's explicit choice: start over
    (tmp_path / "indexes").rename(tmp_path / "old-indexes")
    assert DocumentStore(tmp_path).list_collections() == []


def test_index_files_without_a_database_are_not_a_new_data_dir(tmp_path: Path) -> None:
    db = _initialised(tmp_path)
    db.unlink()
    (tmp_path / MARKER_FILE).unlink()  # e.g. a data dir from before the marker existed
    with pytest.raises(StoreUnusable, match=f"{db}: the database is missing, but .*indexes holds index files"):
        DocumentStore(tmp_path)


@pytest.mark.parametrize("page", ["first", "second", "middle", "last"])
def test_a_page_of_garbage_refuses_to_start_naming_the_file(tmp_path: Path, page: str) -> None:
    db = _initialised(tmp_path)
    pages = db.stat().st_size // 4096
    number = {"first": 0, "second": 1, "middle": pages // 2, "last": pages - 1}[page]
    with db.open("r+b") as f:
        f.seek(number * 4096)
        f.write(os.urandom(4096))
    with pytest.raises(StoreUnusable, match=f"{db}: .*(damaged|not a database|cannot open)"):
        DocumentStore(tmp_path)


def test_a_data_dir_from_before_the_marker_is_adopted(tmp_path: Path) -> None:
    _initialised(tmp_path, n=10)
    (tmp_path / MARKER_FILE).unlink()
    assert DocumentStore(tmp_path).collection("c").document_count == 10
    assert (tmp_path / MARKER_FILE).is_file()


def _fill_until_full(store: DocumentStore, start: int = 0) -> tuple[list[str], ResourceExhausted]:
    acknowledged: list[str] = []
    rng = np.random.default_rng(1)
    for batch in range(start, start + 1000):
        ids = [f"b{batch}-{j}" for j in range(50)]
        try:
            store.upsert("c", ids, ["x" * 200] * 50, rng.standard_normal((50, DIM)).astype(np.float32), [{}] * 50)
        except ResourceExhausted as exc:
            return acknowledged, exc
        acknowledged += ids
    raise AssertionError("the quota was never reached")


def test_a_full_database_is_resource_exhausted_naming_the_file_and_reads_keep_working(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path, RetrievalConfig(max_database_bytes=1_000_000))
    store.create_collection("c", dimension=DIM)
    acknowledged, error = _fill_until_full(store)
    assert str(tmp_path / DATABASE_FILE) in error.message and "no space left" in error.message
    assert len(acknowledged) > 100
    # nothing of the failed call was written; everything acknowledged is there and searchable
    assert store.collection("c").document_count == len(acknowledged)
    assert len(store.get("c", acknowledged[:500])) == 500
    [stored] = store.get("c", [acknowledged[-1]], include_vectors=True)
    assert stored.vector is not None and store.search("c", stored.vector, top_k=1)[0].id == acknowledged[-1]
    with pytest.raises(ResourceExhausted):  # still full: a write fails again, cleanly
        store.upsert("c", ["big"], ["x" * 100_000], np.ones((1, DIM), np.float32), [{}])
    # deleting frees pages: writes work again without a restart
    store.delete_documents("c", acknowledged[:200])
    store.upsert("c", ["after"], ["x"], np.ones((1, DIM), np.float32), [{}])
    store.close()
    # a restart with a larger quota has every acknowledged write and no error
    reopened = DocumentStore(tmp_path, RetrievalConfig(max_database_bytes=10_000_000))
    assert reopened.collection("c").document_count == len(acknowledged) - 200 + 1
    assert reopened.index_origins == {"c": "loaded"}


def test_a_full_disk_at_shutdown_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from services.retrieval import index_files

    store = DocumentStore(tmp_path)
    store.create_collection("c", dimension=DIM)
    store.upsert("c", ["a", "b"], ["", ""], np.eye(2, DIM, dtype=np.float32), [{}, {}])

    def no_space(path: Path, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(index_files, "_write_durably", no_space)
        store.close()  # does not raise
    assert any("not saved at shutdown" in r.getMessage() and "no space left" in r.getMessage() for r in caplog.records)
    reopened = DocumentStore(tmp_path)
    assert reopened.collection("c").document_count == 2
    assert reopened.search("c", np.eye(1, DIM, 1, dtype=np.float32)[0], top_k=1)[0].id == "b"


def test_a_read_only_database_is_unavailable_for_writes_and_reads_keep_working(tmp_path: Path) -> None:
    from services.runtime.errors import Unavailable

    _initialised(tmp_path, n=10)
    store = DocumentStore(tmp_path)
    store._db.execute("PRAGMA query_only = ON")  # SQLite's read-only mode: SQLITE_READONLY on writes
    with pytest.raises(Unavailable, match=f"{tmp_path / DATABASE_FILE}: the database cannot be used now \\(read-only"):
        store.upsert("c", ["x"], [""], np.ones((1, DIM), np.float32), [{}])
    assert len(store.get("c", ["d1", "d2"])) == 2
    assert store.collection("c").document_count == 10


def test_integrity_check_is_a_config_key(tmp_path: Path) -> None:
    from services.runtime.config import ConfigError

    with pytest.raises(ConfigError, match="startup_integrity_check"):
        RetrievalConfig(startup_integrity_check="sometimes")
    db = _initialised(tmp_path, n=10)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    assert DocumentStore(tmp_path, RetrievalConfig(startup_integrity_check="full")).collection("c").document_count == 10


def test_a_database_damaged_while_serving_is_unavailable_naming_the_file_not_internal(tmp_path: Path) -> None:
    from services.runtime.errors import Unavailable

    db = _initialised(tmp_path)
    store = DocumentStore(tmp_path, RetrievalConfig(startup_integrity_check="off"))  # few pages read so far
    pages = db.stat().st_size // 4096
    with db.open("r+b") as f:
        for number in range(2, pages):
            f.seek(number * 4096)
            f.write(os.urandom(4096))
    with pytest.raises(Unavailable, match=f"{db}: the database is damaged .*restore it from a backup"):
        store.get("c", [f"d{i}" for i in range(2000)])


@pytest.mark.parametrize(
    "error, status, words",
    [
        (sqlite3.OperationalError("database or disk is full"), 13, "ResourceExhausted"),
        (sqlite3.OperationalError("disk I/O error"), 10 | (4 << 8), "Unavailable"),  # SQLITE_IOERR_READ
        (sqlite3.OperationalError("attempt to write a readonly database"), 8, "Unavailable"),
        (sqlite3.DatabaseError("database disk image is malformed"), 11, "Unavailable"),
        (sqlite3.DatabaseError("file is not a database"), 26, "Unavailable"),
        (sqlite3.OperationalError("no such table: x"), 1, None),  # a bug: INTERNAL
    ],
)
def test_sqlite_failures_map_to_statuses(error: sqlite3.Error, status: int, words: str | None) -> None:
    from services.retrieval.store import storage_error

    error.sqlite_errorcode = status  # type: ignore[attr-defined]
    mapped = storage_error(error, Path("/data/retrieval.sqlite3"))
    assert (type(mapped).__name__ if mapped else None) == words
    if mapped is not None:
        assert mapped.message.startswith("/data/retrieval.sqlite3: ")


@pytest.mark.parametrize(
    "code, words", [("ENOSPC", "ResourceExhausted"), ("EDQUOT", "ResourceExhausted"), ("EROFS", "Unavailable"), ("EIO", "Unavailable"), ("ENOENT", None)]
)
def test_file_system_failures_map_to_statuses_naming_the_file(code: str, words: str | None) -> None:
    import errno

    from services.retrieval.store import storage_error

    error = OSError(getattr(errno, code), os.strerror(getattr(errno, code)), "/data/indexes/c.1.faiss")
    mapped = storage_error(error, Path("/data/retrieval.sqlite3"))
    assert (type(mapped).__name__ if mapped else None) == words
    if mapped is not None:
        assert mapped.message.startswith("/data/indexes/c.1.faiss: ")
