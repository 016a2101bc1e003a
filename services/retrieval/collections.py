"""What the retrieval service asks of a collection store, and the rules every store applies.

Two stores implement `CollectionStore` (`retrieval.store`):
- "embedded" (`services.retrieval.store.DocumentStore`, the default): SQLite + FAISS in the
  service's data dir; one service process owns it.
- "milvus" (`services.retrieval.milvus_store.MilvusStore`): collections in a Milvus server or
  cluster that any number of service processes share.

Both check a request by the functions below before they touch storage, so a bad collection
spec, vector or filter gets the same status and message on either store.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound, shown

if TYPE_CHECKING:
    from services.retrieval.config import RetrievalConfig

METRICS = ("cosine", "dot", "l2")
INDEX_TYPES = ("flat", "hnsw")
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_ID_CHARS = 256
MAX_DIMENSION = 65536
DEFAULT_HNSW_M = 32
DEFAULT_HNSW_EF_SEARCH = 128
MIN_HNSW_M, MAX_HNSW_M = 2, 256
MAX_HNSW_EF_SEARCH = 4096
HNSW_EF_CONSTRUCTION = 128
FILTER_KEY = re.compile(r'^[^"\x00-\x1f\\]{1,256}$')


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


class CollectionStore(Protocol):
    """Collections of documents (id, text, metadata, vector) and nearest-neighbour search.

    Scores: cosine and dot are similarities (higher first), l2 is the squared distance (lower
    first). Every method raises the service's statuses: InvalidArgument (a bad spec, vector or
    filter), NotFound (no such collection), AlreadyExists, ResourceExhausted (no space),
    Unavailable (storage cannot be used now; the message names the file or the server).
    """

    #: store calls the service may run at once (the embedded store: 1, a single-writer database)
    concurrency: int

    def create_collection(
        self,
        name: str,
        *,
        dimension: int,
        metric: str = "cosine",
        index_type: str = "flat",
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
    ) -> CollectionInfo: ...

    def collection(self, name: str) -> CollectionInfo:
        """The collection with its document count now."""
        ...

    def spec(self, name: str) -> CollectionInfo:
        """The collection's fixed settings (dimension, metric, index); its document_count may be
        out of date. Cheaper than `collection` where the count costs a query."""
        ...

    def list_collections(self) -> list[CollectionInfo]: ...

    def delete_collection(self, name: str) -> int:
        """Delete a collection; the number of documents it held."""
        ...

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]],
    ) -> tuple[int, int]:
        """Insert or replace by id; (documents written, of them new ids). Returns only once the
        write is durable (the store's acknowledgement rule)."""
        ...

    def get(self, name: str, ids: Sequence[str], include_vectors: bool = False) -> list[StoredDocument]: ...

    def delete_documents(self, name: str, ids: Sequence[str]) -> int: ...

    def search(
        self,
        name: str,
        query: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None = None,
        include_vectors: bool = False,
    ) -> list[ScoredDocument]: ...

    def dirty_collections(self) -> list[str]:
        """Collections with derived state (index files) to save; [] when the store keeps none."""
        ...

    def save_index(self, name: str) -> bool: ...

    def healthy(self) -> bool:
        """Whether the store can serve now (the Milvus store: whether the server answers)."""
        ...

    def close(self) -> None: ...


def check_collection_name(name: str) -> None:
    """Raises InvalidArgument unless 1-128 characters of A-Z a-z 0-9 _ -."""
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(f"collection name {shown(name)!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ -")


def collection_spec(
    name: str, *, dimension: int, metric: str, index_type: str, hnsw_m: int, hnsw_ef_search: int
) -> CollectionInfo:
    """A new collection's settings, checked, with the HNSW defaults filled in (0 = default).

    Raises:
        InvalidArgument: a bad name, metric, index type, dimension or HNSW parameter.
    """
    check_collection_name(name)
    if metric not in METRICS:
        raise InvalidArgument(f"metric must be one of {METRICS}, got {metric!r}")
    if index_type not in INDEX_TYPES:
        raise InvalidArgument(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
    if not 1 <= dimension <= MAX_DIMENSION:
        raise InvalidArgument(f"dimension must be 1..{MAX_DIMENSION}, got {dimension}")
    if not (hnsw_m == 0 or MIN_HNSW_M <= hnsw_m <= MAX_HNSW_M):
        raise InvalidArgument(f"hnsw_m must be {MIN_HNSW_M}..{MAX_HNSW_M} (0: default {DEFAULT_HNSW_M}), got {hnsw_m}")
    if not 0 <= hnsw_ef_search <= MAX_HNSW_EF_SEARCH:
        raise InvalidArgument(f"hnsw_ef_search must be 1..{MAX_HNSW_EF_SEARCH} (0: default {DEFAULT_HNSW_EF_SEARCH})")
    return CollectionInfo(
        name, metric, index_type, dimension, 0, hnsw_m or DEFAULT_HNSW_M, hnsw_ef_search or DEFAULT_HNSW_EF_SEARCH
    )


def not_found(name: str) -> NotFound:
    return NotFound(f"collection {shown(name)!r} does not exist; create it with CreateCollection")


def already_exists(name: str) -> AlreadyExists:
    return AlreadyExists(f"collection {shown(name)!r} already exists; delete it first or pick another name")


def prepare_vectors(info: CollectionInfo, vectors: np.ndarray) -> np.ndarray:
    """float32 (n, dimension), C-contiguous; unit length for cosine collections (scores are then
    inner products, and the stored vector is the normalised one).

    Raises:
        InvalidArgument: the wrong dimension, NaN or inf, or a zero vector in a cosine collection.
    """
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


def check_filter(filter: Mapping[str, Any]) -> None:
    """A metadata filter: top-level key -> value, equality, all must hold. Values are strings,
    numbers (1 and 1.0 are equal), booleans (never equal to numbers) or null.

    Raises:
        InvalidArgument: a key with quotes, backslashes or control characters, or longer than
            256 characters; a value that is a list or object; a string value with NUL.
    """
    for key, value in filter.items():
        if not FILTER_KEY.match(key):
            raise InvalidArgument(
                f"filter key {shown(key)!r} is invalid: 1-256 characters, no quotes, backslashes or control characters"
            )
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise InvalidArgument(
                f"filter value of {shown(key)!r} must be a string, number, boolean or null (equality), not {type(value).__name__}"
            )
        if isinstance(value, str) and "\x00" in value:
            # SQLite's JSON functions end a string at NUL: the embedded store could never match it
            raise InvalidArgument(f"filter value of {shown(key)!r} contains NUL (U+0000), which a filter cannot match")


def open_store(config: RetrievalConfig, data_dir: Path) -> CollectionStore:
    """The store `retrieval.store` names: the embedded one in `data_dir`, or Milvus at
    `retrieval.milvus_uri` (which connects on first use).

    Raises:
        StoreUnusable: the embedded store's data dir must not be served (see DocumentStore).
    """
    if config.store == "milvus":
        from services.retrieval.milvus_store import MilvusStore

        return MilvusStore(config)
    from services.retrieval.store import DocumentStore

    return DocumentStore(data_dir, config)
