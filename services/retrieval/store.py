"""Collections of documents: SQLite (WAL) holds documents, metadata and vectors; a FAISS
index per collection is kept beside it.

SQLite is the source of truth. A write returns only after its transaction commits,
so an acknowledged upsert survives `kill -9`. Index files are saved now and then
and on shutdown, each with the collection's write generation; on open an index
whose generation does not match SQLite (or that is missing) is rebuilt from it.

Calls are made from one thread (the service's store thread), except `save_index`, which
another thread may run: it serialises an index under the mutation lock, so searches go on
while a large index is written and only writes wait.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger(__name__)
faiss: Any = _faiss  # its bundled stubs miss SearchParametersHNSW and the numpy overloads

METRICS = ("cosine", "dot", "l2")
INDEX_TYPES = ("flat", "hnsw")
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_ID_CHARS = 256
DEFAULT_HNSW_M = 32
DEFAULT_HNSW_EF_SEARCH = 128
MIN_HNSW_M, MAX_HNSW_M = 2, 256
MAX_HNSW_EF_SEARCH = 4096
_FILTER_KEY = re.compile(r'^[^"\x00-\x1f\\]{1,256}$')
HNSW_EF_CONSTRUCTION = 128
_REBUILD_DEAD_FRACTION = 0.25

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
    label INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; never reused
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    UNIQUE (collection, id)
);
"""


@dataclasses.dataclass(frozen=True)
class CollectionInfo:
    name: str
    metric: str
    index_type: str
    dimension: int
    document_count: int
    hnsw_m: int
    hnsw_ef_search: int


@dataclasses.dataclass(frozen=True)
class StoredDocument:
    id: str
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class ScoredDocument:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None


class _Index:
    """A collection's FAISS index, with tombstones for HNSW (which cannot remove)."""

    def __init__(self, info: CollectionInfo) -> None:
        self.info = info
        metric = faiss.METRIC_L2 if info.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if info.index_type == "hnsw":
            inner = faiss.IndexHNSWFlat(info.dimension, info.hnsw_m, metric)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        else:
            inner = faiss.IndexFlat(info.dimension, metric)
        self.faiss = faiss.IndexIDMap2(inner)
        self.dead: set[int] = set()
        self._dead_selectors: list[Any] | None = None
        self.dirty = False

    def add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        if len(labels):
            self.faiss.add_with_ids(vectors, labels)
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

    def search(self, query: np.ndarray, top_k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        params: Any
        if self.info.index_type == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.info.hnsw_ef_search, top_k)
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


