"""Collections of documents: SQLite (WAL) holds documents, metadata and vectors; a FAISS
index per collection is kept beside it.

SQLite is the source of truth. A write returns only after its transaction commits, so an
acknowledged upsert survives `kill -9`. Index files are saved now and then and on shutdown
(`index_files`: a data file plus a manifest with its checksum and the collection's identity).
On open, a saved index that checks out is loaded and only what changed after it was saved is
applied: rows with a label above the index's highest label are new, and `removed_labels` logs
the rows deleted or replaced since (kept until an index save makes them unneeded). An index
that is missing or fails a check is rebuilt from SQLite, with a warning.

The data dir is checked before it is served: a marker file (`store.json`) is written when it is
first initialised, so a database that is missing or empty later is refused rather than served as
an empty store (`StoreUnusable`, naming the file); an existing database must pass
`PRAGMA quick_check` (`retrieval.startup_integrity_check`).

Storage failures of a call are mapped to statuses naming the file: a full disk (or
`retrieval.max_database_bytes` reached) -> ResourceExhausted, an unreadable, read-only or
damaged database -> Unavailable. Reads keep working while writes fail.

Calls are made from one thread (the service's store thread), except `save_index`, which
another thread may run: it serialises an index under the mutation lock, so searches go on
while a large index is written and only writes wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import faiss as _faiss
import numpy as np

from services.retrieval import index_files
from services.retrieval.collections import (
    HNSW_EF_CONSTRUCTION,
    CollectionInfo,
    ScoredDocument,
    StoredDocument,
    already_exists,
    check_filter,
    collection_spec,
    not_found,
    prepare_vectors,
)
from services.retrieval.config import RetrievalConfig
from services.retrieval.index_files import IndexFileRejected, IndexIdentity, IndexState, NoSavedIndex
from services.runtime.errors import FacetError, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)
faiss: Any = _faiss  # its bundled stubs miss SearchParametersHNSW and the numpy overloads
P = ParamSpec("P")
T = TypeVar("T")

_REBUILD_DEAD_FRACTION = 0.25
_WIDEN_FACTOR = 4  # a filtered HNSW search that found too few matches retries with this many times the ef
DATABASE_FILE = "retrieval.sqlite3"
MARKER_FILE = "store.json"  # written when the data dir is initialised: a database existed here

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY,
    metric TEXT NOT NULL,
    index_type TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    hnsw_m INTEGER NOT NULL,
    hnsw_ef_search INTEGER NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,  -- bumped by every write; index files record it
    uid TEXT NOT NULL,                      -- tells a re-created collection from the old one
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    label INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; never reused, so later rows have larger labels
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (collection, id)
);
-- Rows deleted or replaced, with the generation that removed them: what a saved index must still
-- drop. Pruned up to a collection's generation once its index is saved at that generation.
CREATE TABLE IF NOT EXISTS removed_labels (
    label INTEGER PRIMARY KEY,
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS removed_labels_by_generation ON removed_labels (collection, generation);
"""

# SQLite's primary result codes (https://sqlite.org/rescode.html); extended codes keep them in the low byte.
_SQLITE_FULL = 13
_SQLITE_UNAVAILABLE = {3: "permission denied", 5: "busy", 6: "locked", 8: "read-only", 10: "I/O error", 14: "cannot open"}
_SQLITE_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_OS_FULL = {errno.ENOSPC, errno.EDQUOT}
_OS_UNAVAILABLE = {errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}


class StoreUnusable(Exception):
    """The data dir must not be served: its database is missing, empty or damaged although the
    data dir was initialised. Raised by `DocumentStore()`; the message names the file and what
    to do (the service then exits with "cannot start: <message>")."""


