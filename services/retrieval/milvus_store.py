"""The Milvus store (`retrieval.store = "milvus"`): collections in a Milvus server or cluster,
through `pymilvus`, shared by every retrieval service process pointed at it.

How Facet's collections map to Milvus:
- A collection named N is the Milvus collection `facet_<N with - as _>_<12 hex of sha256(N)>`
  (Milvus names allow only letters, digits and _); its description holds Facet's settings
  (the name, metric, index type, dimension, HNSW parameters) as JSON. Milvus collections
  without that description are not Facet's and are not listed.
- Fields: `id` (VARCHAR primary key, 1024 bytes: 256 characters of UTF-8), `text` (VARCHAR),
  `metadata` (JSON), `filter_values` (JSON, see below), `vector` (FLOAT_VECTOR).
- Metrics: cosine -> COSINE (vectors are stored normalised, as on the embedded store), dot ->
  IP, l2 -> L2 (Milvus reports squared distances, as FAISS does). Index types: flat -> FLAT,
  hnsw -> HNSW with M = hnsw_m, efConstruction = 128, and ef = max(hnsw_ef_search, top_k) per
  search.
- Filters: Milvus compares JSON values by its own typing rules and has no null literal, so each
  document also stores `filter_values`: every top-level scalar of its metadata as a tagged
  string ("s:<string>", "n:<float repr>", "b:1"/"b:0", "z" for null). A filter becomes
  `filter_values["key"] == "<tag:value>" and ...`, with keys and values written as JSON string
  literals (quotes, backslashes and control characters escaped, which Milvus' expression parser
  reads back exactly). So 1 and 1.0 match each other, true never matches 1, and null matches
  null: the embedded store's typed equality.

Acknowledgement rule: Upsert and DeleteDocuments return once Milvus has accepted the write,
which is when its log broker holds it (RocksMQ's write-ahead log in a standalone server,
Pulsar or Kafka in a cluster): it survives `kill -9` of the service and of the Milvus server.
No flush is issued per write (a flush seals segments; Milvus advises against it on the write
path). Reads and searches use `retrieval.milvus_consistency` (Strong by default: they see every
acknowledged write, made through any service process).

Why Facet's own code here: this is the mapping of Facet's collection API onto Milvus (names,
typed filters, counts, errors); storage, indexes and replication are Milvus'.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from services.retrieval.collections import (
    HNSW_EF_CONSTRUCTION,
    CollectionInfo,
    ScoredDocument,
    StoredDocument,
    already_exists,
    check_collection_name,
    check_filter,
    collection_spec,
    not_found,
    prepare_vectors,
)
from services.retrieval.config import MILVUS_MAX_VARCHAR_BYTES, RetrievalConfig
from services.runtime.errors import FacetError, InvalidArgument, NotFound, Unavailable
from services.runtime.interceptor import bounded_message

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "facet_"
MAX_ID_BYTES = 1024  # 256 characters (MAX_ID_CHARS) of up to 4 bytes each
MILVUS_MAX_DIMENSION = 32_768  # Milvus' proxy.maxDimension default
MAX_HNSW_EF = 32_768  # the largest ef Milvus' HNSW takes
_METRIC = {"cosine": "COSINE", "dot": "IP", "l2": "L2"}
_INDEX = {"flat": "FLAT", "hnsw": "HNSW"}
_COLLECTION_NOT_FOUND = 100  # Milvus' error code
_IDS_PER_EXPRESSION = 500
_WIDEN_FACTOR = 4
_HEALTH_TIMEOUT_S = 2.0
_CONNECT_TIMEOUT_S = 3.0
MILVUS_MAX_JSON_BYTES = 65_536  # a Milvus JSON field's largest value
_LOAD_TIMEOUT_S = 30.0  # how long CreateCollection waits for Milvus to load the new collection
_DEADLINE_GRACE_S = 1.0  # beyond the call's own timeout, before it is abandoned
_DOCUMENT_FIELDS = ["id", "text", "metadata"]



def milvus_name(name: str) -> str:
    """The Milvus collection that holds Facet's collection `name` (1-128 of A-Z a-z 0-9 _ -)."""
    return f"{PREFIX}{name.replace('-', '_')}_{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def literal(value: str) -> str:
    """A Milvus expression string literal of `value`: JSON's escapes, which the expression
    parser reads back exactly (quotes, backslashes, control characters, any Unicode)."""
    return json.dumps(value, ensure_ascii=False)


