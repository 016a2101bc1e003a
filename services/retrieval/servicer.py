"""The Retrieval gRPC servicer: converts protobuf messages to domain calls and back, nothing more."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format, struct_pb2

from sdk._proto.facet.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from sdk._tensors import tensor_from_numpy, tensor_to_numpy
from services.backends import create_backend
from services.rerank.config import RerankConfig
from services.retrieval.collections import (
    COLLECTION_NAME,
    MAX_ID_CHARS,
    CollectionInfo,
    CollectionStore,
    ScoredDocument,
    StoredDocument,
    open_store,
)
from services.retrieval.config import RetrievalConfig
from services.retrieval.embedder import Embedder
from services.retrieval.reranking import RerankedHit, SearchReranker
from services.runtime.config import FacetConfig
from services.runtime.errors import FacetError, InvalidArgument, shown
from services.runtime.outputs import finite_output
from services.runtime.server import FacetService
from services.text import is_blank

log = logging.getLogger(__name__)
T = TypeVar("T")

_METRIC_TO_PROTO = {
    "cosine": retrieval_pb2.METRIC_COSINE,
    "dot": retrieval_pb2.METRIC_DOT,
    "l2": retrieval_pb2.METRIC_L2,
}
_METRIC_FROM_PROTO = {v: k for k, v in _METRIC_TO_PROTO.items()} | {retrieval_pb2.METRIC_UNSPECIFIED: "cosine"}
_INDEX_TO_PROTO = {"flat": retrieval_pb2.INDEX_TYPE_FLAT, "hnsw": retrieval_pb2.INDEX_TYPE_HNSW}
_INDEX_FROM_PROTO = {v: k for k, v in _INDEX_TO_PROTO.items()} | {retrieval_pb2.INDEX_TYPE_UNSPECIFIED: "flat"}
DEFAULT_TOP_K = 10
# How a Search's text is named in messages: the request's `query` oneof (its `text` case), the
# SDK's `search(collection, query, ...)` argument, and the rerank service's own word for it.
QUERY_FIELD = "query"
_VECTOR_BYTES_PER_DIMENSION = 4  # float32, packed; its tag and length are in DOCUMENT_OVERHEAD_BYTES
MAX_EXACT_INTEGER = 2**53  # a double holds every integer up to here exactly


def _collection_message(info: CollectionInfo) -> retrieval_pb2.Collection:
    return retrieval_pb2.Collection(
        name=info.name,
        metric=_METRIC_TO_PROTO[info.metric],
        index_type=_INDEX_TO_PROTO[info.index_type],
        dimension=info.dimension,
        document_count=info.document_count,
        hnsw_m=info.hnsw_m,
        hnsw_ef_search=info.hnsw_ef_search,
    )


def _document_message(d: StoredDocument) -> retrieval_pb2.Document:
    return retrieval_pb2.Document(
        id=d.id, text=d.text, metadata=_struct(d.metadata), vector=d.vector.tolist() if d.vector is not None else []
    )


def _hit_message(h: ScoredDocument) -> retrieval_pb2.Hit:
    return retrieval_pb2.Hit(
        id=h.id,
        score=h.score,
        text=h.text,
        metadata=_struct(h.metadata),
        vector=h.vector.tolist() if h.vector is not None else [],
    )


def _reranked_hit_message(r: RerankedHit) -> retrieval_pb2.Hit:
    message = _hit_message(r.hit)
    message.retrieval_rank = r.retrieval_rank
    if r.probability is not None:
        message.rerank_probability = r.probability
    return message


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def _plain(message: struct_pb2.Struct, what: str) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(message)
    except ValueError as exc:  # NaN or infinity
        raise InvalidArgument(f"{what} must be JSON: {exc}") from None


def _check_json(value: Any, what: str, depth_left: int, max_depth: int) -> None:
    """Numbers must be stored exactly (a protobuf Struct number is a double); nesting is bounded."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        if abs(value) > MAX_EXACT_INTEGER:
            raise InvalidArgument(
                f"{what} is {value!r}: numbers must lie within +-2**53 ({MAX_EXACT_INTEGER}) to be stored exactly; "
                "send larger integers as strings"
            )
        return
    if depth_left == 0:
        raise InvalidArgument(f"{what} nests deeper than retrieval.max_metadata_depth ({max_depth}) lists or objects")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, f"{what}.{key}", depth_left - 1, max_depth)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{what}[{i}]", depth_left - 1, max_depth)