class DocumentStore:
    """All collections of one retrieval service, persisted under `data_dir`."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.index_dir = self.data_dir / "indexes"
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.data_dir / "retrieval.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._indexes: dict[str, _Index] = {}
        self._infos: dict[str, CollectionInfo] = {}  # what never changes, plus the live count
        self._uids: dict[str, str] = {}
        self._generations: dict[str, int] = {}  # as committed to SQLite and applied to the index
        self._stale: set[str] = set()  # indexes that missed a committed change
        # Held while an index and its generation change, and while an index is serialised.
        self._mutation = threading.Lock()
        rows = self._db.execute(
            "SELECT c.name, c.metric, c.index_type, c.dimension, c.hnsw_m, c.hnsw_ef_search, c.uid, c.generation,"
            " (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name) FROM collections c"
        ).fetchall()
        for name, metric, index_type, dimension, hnsw_m, ef, uid, generation, count in rows:
            self._infos[name] = CollectionInfo(name, metric, index_type, dimension, count, hnsw_m, ef)
            self._uids[name] = uid
            self._generations[name] = generation
            self._indexes[name] = self._open_index(self._infos[name])

    # -- collections -------------------------------------------------------------------------

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
        if not COLLECTION_NAME.match(name):
            raise InvalidArgument(f"collection name {name!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ -")
        if metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {METRICS}, got {metric!r}")
        if index_type not in INDEX_TYPES:
            raise InvalidArgument(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if not 1 <= dimension <= 65536:
            raise InvalidArgument(f"dimension must be 1..65536, got {dimension}")
        if not (hnsw_m == 0 or MIN_HNSW_M <= hnsw_m <= MAX_HNSW_M):
            raise InvalidArgument(f"hnsw_m must be {MIN_HNSW_M}..{MAX_HNSW_M} (0: default {DEFAULT_HNSW_M}), got {hnsw_m}")
        if not 0 <= hnsw_ef_search <= MAX_HNSW_EF_SEARCH:
            raise InvalidArgument(f"hnsw_ef_search must be 1..{MAX_HNSW_EF_SEARCH} (0: default {DEFAULT_HNSW_EF_SEARCH})")
        hnsw_m = hnsw_m or DEFAULT_HNSW_M
        hnsw_ef_search = hnsw_ef_search or DEFAULT_HNSW_EF_SEARCH
        if name in self._infos:
            raise AlreadyExists(f"collection '{name}' already exists; delete it first or pick another name")
        uid = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO collections (name, metric, index_type, dimension, hnsw_m, hnsw_ef_search, uid, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, metric, index_type, dimension, hnsw_m, hnsw_ef_search, uid, time.time()),
        )
        info = CollectionInfo(name, metric, index_type, dimension, 0, hnsw_m, hnsw_ef_search)
        with self._mutation:
            self._infos[name], self._uids[name], self._generations[name] = info, uid, 0
            self._indexes[name] = _Index(info)
        return info

    def collection(self, name: str) -> CollectionInfo:
        info = self._infos.get(name)
        if info is None:
            raise NotFound(f"collection '{name}' does not exist; create it with CreateCollection")
        return info

    def list_collections(self) -> list[CollectionInfo]:
        return [self._infos[name] for name in sorted(self._infos)]

    def _count(self, name: str, change: int) -> None:
        info = self._infos[name]
        self._infos[name] = dataclasses.replace(info, document_count=info.document_count + change)

    def delete_collection(self, name: str) -> int:
        info = self.collection(name)
        with self._mutation:
            with self._transaction():
                self._db.execute("DELETE FROM documents WHERE collection = ?", (name,))
                self._db.execute("DELETE FROM collections WHERE name = ?", (name,))
            for table in (self._indexes, self._infos, self._uids, self._generations):
                table.pop(name, None)
            self._stale.discard(name)
            for path in self._index_files(name):
                path.unlink(missing_ok=True)
        return info.document_count

    # -- documents ---------------------------------------------------------------------------

    def upsert(
        self, name: str, ids: Sequence[str], texts: Sequence[str], vectors: np.ndarray, metadata: Sequence[Mapping[str, Any]]
    ) -> tuple[int, int]:
        """Insert or replace documents in one transaction; return (upserted, created)."""
        info = self.collection(name)
        vectors = self._prepare(info, vectors)
        with self._mutation:
            with self._transaction():
                old = self._labels(name, ids)
                self._db.executemany(
                    "DELETE FROM documents WHERE collection = ? AND id = ?", [(name, i) for i in ids if i in old]
                )
                labels = []
                for doc_id, text, meta, vec in zip(ids, texts, metadata, vectors, strict=True):
                    cursor = self._db.execute(
                        "INSERT INTO documents (collection, id, text, metadata, vector) VALUES (?, ?, ?, ?, ?)",
                        (name, doc_id, text, json.dumps(meta, separators=(",", ":")), vec.tobytes()),
                    )
                    labels.append(cursor.lastrowid)
                self._bump_generation(name)
            with self._resync_on_failure(name):
                index = self._index(name)
                index.remove(list(old.values()))
                index.add(np.asarray(labels, dtype=np.int64), vectors)
                self._generations[name] += 1
                self._count(name, len(ids) - len(old))
                self._maybe_compact(name)
        return len(ids), len(ids) - len(old)

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

    def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        self.collection(name)
        with self._mutation:
            with self._transaction():
                old = self._labels(name, ids)
                self._db.executemany("DELETE FROM documents WHERE collection = ? AND id = ?", [(name, i) for i in old])
                if old:
                    self._bump_generation(name)
            if old:
                with self._resync_on_failure(name):
                    self._index(name).remove(list(old.values()))
                    self._generations[name] += 1
                    self._count(name, -len(old))
                    self._maybe_compact(name)
        return len(old)

    def search(
        self,
        name: str,
        query: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None = None,
        include_vectors: bool = False,
    ) -> list[ScoredDocument]:
        info = self.collection(name)
        query = self._prepare(info, query[None, :])[0]
        allowed = None
        if filter:
            allowed = self._filtered_labels(name, filter)
            if len(allowed) == 0:
                return []
        scores, labels = self._index(name).search(query, top_k, allowed)
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

    # -- persistence -------------------------------------------------------------------------

    def dirty_collections(self) -> list[str]:
        """Collections whose index changed since it was last saved."""
        return [name for name, index in self._indexes.items() if index.dirty]

    def save_index(self, name: str) -> bool:
        """Write a collection's index file (atomically, stamped with uid and generation).

        Safe to run on another thread than the store's: the index is serialised under the
        mutation lock (writes wait, searches do not) and written to disk outside it.
        Returns False when the collection no longer exists.
        """
        with self._mutation:
            index = self._indexes.get(name)
            if index is None or name in self._stale:
                return False
            meta = {"uid": self._uids[name], "generation": self._generations[name], "dead": sorted(index.dead)}
            data = faiss.serialize_index(index.faiss)
            index.dirty = False
        path, meta_path = self._index_files(name)
        tmp, meta_tmp = path.with_suffix(".tmp"), meta_path.with_suffix(".jsontmp")
        try:
            data.tofile(tmp)
            tmp.replace(path)
            meta_tmp.write_text(json.dumps(meta))
            meta_tmp.replace(meta_path)
        except BaseException:
            index.dirty = True  # try again next round
            tmp.unlink(missing_ok=True)
            meta_tmp.unlink(missing_ok=True)
            raise
        return True

    def save_indexes(self, force: bool = False) -> int:
        """Write changed (or, with force, all) index files now; return how many."""
        names = list(self._indexes) if force else self.dirty_collections()
        return sum(self.save_index(name) for name in names)

    def close(self) -> None:
        self.save_indexes()
        self._db.close()

    def _open_index(self, info: CollectionInfo) -> _Index:
        path, meta_path = self._index_files(info.name)
        generation = self._generations[info.name]
        if path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("generation") == generation and meta.get("uid") == self._uids[info.name]:
                    index = _Index(info)
                    index.faiss = faiss.read_index(str(path))
                    index.dead = set(meta.get("dead", []))
                    log.info("loaded index of collection %s (%d vectors)", info.name, index.faiss.ntotal)
                    return index
                log.warning("index of collection %s is stale; rebuilding from SQLite", info.name)
            except (OSError, ValueError, RuntimeError) as exc:
                log.warning("index of collection %s is unreadable (%s); rebuilding from SQLite", info.name, exc)
        return self._rebuild(info)

    def _rebuild(self, info: CollectionInfo) -> _Index:
        index = _Index(info)
        rows = self._db.execute(
            "SELECT label, vector FROM documents WHERE collection = ? ORDER BY label", (info.name,)
        )
        while batch := rows.fetchmany(10_000):
            labels = np.array([r[0] for r in batch], dtype=np.int64)
            vectors = np.frombuffer(b"".join(r[1] for r in batch), dtype=np.float32).reshape(len(batch), info.dimension)
            index.add(labels, vectors)
        index.dirty = True
        log.info("rebuilt index of collection %s from SQLite (%d vectors)", info.name, index.faiss.ntotal)
        return index

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
            self._indexes[name] = self._rebuild(self._infos[name])
            self._stale.discard(name)
        return self._indexes[name]

    def _maybe_compact(self, name: str) -> None:
        index = self._indexes[name]
        if len(index.dead) > max(1000, _REBUILD_DEAD_FRACTION * index.faiss.ntotal):
            self._indexes[name] = self._rebuild(self.collection(name))

    # -- internals ---------------------------------------------------------------------------

    def _index_files(self, name: str) -> tuple[Path, Path]:
        return self.index_dir / f"{name}.faiss", self.index_dir / f"{name}.json"

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
        for key, value in filter.items():
            if not _FILTER_KEY.match(key):
                raise InvalidArgument(
                    f"filter key {key!r} is invalid: 1-256 characters, no quotes, backslashes or control characters"
                )
            path = f'$."{key}"'
            if value is None or isinstance(value, bool):
                clauses.append("json_type(metadata, ?) = ?")
                params += [path, "null" if value is None else ("true" if value else "false")]
            elif isinstance(value, (int, float)):
                clauses.append("json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?")
                params += [path, path, value]
            elif isinstance(value, str):
                clauses.append("json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?")
                params += [path, path, value]
            else:
                raise InvalidArgument(
                    f"filter value of {key!r} must be a string, number, boolean or null (equality), not {type(value).__name__}"
                )
        sql = "SELECT label FROM documents WHERE collection = ? AND " + " AND ".join(clauses)
        return np.array([r[0] for r in self._db.execute(sql, (name, *params))], dtype=np.int64)

    @staticmethod
    def _prepare(info: CollectionInfo, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != info.dimension:
            got = vectors.shape[-1] if vectors.ndim else 0
            raise InvalidArgument(f"vectors of collection '{info.name}' have dimension {info.dimension}, got {got}")
        if not np.isfinite(vectors).all():
            raise InvalidArgument("vectors must be finite (no NaN or inf)")
        if info.metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            if (norms == 0).any():
                raise InvalidArgument("a zero vector has no direction; cosine collections need non-zero vectors")
            vectors = vectors / norms
        return vectors

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
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