def filter_value(value: Any) -> str | None:
    """The tagged string `filter_values` stores for a metadata value; None for lists and objects
    (a filter never matches them)."""
    if value is None:
        return "z"
    if isinstance(value, bool):
        return "b:1" if value else "b:0"
    if isinstance(value, (int, float)):
        return f"n:{float(value) + 0.0!r}"  # + 0.0: -0.0 and 0.0 are equal, as in SQLite
    if isinstance(value, str):
        return f"s:{value}"
    return None


def filter_expression(filter: Mapping[str, Any]) -> str:
    """The Milvus boolean expression of an equality filter (checked by `check_filter`): the
    clauses joined by `and` as a balanced tree (Milvus 2.3 fails a chain of 64 clauses with
    "unsupported expr proto node"; a tree of depth log2(keys) it evaluates)."""
    check_filter(filter)
    return _all_of([f"filter_values[{literal(key)}] == {literal(str(filter_value(value)))}" for key, value in filter.items()])


def _all_of(clauses: Sequence[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    half = len(clauses) // 2
    return f"({_all_of(clauses[:half])}) and ({_all_of(clauses[half:])})"


def _ids_expression(ids: Sequence[str]) -> str:
    return f"id in [{', '.join(literal(i) for i in ids)}]"


class MilvusStore:
    """A `CollectionStore` on Milvus (see the module docstring for the mapping).

    Args:
        config: the `[retrieval]` section: milvus_uri, milvus_token, milvus_database,
            milvus_consistency, milvus_timeout_s, milvus_concurrency.

    Nothing connects here: the first call does, so a service starts while Milvus is down and
    reports NOT_SERVING (`healthy`) until it answers. A call that cannot reach Milvus raises
    Unavailable naming the URI.
    """

    def __init__(self, config: RetrievalConfig) -> None:
        self.config = config
        self.uri = config.milvus_uri
        self.concurrency = config.milvus_concurrency
        self._client: Any = None
        self._lock = threading.Lock()
        self._serving = True
        self._check_collections = True  # until a query on each of Facet's collections returns (see healthy)
        self._reported_waiting: str | None = None
        self._answered: set[str] = set()  # collections found answering since the last outage
        # every Milvus call runs here, so that its deadline holds (see _run); the spare workers
        # take new calls while abandoned ones wait for their channel to close
        self._calls = concurrent.futures.ThreadPoolExecutor(max_workers=2 * config.milvus_concurrency + 2, thread_name_prefix="milvus")

    # -- connection and errors ---------------------------------------------------------------

    def _connect(self) -> Any:
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient
                from pymilvus.client import grpc_handler

                grpc_handler.grpc = _RECONNECTING_GRPC  # type: ignore[attr-defined]

                # pymilvus logs every failed RPC at ERROR with a traceback (its import sets the
                # level); the service reports the status once, in its own log line
                for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):  # its own loggers
                    logging.getLogger(name).setLevel(logging.CRITICAL)

                self._client = self._call(
                    lambda: MilvusClient(
                        uri=self.uri,
                        token=self.config.milvus_token,
                        db_name=self.config.milvus_database,
                        # how long connecting may take (under this lock: callers wait for it)
                        timeout=min(self.config.milvus_timeout_s, _CONNECT_TIMEOUT_S),
                        # a connection of its own: pymilvus shares one per URI and database by
                        # default, so closing a replaced client would close its successor's
                        alias=f"facet-{uuid.uuid4().hex}",
                    ),
                    None,
                )
            return self._client

    def _call(self, call: Callable[[], T], collection: str | None) -> T:
        """`call()`, with Milvus' failures raised as the service's statuses."""
        from pymilvus import MilvusException

        try:
            return call()
        except FacetError:
            raise
        except MilvusException as exc:
            code, message = exc.code, str(exc.message)
            if code == _COLLECTION_NOT_FOUND and collection is not None:
                raise not_found(collection) from None
            if not isinstance(code, int) or code == 2 or "connect" in message.lower():
                # unreachable: pymilvus puts the gRPC error (a long debug string) in the message
                raise self._unreachable("no connection") from None
            raise Unavailable(f"Milvus at {self.uri} failed: {bounded_message(message, 300)}") from None
        except ValueError as exc:
            if "closed channel" not in str(exc):
                raise
            # a call that raced the replacement of a client that had stopped answering
            raise self._unreachable("its connection was reset") from None
        except grpc.RpcError as exc:
            status = exc.code() if hasattr(exc, "code") else None
            raise self._unreachable(str(getattr(status, "name", status))) from None

    def _unreachable(self, why: str) -> Unavailable:
        """The one status for "Milvus did not answer", whatever pymilvus or gRPC said."""
        return Unavailable(
            f"Milvus at {self.uri} cannot be reached ({why}); retry when it is back (an Upsert may be repeated: it replaces by id)"
        )

    def _run(self, collection: str | None, method: str, *args: Any, **kwargs: Any) -> Any:
        """`client.<method>(*args, **kwargs)` with a deadline this store enforces itself: a
        pymilvus call issued while the server is shutting down (its connection open, no answer)
        can outlive its own `timeout` by minutes. Past the deadline the call is abandoned, the
        client replaced (closing its channel ends the abandoned call) and Unavailable raised."""
        client = self._connect()
        timeout = kwargs.setdefault("timeout", self.config.milvus_timeout_s)
        pending = self._calls.submit(lambda: getattr(client, method)(*args, **kwargs))
        try:
            return self._call(lambda: pending.result(timeout + _DEADLINE_GRACE_S), collection)
        except TimeoutError:
            self._replace(client)
            raise self._unreachable(f"no answer within {timeout:g} s, retrieval.milvus_timeout_s") from None

    def _replace(self, client: Any) -> None:
        """Drop a client whose calls hang; the next call connects afresh."""
        with self._lock:
            if self._client is client:
                self._client = None
        self._calls.submit(client.close)

    def healthy(self) -> bool:
        """Whether Milvus answers and, after it was unreachable (and at start), whether it
        answers queries on Facet's collections: a restarted Milvus answers within seconds, but
        reloads its collections for tens of seconds, and even once it reports them loaded, a
        query on them hangs for a while longer (15–20 s more here, at Strong consistency). Until
        a query on every Facet collection returns, the service reports NOT_SERVING, so that a load
        balancer (Kubernetes' readiness probe) sends it calls only once they can succeed. After
        that, only Milvus' answer is checked (one cheap call per check)."""
        try:
            self._run(None, "get_server_version", timeout=_HEALTH_TIMEOUT_S)
            if self._check_collections:
                waiting = self._not_answering()
                if waiting is not None:
                    if self._serving or waiting != self._reported_waiting:
                        log.warning(
                            "retrieval store not serving: Milvus at %s does not answer queries on %s yet (loading after a start)",
                            self.uri, waiting, extra={"fields": {"event": "store_loading", "collection": waiting}},
                        )  # fmt: skip
                    self._reported_waiting = waiting
                    self._serving = False
                    return False
                self._check_collections, self._reported_waiting = False, None
                self._answered.clear()
        except FacetError as exc:
            if self._serving:
                log.warning("retrieval store not serving: %s", exc.message, extra={"fields": {"event": "store_unavailable"}})
            self._serving = False
            self._check_collections = True  # it may come back restarted, its collections loading
            self._answered.clear()
            return False
        self._serving = True
        return True

    def _not_answering(self) -> str | None:
        """The Milvus name of the first Facet collection a query (one primary-key lookup, at
        `milvus_consistency`, bounded by the health timeout) does not return on; None when every
        one answers (each one found answering is not asked again until the next outage). A
        collection released in Milvus by hand (neither loaded nor loading) is not waited for:
        calls on it say so (UNAVAILABLE naming Milvus' message)."""
        from pymilvus.client.types import LoadState

        for target in self._run(None, "list_collections", timeout=_HEALTH_TIMEOUT_S):
            if not target.startswith(PREFIX) or target in self._answered:
                continue
            try:
                state = self._run(target, "get_load_state", target, timeout=_HEALTH_TIMEOUT_S)["state"]
                if state == LoadState.Loading:
                    return target
                if state == LoadState.Loaded:
                    self._run(target, "query", target, filter='id == ""', limit=1, output_fields=["id"],
                              consistency_level=self.config.milvus_consistency, timeout=_HEALTH_TIMEOUT_S)  # fmt: skip
                self._answered.add(target)  # not asked again until the next outage
            except NotFound:
                continue  # deleted meanwhile
            except Unavailable:
                return target
        return None

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
        from pymilvus import DataType, MilvusClient

        info = collection_spec(
            name,
            dimension=dimension,
            metric=metric,
            index_type=index_type,
            hnsw_m=hnsw_m,
            hnsw_ef_search=hnsw_ef_search,
        )
        if info.dimension > MILVUS_MAX_DIMENSION:
            raise InvalidArgument(
                f"dimension must be 1..{MILVUS_MAX_DIMENSION} on the Milvus store (Milvus' limit), got {dimension}"
            )
        target = milvus_name(name)
        if self._run(None, "has_collection", target):
            raise already_exists(name)
        settings = {"facet_collection": name, "metric": info.metric, "index_type": info.index_type, "dimension": info.dimension,
                    "hnsw_m": info.hnsw_m, "hnsw_ef_search": info.hnsw_ef_search}  # fmt: skip
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=json.dumps(settings))
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("text", DataType.VARCHAR, max_length=MILVUS_MAX_VARCHAR_BYTES)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("filter_values", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=info.dimension)
        index = self._connect().prepare_index_params()
        params = {"M": info.hnsw_m, "efConstruction": HNSW_EF_CONSTRUCTION} if info.index_type == "hnsw" else {}
        index.add_index("vector", index_type=_INDEX[info.index_type], metric_type=_METRIC[info.metric], params=params)
        self._run(
            None,
            "create_collection",
            target,
            schema=schema,
            index_params=index,
            consistency_level=self.config.milvus_consistency,
            # creating includes loading it, which usually takes 2-3 s, but Milvus' target observer
            # sometimes skips its first check and finishes the load on its next tick, about 10 s
            # later: waiting only milvus_timeout_s (10 s) would leave a created, unanswered collection
            timeout=max(self.config.milvus_timeout_s, _LOAD_TIMEOUT_S),
        )
        return info

    def spec(self, name: str) -> CollectionInfo:
        check_collection_name(name)
        described = self._run(name, "describe_collection", milvus_name(name))
        settings = _settings(described.get("description", ""))
        if settings is None or settings.get("facet_collection") != name:
            raise not_found(name)
        return _info(settings, -1)

    def collection(self, name: str) -> CollectionInfo:
        info = self.spec(name)
        return _with_count(info, self._count(name))

    def _count(self, name: str) -> int:
        rows = self._run(
            name,
            "query",
            milvus_name(name),
            filter="",
            output_fields=["count(*)"],
            consistency_level=self.config.milvus_consistency,
        )
        return int(rows[0]["count(*)"])

    def list_collections(self) -> list[CollectionInfo]:
        """Facet's collections in the database (Milvus collections without Facet's description
        are not listed), with their counts. A collection deleted meanwhile (by another service
        process) is left out; any other failure is raised."""
        infos = []
        for target in self._run(None, "list_collections"):
            if not target.startswith(PREFIX):
                continue
            try:
                described = self._run(target, "describe_collection", target)
                settings = _settings(described.get("description", ""))
                if settings is None or milvus_name(str(settings.get("facet_collection"))) != target:
                    continue
                infos.append(_with_count(_info(settings, -1), self._count(str(settings["facet_collection"]))))
            except NotFound:
                continue
        return sorted(infos, key=lambda i: i.name)

    def delete_collection(self, name: str) -> int:
        count = self.collection(name).document_count
        self._run(name, "drop_collection", milvus_name(name))
        return count

    # -- documents ---------------------------------------------------------------------------

    def _existing(self, name: str, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _IDS_PER_EXPRESSION):
            chunk = ids[start : start + _IDS_PER_EXPRESSION]
            rows = self._run(name, "query", milvus_name(name), filter=_ids_expression(chunk), output_fields=["id"],
                             consistency_level=self.config.milvus_consistency)  # fmt: skip
            found.update(str(r["id"]) for r in rows)
        return found

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray,
        metadata: Sequence[Mapping[str, Any]],
    ) -> tuple[int, int]:
        """Insert or replace by id (Milvus' upsert: delete and insert in one request). Returns
        (written, of them new ids); the count of new ids is read just before the write, so
        concurrent writers to the same ids through other processes may make it approximate."""
        info = self.spec(name)
        vectors = prepare_vectors(info, vectors)
        for i, m in enumerate(metadata):
            for field, value in (("metadata", m), ("metadata (its filter values)", _filter_values(m))):
                size = len(json.dumps(value))
                if size > MILVUS_MAX_JSON_BYTES:
                    raise InvalidArgument(
                        f"documents[{i}].{field} is {size} bytes as JSON (with escapes); the Milvus store holds at most "
                        f"{MILVUS_MAX_JSON_BYTES} per document"
                    )
        existing = self._existing(name, ids)
        rows = [
            {"id": i, "text": t, "metadata": dict(m), "filter_values": _filter_values(m), "vector": v.tolist()}
            for i, t, m, v in zip(ids, texts, metadata, vectors, strict=True)
        ]
        self._run(name, "upsert", milvus_name(name), rows)
        return len(ids), len(ids) - len(existing)

    def get(self, name: str, ids: Sequence[str], include_vectors: bool = False) -> list[StoredDocument]:
        self.spec(name)
        fields = _DOCUMENT_FIELDS + (["vector"] if include_vectors else [])
        found: dict[str, StoredDocument] = {}
        for start in range(0, len(ids), _IDS_PER_EXPRESSION):
            chunk = ids[start : start + _IDS_PER_EXPRESSION]
            rows = self._run(name, "query", milvus_name(name), filter=_ids_expression(chunk), output_fields=fields,
                             consistency_level=self.config.milvus_consistency)  # fmt: skip
            for row in rows:
                found[str(row["id"])] = _document(row, include_vectors)
        return [found[i] for i in ids if i in found]

    def delete_documents(self, name: str, ids: Sequence[str]) -> int:
        self.spec(name)
        existing = sorted(self._existing(name, ids))
        for start in range(0, len(existing), _IDS_PER_EXPRESSION):
            self._run(
                name, "delete", milvus_name(name), filter=_ids_expression(existing[start : start + _IDS_PER_EXPRESSION])
            )
        return len(existing)

    def search(
        self,
        name: str,
        query: np.ndarray,
        top_k: int,
        filter: Mapping[str, Any] | None = None,
        include_vectors: bool = False,
    ) -> list[ScoredDocument]:
        """The top_k nearest documents among those matching `filter`, best first (see
        DocumentStore.search for the scores). A filtered HNSW search that returns fewer than
        min(top_k, matches) is repeated with ef raised 4-fold, up to Milvus' largest ef."""
        info = self.spec(name)
        vector = prepare_vectors(info, query[None, :])[0].tolist()
        expression = filter_expression(filter) if filter else ""
        fields = _DOCUMENT_FIELDS + (["vector"] if include_vectors else [])
        ef = max(info.hnsw_ef_search, top_k)
        wanted: int | None = None
        while True:
            params: dict[str, Any] = {
                "metric_type": _METRIC[info.metric],
                "params": {"ef": ef} if info.index_type == "hnsw" else {},
            }
            result = self._run(name, "search", milvus_name(name), data=[vector], limit=top_k, filter=expression, output_fields=fields,
                               search_params=params, consistency_level=self.config.milvus_consistency)  # fmt: skip
            hits = result[0]
            if len(hits) >= top_k or info.index_type == "flat" or ef >= MAX_HNSW_EF:
                break
            if wanted is None:
                wanted = min(top_k, self._matches(name, expression))
            if len(hits) >= wanted:
                break
            ef = min(ef * _WIDEN_FACTOR, MAX_HNSW_EF)
        return [
            ScoredDocument(str(h["id"]), float(h["distance"]), doc.text, doc.metadata, doc.vector)
            for h in hits
            for doc in [_document(h["entity"], include_vectors)]
        ]

    def _matches(self, name: str, expression: str) -> int:
        rows = self._run(name, "query", milvus_name(name), filter=expression, output_fields=["count(*)"],
                         consistency_level=self.config.milvus_consistency)  # fmt: skip
        return int(rows[0]["count(*)"])

    # -- what the embedded store keeps and Milvus does not -----------------------------------

    def dirty_collections(self) -> list[str]:
        return []  # Milvus persists its own indexes

    def save_index(self, name: str) -> bool:
        return False

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - closing a channel to a server that went away
                log.debug("closing the Milvus client: %s", exc)
        self._calls.shutdown(wait=False, cancel_futures=True)