def _check_vectors(vectors: np.ndarray, what: str, max_norm: float) -> None:
    """Finite, and small enough that no float32 score (dot product, squared distance) overflows."""
    if not np.isfinite(vectors).all():
        raise InvalidArgument(f"{what} must be finite (no NaN or inf)")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=-1)
    if (norms > max_norm).any():
        raise InvalidArgument(
            f"{what} has L2 norm {float(norms.max()):.3g}; the limit is retrieval.max_vector_norm ({max_norm:g}), "
            "above which float32 scores overflow: scale the vector down"
        )


def _check_collection(name: str) -> None:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(f"collection name {shown(name)!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ -")


def _check_id_count(ids: list[str], limit: int) -> None:
    if not ids:
        raise InvalidArgument("ids is empty; send at least one id")
    if len(ids) > limit:
        raise InvalidArgument(f"{len(ids)} ids in one call; the limit is {limit}: split the call")
    _check_ids(ids)


def _check_ids(ids: list[str], what: str = "ids") -> None:
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        if not doc_id or len(doc_id) > MAX_ID_CHARS:
            raise InvalidArgument(f"{what}[{i}] must be 1..{MAX_ID_CHARS} characters")
        if doc_id in seen:
            raise InvalidArgument(f"id {shown(doc_id)!r} appears twice in one call; send each id once")
        seen.add(doc_id)


