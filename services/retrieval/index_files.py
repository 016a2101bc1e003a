"""A collection's saved FAISS index: the serialised index and a manifest beside it that says
whose it is and how to check it.

    indexes/<collection>.<token>.faiss   the bytes of `faiss.serialize_index`
    indexes/<collection>.json            the manifest (below), replaced atomically last

The manifest names the collection (name and uid, so a re-created collection or a file copied
from another collection is told apart), the index's shape (type, metric, dimension, HNSW M), the
write generation it reflects, how many vectors it holds, the highest document label in it, its
HNSW tombstones, and the data file's name, size and SHA-256. `read_index` loads a file only when
every one of these matches what SQLite says and what the deserialised index reports; otherwise it
raises `IndexFileRejected` with the reason, and the store rebuilds the index from SQLite.

Each save writes a new data file (a fresh token) before the manifest names it, so a crash at
any point leaves the previous manifest and its file intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

faiss: Any = _faiss

MANIFEST_FORMAT = 2
_DATA_SUFFIX = ".faiss"


class IndexFileRejected(Exception):
    """A saved index that must not be used; the message says why (for the log)."""


class NoSavedIndex(IndexFileRejected):
    """The collection has no manifest yet (never saved)."""


@dataclasses.dataclass(frozen=True)
class IndexIdentity:
    """What a collection's index must be, from SQLite: it never changes for a collection's life."""

    collection: str
    uid: str
    index_type: str  # "flat" | "hnsw"
    metric: str  # "cosine" | "dot" | "l2"
    dimension: int
    hnsw_m: int


@dataclasses.dataclass(frozen=True)
class IndexState:
    """What a saved index holds, recorded at the moment it was serialised."""

    generation: int  # the collection's write generation the index reflects
    count: int  # vectors in the FAISS index (HNSW tombstones included)
    max_label: int  # the highest document label ever added (-1: none); later labels are newer rows
    dead: list[int]  # HNSW tombstones (labels deleted but still in the graph)


@dataclasses.dataclass(frozen=True)
class LoadedIndex:
    index: Any  # the deserialised faiss.IndexIDMap2
    state: IndexState
    path: Path


def manifest_path(index_dir: Path, collection: str) -> Path:
    return index_dir / f"{collection}.json"


def collection_files(index_dir: Path, collection: str) -> list[Path]:
    """Every file of `collection` in `index_dir` (manifest, data files, leftovers of failed saves).
    Collection names have no dots, so `<name>.` never matches another collection's files."""
    return [p for p in index_dir.glob(f"{collection}.*") if p.is_file()]


def write_index(index_dir: Path, identity: IndexIdentity, state: IndexState, data: np.ndarray) -> Path:
    """Write `data` (the bytes of `faiss.serialize_index`, uint8) and its manifest, atomically.

    Args:
        index_dir: the folder of index files.
        identity: whose index this is.
        state: what the index holds.
        data: uint8 array, shape (n_bytes,).

    Returns:
        The data file's path.

    Raises:
        OSError: the write failed (ENOSPC on a full disk, EROFS, EIO, ...); the previous manifest
            and data file are left as they were, and the partial files are removed.
    """
    token = secrets.token_hex(6)
    path = index_dir / f"{identity.collection}.{token}{_DATA_SUFFIX}"
    manifest = {
        "format": MANIFEST_FORMAT,
        **dataclasses.asdict(identity),
        **dataclasses.asdict(state),
        "file": path.name,
        "size_bytes": int(data.nbytes),
        "sha256": hashlib.sha256(data.data).hexdigest(),
    }
    tmp = path.with_name(path.name + ".tmp")
    meta = manifest_path(index_dir, identity.collection)
    meta_tmp = meta.with_name(meta.name + ".tmp")
    try:
        _write_durably(tmp, data.data)
        tmp.replace(path)
        _write_durably(meta_tmp, json.dumps(manifest).encode())
        meta_tmp.replace(meta)
        _sync_folder(index_dir)
    except BaseException:
        for leftover in (tmp, meta_tmp):
            leftover.unlink(missing_ok=True)
        if not (meta.is_file() and _manifest_file(meta) == path.name):
            path.unlink(missing_ok=True)
        raise
    for old in collection_files(index_dir, identity.collection):  # earlier saves' data files
        if old.suffix == _DATA_SUFFIX and old != path:
            old.unlink(missing_ok=True)
    return path