def storage_error(exc: BaseException, database: Path) -> FacetError | None:
    """The status for a storage failure, naming the file; None for anything else (a bug).

    Args:
        exc: an exception raised by SQLite or the file system.
        database: the SQLite file (named when SQLite does not say which file failed).

    Returns:
        ResourceExhausted for a full disk or quota, Unavailable for a read-only, unreadable or
        damaged file; None when `exc` is not a storage failure.
    """
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary == _SQLITE_FULL:
            return ResourceExhausted(
                f"{database}: no space left (the disk is full or retrieval.max_database_bytes is reached); "
                "nothing was written: free space or raise the limit, then retry. Reads still work."
            )
        if primary in _SQLITE_UNAVAILABLE:
            return Unavailable(f"{database}: the database cannot be used now ({_SQLITE_UNAVAILABLE[primary]}: {exc})")
        if primary in _SQLITE_DAMAGED:
            return Unavailable(f"{database}: the database is damaged ({exc}): restore it from a backup")
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        path = exc.filename or database
        if exc.errno in _OS_FULL:
            return ResourceExhausted(f"{path}: no space left on the device; nothing was written: free space, then retry")
        if exc.errno in _OS_UNAVAILABLE:
            return Unavailable(f"{path}: {exc.strerror}")
    return None


def _storage_errors(method: Callable[Concatenate[DocumentStore, P], T]) -> Callable[Concatenate[DocumentStore, P], T]:
    """Re-raise a method's storage failures as the statuses `storage_error` gives."""

    @functools.wraps(method)
    def wrapper(self: DocumentStore, *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            mapped = storage_error(exc, self.db_path)
            if mapped is None:
                raise
            raise mapped from exc

    return wrapper


class _Index:
    """A collection's FAISS index, with tombstones for HNSW (which cannot remove)."""

    def __init__(self, info: CollectionInfo, saved: Any = None, state: IndexState | None = None) -> None:
        self.info = info
        metric = faiss.METRIC_L2 if info.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if saved is not None:
            self.faiss = saved
        elif info.index_type == "hnsw":
            inner = faiss.IndexHNSWFlat(info.dimension, info.hnsw_m, metric)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            self.faiss = faiss.IndexIDMap2(inner)
        else:
            self.faiss = faiss.IndexIDMap2(faiss.IndexFlat(info.dimension, metric))
        self.metric = metric
        self.dead: set[int] = set(state.dead) if state is not None else set()
        self.max_label = state.max_label if state is not None else -1  # labels above are not in the index
        self._dead_selectors: list[Any] | None = None
        self.dirty = False

    @property
    def live(self) -> int:
        """Vectors a search can return (HNSW tombstones left out)."""
        return int(self.faiss.ntotal) - len(self.dead)

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels):
            self.faiss.add_with_ids(vectors, labels)
            self.max_label = max(self.max_label, int(labels.max()))
            self.dirty = True

    def remove(self, labels: Sequence[int]) -> None:
        if not labels:
            return
        if self.info.index_type == "hnsw":
            self.dead.update(labels)
            self._dead_selectors = None
        else:
            self.faiss.remove_ids(np.asarray(labels, dtype=np.int64))
        self.dirty = True

    def _not_dead(self) -> list[Any]:
        """[batch of dead ids, its negation], built once per change of the tombstones."""
        if self._dead_selectors is None:
            dead = faiss.IDSelectorBatch(np.fromiter(self.dead, dtype=np.int64, count=len(self.dead)))
            self._dead_selectors = [dead, faiss.IDSelectorNot(dead)]
        return self._dead_selectors

    def search(
        self, query: np.ndarray, top_k: int, allowed: np.ndarray | None, ef_search: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's search (approximate for HNSW, with `ef_search` or the collection's), restricted
        to `allowed` labels and live vectors. May return fewer than top_k hits on HNSW."""
        params: Any
        if self.info.index_type == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(ef_search or self.info.hnsw_ef_search, top_k)
        else:
            params = faiss.SearchParameters()
        # Selectors filter inside the search, so deleted (tombstoned) ids cost nothing extra.
        selectors = []
        if allowed is not None:
            selectors.append(faiss.IDSelectorBatch(allowed))
        if self.dead:
            selectors += self._not_dead()
        if allowed is not None and self.dead:
            selectors.append(faiss.IDSelectorAnd(selectors[0], selectors[-1]))
        if selectors:
            params.sel = selectors[-1]  # the python objects in `selectors` stay alive during the search
        scores, labels = self.faiss.search(query[None, :], top_k, params=params)
        found = labels[0] >= 0
        return scores[0][found].astype(np.float32), labels[0][found].astype(np.int64)

    def search_exact(self, query: np.ndarray, top_k: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the vectors of `labels` (live labels of this index): the exact top_k,
        scored as a flat index scores them."""
        vectors = self.faiss.reconstruct_batch(labels)
        flat = faiss.IndexFlat(self.info.dimension, self.metric)
        flat.add(vectors)
        scores, rows = flat.search(query[None, :], min(top_k, len(labels)))
        found = rows[0] >= 0
        return scores[0][found].astype(np.float32), labels[rows[0][found]].astype(np.int64)