class RetrievalService(retrieval_pb2_grpc.RetrievalServicer, FacetService):
    name = "retrieval"

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._limits = config.section(RetrievalConfig)
        self._backend = create_backend(config)
        self._embedder = Embedder(self._backend, self._limits)
        self._reranking = SearchReranker(self._backend, config.section(RerankConfig), config.model_repository)
        self._store: CollectionStore | None = None
        # Store calls run here: on the embedded store one thread (SQLite and FAISS see one caller
        # at a time); on Milvus, retrieval.milvus_concurrency network calls at once.
        workers = self._limits.milvus_concurrency if self._limits.store == "milvus" else 1
        self._store_thread = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="store")
        # Index files are written here, off the store thread, so a large write never stalls a search.
        self._index_writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        self._saver: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServicer_to_server(self, server)

    async def start(self) -> None:
        await self._embedder.load()
        data_dir = self._config.data_dir / "retrieval"
        self._store = await asyncio.get_running_loop().run_in_executor(
            self._store_thread, open_store, self._limits, data_dir
        )
        self._saver = asyncio.get_running_loop().create_task(self._save_periodically())

    async def healthy(self) -> bool:
        # the store's check on its own thread: health answers while store calls queue
        store = self._store
        return store is not None and await self._backend.serving() and await asyncio.to_thread(store.healthy)

    async def stop(self) -> None:
        if self._saver is not None:
            self._saver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._saver
        self._index_writer.shutdown(wait=True)  # before close() writes the final indexes
        if self._store is not None:
            await self._on_store(lambda s: s.close())
        self._store_thread.shutdown(wait=True)
        await self._backend.close()

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._limits.index_save_interval_s)
            try:
                store = self._store
                assert store is not None
                for name in await self._on_store(lambda s: s.dirty_collections()):
                    await asyncio.get_running_loop().run_in_executor(self._index_writer, store.save_index, name)
            except FacetError as exc:  # a full disk, a read-only file: one clear line, retried next round
                log.warning("saving indexes failed: %s", exc.message)
            except Exception:  # noqa: BLE001 - SQLite stays the source of truth; retry next round
                log.exception("saving indexes failed")

    async def _on_store(self, call: Callable[[CollectionStore], T]) -> T:
        store = self._store
        assert store is not None
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, call, store)

    # -- RPCs --------------------------------------------------------------------------------

    async def Embed(self, request: retrieval_pb2.EmbedRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.EmbedResponse:
        result = await self._embedder.embed(
            list(request.texts),
            normalize=request.normalize if request.HasField("normalize") else True,
            truncate=request.truncate if request.HasField("truncate") else True,
            prompt=request.prompt,
        )
        return retrieval_pb2.EmbedResponse(
            embeddings=tensor_from_numpy(result.vectors),
            token_counts=result.token_counts.tolist(),
            truncated=bool(result.truncated.any()),
        )

    async def GetModel(self, request: retrieval_pb2.GetModelRequest, context: grpc.aio.ServicerContext) -> common_pb2.ModelInfo:
        meta = self._embedder.metadata
        assert meta is not None
        return common_pb2.ModelInfo(
            name=meta.name,
            version=meta.version,
            kind=meta.kind,
            source=meta.source,
            properties={k: str(v) for k, v in meta.properties.items()},
        )

    async def CreateCollection(
        self, request: retrieval_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.Collection:
        if request.metric not in _METRIC_FROM_PROTO:
            raise InvalidArgument(f"unknown metric {request.metric}")
        if request.index_type not in _INDEX_FROM_PROTO:
            raise InvalidArgument(f"unknown index_type {request.index_type}")
        if request.dimension < 0:
            raise InvalidArgument("dimension must be >= 0 (0: the embedding model's dimension)")
        dimension = request.dimension or self._embedder.dimension
        info = await self._on_store(
            lambda s: s.create_collection(
                request.name,
                dimension=dimension,
                metric=_METRIC_FROM_PROTO[request.metric],
                index_type=_INDEX_FROM_PROTO[request.index_type],
                hnsw_m=request.hnsw_m,
                hnsw_ef_search=request.hnsw_ef_search,
            )
        )
        return _collection_message(info)

    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ListCollectionsResponse:
        infos = await self._on_store(lambda s: s.list_collections())
        return retrieval_pb2.ListCollectionsResponse(collections=[_collection_message(i) for i in infos])

    async def DeleteCollection(
        self, request: retrieval_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteCollectionResponse:
        _check_collection(request.name)
        deleted = await self._on_store(lambda s: s.delete_collection(request.name))
        return retrieval_pb2.DeleteCollectionResponse(deleted_documents=deleted)

    def _metadata(self, doc: retrieval_pb2.Document, what: str) -> dict[str, Any]:
        limits = self._limits
        size = doc.metadata.ByteSize()
        if size > limits.max_metadata_bytes:
            raise InvalidArgument(
                f"{what} has {size} bytes; the limit is retrieval.max_metadata_bytes ({limits.max_metadata_bytes})"
            )
        metadata = _plain(doc.metadata, what)
        _check_json(metadata, what, limits.max_metadata_depth, limits.max_metadata_depth)
        return metadata

    async def Upsert(self, request: retrieval_pb2.UpsertRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.UpsertResponse:
        # Every cheap check first: nothing is embedded for a request that would be refused.
        _check_collection(request.collection)
        docs = list(request.documents)
        limits = self._limits
        if not docs:
            raise InvalidArgument("documents is empty; send at least one document")
        if len(docs) > limits.max_documents_per_request:
            raise InvalidArgument(
                f"{len(docs)} documents in one call; the limit is {limits.max_documents_per_request}: split the call"
            )
        _check_ids([d.id for d in docs], "documents.id")
        # Thousands of documents of megabytes: checked on a worker thread, not the event loop.
        to_embed, metadata = await asyncio.to_thread(self._check_documents, docs)
        if to_embed:
            self._embedder.check_budget(sum(len(docs[i].text) for i in to_embed), "documents.text")
        info = await self._on_store(lambda s: s.spec(request.collection))
        vectors = await asyncio.to_thread(self._document_vectors, docs, info)
        if to_embed:
            if info.dimension != self._embedder.dimension:
                raise InvalidArgument(
                    f"collection '{info.name}' has dimension {info.dimension} but the embedding model makes "
                    f"{self._embedder.dimension}: send vectors for this collection"
                )
            for start in range(0, len(to_embed), limits.max_texts_per_request):
                rows = to_embed[start : start + limits.max_texts_per_request]
                embedded = await self._embedder.embed([docs[i].text for i in rows], names=[f"documents[{i}].text" for i in rows])
                vectors[rows] = embedded.vectors
        ids = [d.id for d in docs]
        texts = [d.text for d in docs]
        upserted, created = await self._on_store(lambda s: s.upsert(request.collection, ids, texts, vectors, metadata))
        return retrieval_pb2.UpsertResponse(upserted=upserted, created=created)

    def _check_documents(self, docs: list[retrieval_pb2.Document]) -> tuple[list[int], list[dict[str, Any]]]:
        """Texts and metadata of an Upsert: (rows to embed, plain metadata per row)."""
        limits = self._limits
        to_embed: list[int] = []
        for i, doc in enumerate(docs):
            if len(doc.text) > limits.max_text_chars:
                raise InvalidArgument(
                    f"documents[{i}].text has {len(doc.text)} characters; the limit is {limits.max_text_chars}"
                )
            text_bytes = len(doc.text.encode("utf-8"))
            if text_bytes > limits.max_document_text_bytes:
                raise InvalidArgument(
                    f"documents[{i}].text has {text_bytes} bytes (UTF-8); the limit is "
                    f"retrieval.max_document_text_bytes ({limits.max_document_text_bytes})"
                )
            if not len(doc.vector):
                if is_blank(doc.text):
                    raise InvalidArgument(
                        f"documents[{i}] has neither a vector nor text to embed (its text is blank: empty, or only "
                        "whitespace, control or zero-width characters)"
                    )
                to_embed.append(i)
        return to_embed, [self._metadata(d, f"documents[{i}].metadata") for i, d in enumerate(docs)]

    def _document_vectors(self, docs: list[retrieval_pb2.Document], info: CollectionInfo) -> np.ndarray:
        """float32 [len(docs), dimension]: the vectors sent, checked; zeros for rows to embed."""
        vectors = np.zeros((len(docs), info.dimension), dtype=np.float32)
        for i, doc in enumerate(docs):
            if len(doc.vector):
                if len(doc.vector) != info.dimension:
                    raise InvalidArgument(
                        f"documents[{i}].vector has dimension {len(doc.vector)}; collection '{info.name}' takes {info.dimension}"
                    )
                vectors[i] = doc.vector
                _check_vectors(vectors[i], f"documents[{i}].vector", self._limits.max_vector_norm)
        return vectors

    async def Get(self, request: retrieval_pb2.GetRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.GetResponse:
        _check_collection(request.collection)
        ids = list(request.ids)
        _check_id_count(ids, self._limits.max_documents_per_request)
        if request.include_vectors:
            info = await self._on_store(lambda s: s.spec(request.collection))
            fit = self._limits.reply_documents(_VECTOR_BYTES_PER_DIMENSION * info.dimension)
            if len(ids) > fit:
                raise InvalidArgument(
                    f"{len(ids)} ids with include_vectors: at most {fit} documents with {info.dimension}-dimensional "
                    "vectors fit in one reply; split the call"
                )
        docs = await self._on_store(lambda s: s.get(request.collection, ids, request.include_vectors))
        found = {d.id for d in docs}
        # Up to max_documents_per_request documents near the message limit: built off the event loop.
        documents = await asyncio.to_thread(lambda: [_document_message(d) for d in docs])
        return retrieval_pb2.GetResponse(documents=documents, missing_ids=[i for i in ids if i not in found])

    async def DeleteDocuments(
        self, request: retrieval_pb2.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteDocumentsResponse:
        _check_collection(request.collection)
        ids = list(request.ids)
        _check_id_count(ids, self._limits.max_documents_per_request)
        deleted = await self._on_store(lambda s: s.delete_documents(request.collection, ids))
        return retrieval_pb2.DeleteDocumentsResponse(deleted=deleted)

    async def Search(self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.SearchResponse:
        _check_collection(request.collection)
        limits = self._limits
        top_k = request.top_k if request.HasField("top_k") else DEFAULT_TOP_K  # an explicit 0 is refused
        if not 1 <= top_k <= limits.max_top_k:
            raise InvalidArgument(f"top_k must be 1..{limits.max_top_k} (retrieval.max_top_k), got {top_k}")
        filter = None
        if request.HasField("filter"):
            if len(request.filter.fields) > limits.max_filter_keys:
                raise InvalidArgument(
                    f"filter has {len(request.filter.fields)} keys; the limit is retrieval.max_filter_keys ({limits.max_filter_keys})"
                )
            filter = _plain(request.filter, "filter")
            for key, value in filter.items():
                if isinstance(value, (dict, list)):
                    raise InvalidArgument(
                        f"filter value of {shown(key)!r} must be a string, number, boolean or null (equality), not {type(value).__name__}"
                    )
                _check_json(value, f"filter.{key}", 0, 0)
        which = request.WhichOneof("query")
        candidates = self._candidates(request, top_k)
        if request.rerank and which != "text":
            raise InvalidArgument("rerank needs a text query: the reranker reads the query's text, not a vector")
        if which == "text":
            self._embedder.validate([request.text], prompt=request.prompt, names=[QUERY_FIELD])
            if request.rerank:  # before any embedding: no reranker (or a query it cannot read), no work
                await self._reranking.ready(request.reranker, request.text)
            info = await self._on_store(lambda s: s.spec(request.collection))
            if info.dimension != self._embedder.dimension:
                raise InvalidArgument(
                    f"collection '{info.name}' has dimension {info.dimension}; a text query embeds to "
                    f"{self._embedder.dimension}: send a vector"
                )
            query = (await self._embedder.embed([request.text], prompt=request.prompt, names=[QUERY_FIELD])).vectors[0]
        elif which == "vector":
            query = tensor_to_numpy(request.vector, "vector").astype(np.float32, copy=False).reshape(-1)
            _check_vectors(query, "vector", limits.max_vector_norm)
            info = await self._on_store(lambda s: s.spec(request.collection))
        else:
            raise InvalidArgument("set the query: text or vector")
        if request.include_vectors:
            fit = limits.reply_documents(_VECTOR_BYTES_PER_DIMENSION * info.dimension)
            if top_k > fit:
                raise InvalidArgument(
                    f"top_k {top_k} with include_vectors: at most {fit} hits with {info.dimension}-dimensional vectors "
                    "fit in one reply; ask for fewer"
                )
        hits = await self._on_store(lambda s: s.search(request.collection, query, candidates, filter, request.include_vectors))
        finite_output(f"the scores of a search of collection '{request.collection}'", [h.score for h in hits])
        if not request.rerank:
            return retrieval_pb2.SearchResponse(hits=await asyncio.to_thread(lambda: [_hit_message(h) for h in hits]))
        reranked, reranker = await self._reranking.rerank(request.text, hits, top_k, request.reranker)
        return retrieval_pb2.SearchResponse(
            hits=await asyncio.to_thread(lambda: [_reranked_hit_message(h) for h in reranked]), reranker=reranker
        )

    def _candidates(self, request: retrieval_pb2.SearchRequest, top_k: int) -> int:
        """How many nearest documents the store returns: top_k, or with rerank the candidates the
        reranker reads. Raises InvalidArgument for candidates out of range, or set without rerank."""
        limits = self._limits
        if not request.rerank:
            for field, given in (("candidates", request.HasField("candidates")), ("reranker", bool(request.reranker))):
                if given:
                    raise InvalidArgument(f"{field} is read only with rerank=true; set rerank, or leave {field} out")
            return top_k
        candidates = (
            request.candidates
            if request.HasField("candidates")
            else max(top_k, min(limits.rerank_candidates, limits.max_top_k))
        )
        if not top_k <= candidates <= limits.max_top_k:
            raise InvalidArgument(
                f"candidates must be top_k ({top_k})..{limits.max_top_k} (retrieval.max_top_k), got {candidates}"
            )
        return candidates