def read_index(index_dir: Path, identity: IndexIdentity, generation: int) -> LoadedIndex:
    """Load `identity`'s saved index after checking it against its manifest and SQLite.

    Args:
        index_dir: the folder of index files.
        identity: what the index must be (from SQLite).
        generation: the collection's write generation in SQLite; a saved index is never newer.

    Returns:
        The index and what it holds; changes after `state.generation` are the caller's to apply.

    Raises:
        IndexFileRejected: no manifest, or a manifest, data file or index that does not match
            (wrong collection or shape, checksum or size mismatch, unreadable bytes).
    """
    meta = manifest_path(index_dir, identity.collection)
    if not meta.is_file():
        raise NoSavedIndex("no saved index")
    try:
        manifest = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise IndexFileRejected(f"manifest {meta} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise IndexFileRejected(f"manifest {meta} is not format {MANIFEST_FORMAT}")
    for field, expected in dataclasses.asdict(identity).items():
        if manifest.get(field) != expected:
            raise IndexFileRejected(f"manifest {meta} is for {field}={manifest.get(field)!r}, expected {expected!r}")
    try:
        state = IndexState(
            generation=int(manifest["generation"]),
            count=int(manifest["count"]),
            max_label=int(manifest["max_label"]),
            dead=[int(x) for x in manifest["dead"]],
        )
        name, size, digest = str(manifest["file"]), int(manifest["size_bytes"]), str(manifest["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IndexFileRejected(f"manifest {meta} is incomplete: {exc!r}") from None
    if state.generation > generation:
        raise IndexFileRejected(f"saved at generation {state.generation}, newer than SQLite's {generation}")
    path = index_dir / name
    if path.parent != index_dir or not name.startswith(f"{identity.collection}.") or not name.endswith(_DATA_SUFFIX):
        raise IndexFileRejected(f"manifest {meta} names a file of another collection: {name!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFileRejected(f"{path} is unreadable: {exc}") from None
    if len(data) != size:
        raise IndexFileRejected(f"{path} has {len(data)} bytes, its manifest says {size}")
    if hashlib.sha256(data).hexdigest() != digest:
        raise IndexFileRejected(f"{path} does not match its manifest's SHA-256")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise IndexFileRejected(f"{path} is not a FAISS index: {exc}") from None
    _check_shape(index, identity, state, path)
    return LoadedIndex(index=index, state=state, path=path)


def _check_shape(index: Any, identity: IndexIdentity, state: IndexState, path: Path) -> None:
    inner: Any = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else None
    kind = {"IndexHNSWFlat": "hnsw", "IndexFlat": "flat", "IndexFlatIP": "flat", "IndexFlatL2": "flat"}.get(
        type(inner).__name__
    )
    metric = faiss.METRIC_L2 if identity.metric == "l2" else faiss.METRIC_INNER_PRODUCT
    problems = []
    if kind != identity.index_type:
        problems.append(f"holds a {type(inner).__name__ if inner is not None else type(index).__name__}")
    if index.d != identity.dimension:
        problems.append(f"has dimension {index.d}")
    if index.metric_type != metric:
        problems.append(f"has metric type {index.metric_type}")
    if index.ntotal != state.count:
        problems.append(f"holds {index.ntotal} vectors, its manifest says {state.count}")
    if kind == "hnsw" and inner.hnsw.nb_neighbors(0) != 2 * identity.hnsw_m:
        problems.append("has another HNSW M")
    if problems:
        raise IndexFileRejected(f"{path} " + ", ".join(problems))


def _manifest_file(meta: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return str(json.loads(meta.read_text()).get("file"))
    return None


def _write_durably(path: Path, data: memoryview | bytes) -> None:
    try:
        with path.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # write() does not say which file failed
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