class DocumentStore:
    """The embedded store (`retrieval.store = "embedded"`, a `CollectionStore`): all collections
    of one retrieval service, persisted under `data_dir`.

    Args:
        data_dir: the service's folder (created when new).
        config: the `[retrieval]` section (storage keys: filter_exact_max_matches,
            startup_integrity_check, max_database_bytes); defaults when None.

    Raises:
        StoreUnusable: the data dir was initialised but its database is missing, empty or
            damaged (the message names the file); nothing is served from it.

    Attributes:
        index_origins: how each collection's index was opened: "loaded" (the saved index, with
            the changes after it applied) or "rebuilt" (from SQLite).
        rebuilds: indexes rebuilt from SQLite since open (at open, after a failed change, or
            to compact HNSW tombstones).
    """

    concurrency = 1  # SQLite and FAISS see one caller at a time: the service's store thread

    def __init__(self, data_dir: str | Path, config: RetrievalConfig | None = None) -> None:
        self.config = config or RetrievalConfig()
        self.data_dir = Path(data_dir).expanduser()
        self.db_path = self.data_dir / DATABASE_FILE
        self.index_dir = self.data_dir / "indexes"
        self.marker_path = self.data_dir / MARKER_FILE
        self.index_origins: dict[str, str] = {}
        self.rebuilds = 0
        self.data_dir.mkdir(parents=True, exist_ok=True)
        new = self._check_database_present()
        self._db = self._connect(check_integrity=not new)
        try:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            if not self.marker_path.is_file():
                self._write_marker()
            self._indexes: dict[str, _Index] = {}
            self._infos: dict[str, CollectionInfo] = {}  # what never changes, plus the live count
            self._uids: dict[str, str] = {}
            self._generations: dict[str, int] = {}  # as committed to SQLite and applied to the index
            self._stale: set[str] = set()  # indexes that missed a committed change
            # Held while an index and its generation change, while an index is serialised, and
            # around every write, so the index writer's statements never land inside a transaction.
            self._mutation = threading.Lock()
            rows = self._db.execute(
                "SELECT c.name, c.metric, c.index_type, c.dimension, c.hnsw_m, c.hnsw_ef_search, c.uid, c.generation,"
                " (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name) FROM collections c"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreUnusable(f"{self.db_path}: cannot read the database: {exc}") from None
        for name, metric, index_type, dimension, hnsw_m, ef, uid, generation, count in rows:
            self._infos[name] = CollectionInfo(name, metric, index_type, dimension, count, hnsw_m, ef)
            self._uids[name] = uid
            self._generations[name] = generation
            self._indexes[name] = self._open_index(self._infos[name])
        self._remove_orphan_files()

    # -- opening -----------------------------------------------------------------------------

    def _check_database_present(self) -> bool:
        """True when the data dir is new; StoreUnusable when a database that existed is gone."""
        exists = self.db_path.is_file()
        if exists and self.db_path.stat().st_size > 0:
            return False
        state = "empty (0 bytes)" if exists else "missing"
        if self.marker_path.is_file():
            raise StoreUnusable(
                f"{self.db_path}: the database is {state}, but this data dir was initialised before "
                f"({self.marker_path}): restore the database from a backup; to start with no collections "
                f"instead, delete {self.marker_path}"
            )
        leftovers = sorted(p.name for p in self.index_dir.iterdir()) if self.index_dir.is_dir() else []
        if leftovers:
            raise StoreUnusable(
                f"{self.db_path}: the database is {state}, but {self.index_dir} holds index files of an earlier "
                f"store ({', '.join(leftovers[:3])}): restore the database from a backup; to start with no "
                f"collections instead, delete {self.index_dir}"
            )
        return True

    def _connect(self, check_integrity: bool) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            check = self.config.startup_integrity_check
            if check_integrity and check != "off":
                pragma = "quick_check" if check == "quick" else "integrity_check"
                problems = [str(r[0]) for r in db.execute(f"PRAGMA {pragma}(20)").fetchall() if r[0] != "ok"]
                if problems:
                    raise StoreUnusable(
                        f"{self.db_path}: the database is damaged (PRAGMA {pragma}: {'; '.join(problems[:5])}): "
                        "restore it from a backup"
                    )
            db.executescript(_SCHEMA)
            _store_keys_unescaped(db)
            if self.config.max_database_bytes:
                page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
                db.execute(f"PRAGMA max_page_count = {max(1, self.config.max_database_bytes // page_size)}")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreUnusable(f"{self.db_path}: cannot open the database: {exc}") from None
        except BaseException:
            db.close()
            raise
        return db

    def _write_marker(self) -> None:
        tmp = self.marker_path.with_name(self.marker_path.name + ".tmp")
        facts = {"database": DATABASE_FILE, "initialised_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        tmp.write_text(json.dumps(facts) + "\n")
        tmp.replace(self.marker_path)

    def _identity(self, info: CollectionInfo) -> IndexIdentity:
        return IndexIdentity(info.name, self._uids[info.name], info.index_type, info.metric, info.dimension, info.hnsw_m)

    def _open_index(self, info: CollectionInfo) -> _Index:
        """The saved index with the changes after it applied; a rebuild when it fails a check."""
        try:
            loaded = index_files.read_index(self.index_dir, self._identity(info), self._generations[info.name])
            index = _Index(info, loaded.index, loaded.state)
            applied = self._apply_changes_since(index, loaded.state)
            if index.live != info.document_count:
                raise IndexFileRejected(
                    f"{loaded.path} holds {index.live} live vectors after {applied} changes, SQLite {info.document_count}"
                )
        except NoSavedIndex:
            return self._rebuild(info, "no saved index", logging.INFO)
        except IndexFileRejected as exc:
            return self._rebuild(info, str(exc), logging.WARNING)
        index.dirty = applied > 0
        self.index_origins[info.name] = "loaded"
        log.info(
            "loaded index of collection %s (%d vectors, %d changes since it was saved applied)",
            info.name, index.live, applied,
            extra={"fields": {"event": "index_loaded", "collection": info.name, "vectors": index.live, "applied_changes": applied}},
        )  # fmt: skip
        return index

    def _apply_changes_since(self, index: _Index, state: IndexState) -> int:
        """Apply the rows removed and added after `state` was saved; return how many."""
        name = index.info.name
        removed = [
            label
            for (label,) in self._db.execute(
                "SELECT label FROM removed_labels WHERE collection = ? AND generation > ? AND label <= ?",
                (name, state.generation, state.max_label),
            )
        ]
        index.remove(removed)
        added = self._add_rows(index, "label > ?", (state.max_label,))
        return len(removed) + added

    def _add_rows(self, index: _Index, where: str, params: tuple[Any, ...]) -> int:
        info = index.info
        rows = self._db.execute(
            f"SELECT label, vector FROM documents WHERE collection = ? AND {where} ORDER BY label", (info.name, *params)
        )
        added = 0
        while batch := rows.fetchmany(10_000):
            labels = np.array([r[0] for r in batch], dtype=np.int64)
            vectors = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.float32).reshape(len(batch), info.dimension)
            index.add(labels, vectors)
            added += len(batch)
        return added

    def _rebuild(self, info: CollectionInfo, reason: str, level: int = logging.INFO) -> _Index:
        index = _Index(info)
        self._add_rows(index, "1", ())
        index.dirty = True
        self.rebuilds += 1
        self.index_origins[info.name] = "rebuilt"
        log.log(
            level,
            "rebuilt index of collection %s from SQLite (%d vectors): %s",
            info.name, index.live, reason,
            extra={"fields": {"event": "index_rebuilt", "collection": info.name, "vectors": index.live, "reason": reason}},
        )  # fmt: skip
        return index

    def _remove_orphan_files(self) -> None:
        """Files no manifest names: of collections that no longer exist (a save that raced a
        delete), and partial or superseded files of a save cut short by a crash."""
        keep = set()
        for name in self._infos:
            meta = index_files.manifest_path(self.index_dir, name)
            keep.add(meta.name)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                keep.add(str(json.loads(meta.read_text()).get("file")))
        for path in self.index_dir.iterdir():
            if path.is_file() and path.name not in keep:
                path.unlink(missing_ok=True)

    # -- collections -------------------------------------------------------------------------

    @_storage_errors
    def create_collection(
        self,
        name: str,
        *,
        dimension: int,
        metric: str = "cosine",
        index_type: str = "flat",
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
    ) -> CollectionInfo:
        """Create an empty collection.

        Raises:
            InvalidArgument: a bad name, metric, index type, dimension or HNSW parameter.
            AlreadyExists: the name is taken.
            ResourceExhausted: the disk is full; Unavailable: the database cannot be written.
        """
        info = collection_spec(
            name,
            dimension=dimension,
            metric=metric,
            index_type=index_type,
            hnsw_m=hnsw_m,
            hnsw_ef_search=hnsw_ef_search,
        )
        if name in self._infos:
            raise already_exists(name)
        uid = uuid.uuid4().hex
        with self._mutation:
            self._db.execute(
                "INSERT INTO collections (name, metric, index_type, dimension, hnsw_m, hnsw_ef_search, uid, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    info.metric,
                    info.index_type,
                    info.dimension,
                    info.hnsw_m,
                    info.hnsw_ef_search,
                    uid,
                    time.time(),
                ),
            )
            self._infos[name], self._uids[name], self._generations[name] = info, uid, 0
            self._indexes[name] = _Index(info)
        return info

    def collection(self, name: str) -> CollectionInfo:
        info = self._infos.get(name)
        if info is None:
            raise not_found(name)
        return info

    def spec(self, name: str) -> CollectionInfo:
        return self.collection(name)

    def healthy(self) -> bool:
        return True

    def list_collections(self) -> list[CollectionInfo]:
        return [self._infos[name] for name in sorted(self._infos)]

    def _count(self, name: str, change: int) -> None:
        info = self._infos[name]
        self._infos[name] = dataclasses.replace(info, document_count=info.document_count + change)

    @_storage_errors
    def delete_collection(self, name: str) -> int:
        info = self.collection(name)
        with self._mutation:
            with self._transaction():
                self._db.execute("DELETE FROM removed_labels WHERE collection = ?", (name,))
                self._db.execute("DELETE FROM documents WHERE collection = ?", (name,))
                self._db.execute("DELETE FROM collections WHERE name = ?", (name,))
            for table in (self._indexes, self._infos, self._uids, self._generations, self.index_origins):
                table.pop(name, None)  # type: ignore[attr-defined]
            self._stale.discard(name)
            for path in index_files.collection_files(self.index_dir, name):
                path.unlink(missing_ok=True)
        return info.document_count

    # -- documents ---------------------------------------------------------------------------

    @_storage_errors
    def upsert(
        self, name: str, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]
    ) -> tuple[int, int]:
        """Insert or replace documents in one transaction.

        Args:
            name: the collection.
            ids, texts, metadata: one per document.
            vectors: float32, shape (len(ids), dimension).

        Returns:
            (upserted, created): documents written, and how many of them were new ids.

        Raises:
            NotFound: no such collection. InvalidArgument: bad vectors.
            ResourceExhausted: the disk is full (nothing was written); Unavailable: the database
                cannot be written.
        """
        info = self.collection(name)
        vectors = self._prepare(info, vectors)
        with self._mutation:
            generation = self._generations[name] + 1
            with self._transaction():
                old = self._labels(name, ids)
                self._db.executemany(
                    "DELETE FROM documents WHERE collection = ? AND id = ?", [(name, i) for i in ids if i in old]
                )
                self._db.executemany(
                    "INSERT INTO removed_labels (label, collection, generation) VALUES (?, ?, ?)",
                    [(label, name, generation) for label in old.values()],
                )
                labels = []
                for doc_id, text, meta, vec in zip(ids, texts, metadata, vectors, strict=True):
                    cursor = self._db.execute(
                        "INSERT INTO documents (collection, id, text, metadata, vector) VALUES (?, ?, ?, ?, ?)",
                        (name, doc_id, text, _metadata_json(meta), vec.tobytes()),
                    )
                    labels.append(cursor.lastrowid)
                self._bump_generation(name)
            with self._resync_on_failure(name):
                index = self._index(name)
                index.remove(list(old.values()))
                index.add(np.asarray(labels, dtype=np.int64), vectors)
                self._generations[name] = generation
                self._count(name, len(ids) - len(old))
                self._maybe_compact(name)
        return len(ids), len(ids) - len(old)

    @_storage_errors
    def get(self, name: str, ids: Sequence[str], include_vectors: bool = False) -> list[StoredDocument]:
        self.collection(name)
        found = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT id, text, metadata, vector FROM documents WHERE collection = ? AND id IN ({marks})",
                (name, *chunk),
            ):
                found[row[0]] = self._document(row, include_vectors)
        return [found[i] for i in ids if i in found]

    @_storage_errors
    def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        self.collection(name)
        with self._mutation:
            generation = self._generations[name] + 1
            with self._transaction():
                old = self._labels(name, ids)
                self._db.executemany("DELETE FROM documents WHERE collection = ? AND id = ?", [(name, i) for i in old])
                if old:
                    self._db.executemany(
                        "INSERT INTO removed_labels (label, collection, generation) VALUES (?, ?, ?)",
                        [(label, name, generation) for label in old.values()],
                    )
                    self._bump_generation(name)
            if old:
                with self._resync_on_failure(name):
                    self._index(name).remove(list(old.values()))
                    self._generations[name] = generation
                    self._count(name, -len(old))
                    self._maybe_compact(name)
        return len(old)

    @_storage_errors
    def search(
        self,
        name: str,
        query: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None = None,
        include_vectors: bool = False,
    ) -> list[ScoredDocument]:
        """The top_k documents nearest to `query`, best first, among those matching `filter`.

        Every search returns min(top_k, documents matching the filter) hits. A filter's matches
        are counted in SQLite first; when there are at most `filter_exact_max_matches` of them
        (or the collection is flat), their vectors are scored exactly (brute force); otherwise
        the HNSW graph is searched with the filter applied, with ef raised to
        `max(ef_search, top_k) x documents / matches`, and raised `_WIDEN_FACTOR`-fold while it
        finds fewer than it must, up to the collection's size, then exactly.

        Args:
            name: the collection.
            query: float32, shape (dimension,).
            top_k: hits wanted (>= 1).
            filter: metadata key -> value (equality; all must hold), or None.
            include_vectors: return the stored vectors too.

        Returns:
            Hits with scores (cosine / dot: similarity, higher first; l2: squared distance,
            lower first).

        Raises:
            NotFound: no such collection. InvalidArgument: a bad query or filter.
        """
        info = self.collection(name)
        query = self._prepare(info, query[None, :])[0]
        allowed = None
        if filter:
            allowed = self._filtered_labels(name, filter)
            if len(allowed) == 0:
                return []
        scores, labels = self._nearest(name, query, top_k, allowed)
        rows = {}
        for chunk in _chunks([int(x) for x in labels], 500):
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT label, id, text, metadata, vector FROM documents WHERE label IN ({marks})", chunk
            ):
                rows[row[0]] = row[1:]
        hits = []
        for score, label in zip(scores, labels, strict=True):
            if int(label) in rows:
                doc = self._document(rows[int(label)], include_vectors)
                hits.append(ScoredDocument(doc.id, float(score), doc.text, doc.metadata, doc.vector))
        return hits

    def _nearest(self, name: str, query: np.ndarray, top_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, labels) of the nearest min(top_k, candidates) live vectors among `allowed` (None: all)."""
        index = self._index(name)
        matches = index.live if allowed is None else len(allowed)
        wanted = min(top_k, matches)
        if wanted == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if allowed is not None and matches <= self.config.filter_exact_max_matches:
            return index.search_exact(query, top_k, allowed)
        if index.info.index_type == "flat":
            return index.search(query, top_k, allowed)  # a flat index scans every vector: exact
        # HNSW with a filter or tombstones: the walk meets about `matches / ntotal` allowed vectors
        # per visited one, so ef grows by the inverse; retried wider while it falls short.
        ntotal = int(index.faiss.ntotal)
        ef = math.ceil(max(index.info.hnsw_ef_search, top_k) * ntotal / matches)
        while ef < ntotal:
            scores, labels = index.search(query, top_k, allowed, ef)
            if len(labels) >= wanted:
                return scores, labels
            log.debug("filtered HNSW search of %s found %d of %d with ef %d; widening", name, len(labels), wanted, ef)
            ef *= _WIDEN_FACTOR
        if allowed is None:
            allowed = np.array(
                [r[0] for r in self._db.execute("SELECT label FROM documents WHERE collection = ?", (name,))], dtype=np.int64
            )
        return index.search_exact(query, top_k, allowed)

    # -- persistence -------------------------------------------------------------------------

    def dirty_collections(self) -> list[str]:
        """Collections whose index changed since it was last saved."""
        return [name for name, index in self._indexes.items() if index.dirty]

    @_storage_errors
    def save_index(self, name: str) -> bool:
        """Write a collection's index file and manifest (atomically; `index_files`).

        Safe to run on another thread than the store's: the index is serialised under the
        mutation lock (writes wait, searches do not) and written to disk outside it. Once the
        file is saved, the removal log up to its generation is no longer needed and is pruned.

        Returns:
            True when written; False when the collection no longer exists.

        Raises:
            ResourceExhausted: no space for the file; Unavailable: the folder is read-only or
                failing. The index stays marked changed, so the next round tries again.
        """
        with self._mutation:
            index = self._indexes.get(name)
            if index is None or name in self._stale:
                return False
            identity = self._identity(self._infos[name])
            state = IndexState(self._generations[name], int(index.faiss.ntotal), index.max_label, sorted(index.dead))
            data = faiss.serialize_index(index.faiss)
            index.dirty = False
        try:
            index_files.write_index(self.index_dir, identity, state, data)
        except BaseException:
            index.dirty = True  # try again next round
            raise
        with self._mutation, contextlib.suppress(sqlite3.Error):  # pruning can wait for the next save
            if self._uids.get(name) == identity.uid:
                self._db.execute(
                    "DELETE FROM removed_labels WHERE collection = ? AND generation <= ?", (name, state.generation)
                )
        return True

    def save_indexes(self, force: bool = False) -> int:
        """Write changed (or, with force, all) index files now; return how many."""
        names = list(self._indexes) if force else self.dirty_collections()
        return sum(self.save_index(name) for name in names)

    def close(self) -> None:
        """Save changed indexes and close the database.

        Never raises for an index that cannot be saved (a full disk, a read-only folder): it is
        logged, and nothing is lost, since SQLite holds every acknowledged write and the next
        start applies what the last saved index lacks.
        """
        for name in self.dirty_collections():
            try:
                self.save_index(name)
            except Exception as exc:  # noqa: BLE001 - SQLite has every write; the next start catches up
                log.warning(
                    "index of collection %s not saved at shutdown: %s; no data is lost: the next start applies "
                    "the changes since its last save from SQLite", name, exc.message if isinstance(exc, FacetError) else exc,
                    extra={"fields": {"event": "index_not_saved", "collection": name}},
                )  # fmt: skip
        try:
            self._db.close()
        except sqlite3.Error as exc:
            log.warning("closing %s: %s", self.db_path, exc)

    @contextlib.contextmanager
    def _resync_on_failure(self, name: str) -> Iterator[None]:
        """After a commit, the index must follow SQLite; if changing it fails, rebuild it from SQLite."""
        try:
            yield
        except BaseException:
            row = self._db.execute(
                "SELECT generation, (SELECT COUNT(*) FROM documents WHERE collection = ?) FROM collections WHERE name = ?",
                (name, name),
            ).fetchone()
            self._generations[name] = int(row[0])
            self._infos[name] = dataclasses.replace(self._infos[name], document_count=int(row[1]))
            self._stale.add(name)  # rebuilt from SQLite on next use
            raise

    def _index(self, name: str) -> _Index:
        """The collection's index, rebuilt first if a failed change left it behind SQLite."""
        if name in self._stale:
            self._indexes[name] = self._rebuild(self._infos[name], "a change of the index failed after its commit")
            self._stale.discard(name)
        return self._indexes[name]

    def _maybe_compact(self, name: str) -> None:
        index = self._indexes[name]
        if len(index.dead) > max(1000, _REBUILD_DEAD_FRACTION * index.faiss.ntotal):
            self._indexes[name] = self._rebuild(self.collection(name), f"compacting {len(index.dead)} tombstones")

    # -- internals ---------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _bump_generation(self, name: str) -> None:
        self._db.execute("UPDATE collections SET generation = generation + 1 WHERE name = ?", (name,))

    def _labels(self, name: str, ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for doc_id, label in self._db.execute(
                f"SELECT id, label FROM documents WHERE collection = ? AND id IN ({marks})", (name, *chunk)
            ):
                found[doc_id] = label
        return found

    def _filtered_labels(self, name: str, filter: Mapping[str, Any]) -> np.ndarray:
        clauses: list[str] = []
        params: list[Any] = []
        check_filter(filter)
        for key, value in filter.items():
            path = f'$."{key}"'
            if value is None or isinstance(value, bool):
                clauses.append("json_type(metadata, ?) = ?")
                params += [path, "null" if value is None else ("true" if value else "false")]
            elif isinstance(value, (int, float)):
                clauses.append("json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?")
                params += [path, path, value]
            else:
                clauses.append("json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?")
                params += [path, path, value]
        sql = "SELECT label FROM documents WHERE collection = ? AND " + " AND ".join(clauses)
        return np.array([r[0] for r in self._db.execute(sql, (name, *params))], dtype=np.int64)

    @staticmethod
    def _prepare(info: CollectionInfo, vectors: np.ndarray) -> np.ndarray:
        return prepare_vectors(info, vectors)

    @staticmethod
    def _document(row: Sequence[Any], include_vectors: bool) -> StoredDocument:
        vector = np.frombuffer(row[3], dtype=np.float32).copy() if include_vectors else None
        return StoredDocument(id=row[0], text=row[1], metadata=json.loads(row[2]), vector=vector)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")  # in WAL mode the pages are written here: it can fail (full disk)
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL does); a failed ROLLBACK must not hide the cause
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    """Metadata as stored: JSON with non-ASCII characters as they are, not \\u escapes. SQLite
    matches a path's key against the key's text as stored, so an escaped key ("\\u00fc" for "ü")
    could never be found by a filter on "ü"."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


_UNESCAPED_KEYS_VERSION = 1  # PRAGMA user_version from which metadata is stored by _metadata_json


def _store_keys_unescaped(db: sqlite3.Connection) -> None:
    """Rewrite metadata that an older Facet stored with \\u escapes (ensure_ascii), once per
    database, so filters on non-ASCII keys match every document."""
    if int(db.execute("PRAGMA user_version").fetchone()[0]) >= _UNESCAPED_KEYS_VERSION:
        return
    with _Transaction(db):
        rows = db.execute("SELECT label, metadata FROM documents WHERE instr(metadata, '\\u') > 0").fetchall()
        db.executemany("UPDATE documents SET metadata = ? WHERE label = ?", [(_metadata_json(json.loads(m)), label) for label, m in rows])
        db.execute(f"PRAGMA user_version = {_UNESCAPED_KEYS_VERSION}")
    if rows:
        log.info("stored the metadata of %d documents with unescaped keys, so filters on non-ASCII keys match", len(rows))


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