_RECONNECT_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


class _ReconnectingGrpc:
    """The `grpc` module as pymilvus' connection code sees it: channels it opens get their own
    subchannel pool and a reconnect backoff of at most 2 s. gRPC's default backoff grows to
    120 s, so after an outage of a few minutes a client could find Milvus back up to two minutes
    late, and health would say NOT_SERVING that long. pymilvus offers no way to pass channel
    options (a channel passed in is deep-copied, which fails)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(grpc, name)

    @staticmethod
    def insecure_channel(target: str, options: Sequence[tuple[str, Any]] | None = None, compression: Any = None) -> grpc.Channel:
        return grpc.insecure_channel(target, [*(options or []), *_RECONNECT_OPTIONS], compression)

    @staticmethod
    def secure_channel(
        target: str, credentials: grpc.ChannelCredentials, options: Sequence[tuple[str, Any]] | None = None, compression: Any = None
    ) -> grpc.Channel:
        return grpc.secure_channel(target, credentials, [*(options or []), *_RECONNECT_OPTIONS], compression)


_RECONNECTING_GRPC = _ReconnectingGrpc()


def _settings(description: str) -> dict[str, Any] | None:
    try:
        settings = json.loads(description)
    except (TypeError, ValueError):
        return None
    return settings if isinstance(settings, dict) and "facet_collection" in settings else None


def _info(settings: Mapping[str, Any], count: int) -> CollectionInfo:
    return CollectionInfo(
        name=str(settings["facet_collection"]),
        metric=str(settings["metric"]),
        index_type=str(settings["index_type"]),
        dimension=int(settings["dimension"]),
        document_count=count,
        hnsw_m=int(settings["hnsw_m"]),
        hnsw_ef_search=int(settings["hnsw_ef_search"]),
    )


def _with_count(info: CollectionInfo, count: int) -> CollectionInfo:
    return dataclasses.replace(info, document_count=count)


def _filter_values(metadata: Mapping[str, Any]) -> dict[str, str]:
    values = {}
    for key, value in metadata.items():
        tagged = filter_value(value)
        if tagged is not None:
            values[key] = tagged
    return values


def _document(entity: Mapping[str, Any], include_vectors: bool) -> StoredDocument:
    vector = np.asarray(entity["vector"], dtype=np.float32) if include_vectors else None
    return StoredDocument(
        id=str(entity["id"]), text=str(entity["text"]), metadata=dict(entity["metadata"] or {}), vector=vector
    )
