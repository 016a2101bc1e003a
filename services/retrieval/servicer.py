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
from services.retrieval.config import RetrievalConfig
from services.retrieval.embedder import Embedder
from services.retrieval.store import COLLECTION_NAME, MAX_ID_CHARS, CollectionInfo, DocumentStore
from services.runtime.config import FacetConfig
from services.runtime.errors import InvalidArgument
from services.runtime.server import FacetService

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


def _struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def _plain(message: struct_pb2.Struct, what: str) -> dict[str, Any]:
    try:
        return json_format.MessageToDict(message)
    except ValueError as exc:  # NaN or infinity
        raise InvalidArgument(f"{what} must be JSON: {exc}") from None


def _check_collection(name: str) -> None:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(f"collection name {name!r} is invalid: use 1-128 characters from A-Z a-z 0-9 _ -")


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
            raise InvalidArgument(f"id {doc_id!r} appears twice in one call; send each id once")
        seen.add(doc_id)


class RetrievalService(retrieval_pb2_grpc.RetrievalServicer, FacetService):
    name = "retrieval"

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._limits = config.section(RetrievalConfig)
        self._backend = create_backend(config)
        self._embedder = Embedder(self._backend, self._limits)
        self._store: DocumentStore | None = None
        # Every store call runs on this one thread: SQLite and FAISS see one caller at a time.
        self._store_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        # Index files are written here, off the store thread, so a large write never stalls a search.
        self._index_writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer")
        self._saver: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def register(self, server: grpc.aio.Server) -> None:
        retrieval_pb2_grpc.add_RetrievalServicer_to_server(self, server)

    async def start(self) -> None:
        await self._embedder.load()
        data_dir = self._config.data_dir / "retrieval"
        self._store = await asyncio.get_running_loop().run_in_executor(self._store_thread, DocumentStore, data_dir, self._limits)
        self._saver = asyncio.get_running_loop().create_task(self._save_periodically())

    async def healthy(self) -> bool:
        return await self._backend.serving()

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
            except Exception:  # noqa: BLE001 - SQLite stays the source of truth; retry next round
                log.exception("saving indexes failed")

    async def _on_store(self, call: Callable[[DocumentStore], T]) -> T:
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

    async def Upsert(self, request: retrieval_pb2.UpsertRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.UpsertResponse:
        _check_collection(request.collection)
        docs = list(request.documents)
        if not docs:
            raise InvalidArgument("documents is empty; send at least one document")
        if len(docs) > self._limits.max_documents_per_request:
            raise InvalidArgument(
                f"{len(docs)} documents in one call; the limit is {self._limits.max_documents_per_request}: split the call"
            )
        _check_ids([d.id for d in docs], "documents.id")
        info = await self._on_store(lambda s: s.collection(request.collection))
        vectors = np.zeros((len(docs), info.dimension), dtype=np.float32)
        to_embed = []
        for i, doc in enumerate(docs):
            if len(doc.text) > self._limits.max_text_chars:
                raise InvalidArgument(
                    f"documents[{i}].text has {len(doc.text)} characters; the limit is {self._limits.max_text_chars}"
                )
            if len(doc.vector):
                if len(doc.vector) != info.dimension:
                    raise InvalidArgument(
                        f"documents[{i}].vector has dimension {len(doc.vector)}; collection '{info.name}' takes {info.dimension}"
                    )
                vectors[i] = doc.vector
            elif doc.text:
                to_embed.append(i)
            else:
                raise InvalidArgument(f"documents[{i}] has neither text nor vector")
        if not np.isfinite(vectors).all():
            raise InvalidArgument("document vectors must be finite (no NaN or inf)")
        if to_embed:
            if info.dimension != self._embedder.dimension:
                raise InvalidArgument(
                    f"collection '{info.name}' has dimension {info.dimension} but the embedding model makes "
                    f"{self._embedder.dimension}: send vectors for this collection"
                )
            for start in range(0, len(to_embed), self._limits.max_texts_per_request):
                rows = to_embed[start : start + self._limits.max_texts_per_request]
                embedded = await self._embedder.embed([docs[i].text for i in rows])
                vectors[rows] = embedded.vectors
        ids = [d.id for d in docs]
        texts = [d.text for d in docs]
        metadata = [_plain(d.metadata, f"documents[{i}].metadata") for i, d in enumerate(docs)]
        upserted, created = await self._on_store(lambda s: s.upsert(request.collection, ids, texts, vectors, metadata))
        return retrieval_pb2.UpsertResponse(upserted=upserted, created=created)

    async def Get(self, request: retrieval_pb2.GetRequest, context: grpc.aio.ServicerContext) -> retrieval_pb2.GetResponse:
        _check_collection(request.collection)
        ids = list(request.ids)
        _check_id_count(ids, self._limits.max_documents_per_request)
        docs = await self._on_store(lambda s: s.get(request.collection, ids, request.include_vectors))
        found = {d.id for d in docs}
        return retrieval_pb2.GetResponse(
            documents=[
                retrieval_pb2.Document(
                    id=d.id,
                    text=d.text,
                    metadata=_struct(d.metadata),
                    vector=d.vector.tolist() if d.vector is not None else [],
                )
                for d in docs
            ],
            missing_ids=[i for i in ids if i not in found],
        )

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
        top_k = request.top_k or DEFAULT_TOP_K  # proto3: 0 means unset
        if not 1 <= top_k <= self._limits.max_top_k:
            raise InvalidArgument(f"top_k must be 1..{self._limits.max_top_k}, got {request.top_k}")
        which = request.WhichOneof("query")
        if which == "text":
            info = await self._on_store(lambda s: s.collection(request.collection))
            if info.dimension != self._embedder.dimension:
                raise InvalidArgument(
                    f"collection '{info.name}' has dimension {info.dimension}; a text query embeds to "
                    f"{self._embedder.dimension}: send a vector"
                )
            query = (await self._embedder.embed([request.text], prompt=request.prompt)).vectors[0]
        elif which == "vector":
            query = tensor_to_numpy(request.vector, "vector").astype(np.float32, copy=False).reshape(-1)
        else:
            raise InvalidArgument("set the query: text or vector")
        filter = _plain(request.filter, "filter") if request.HasField("filter") else None
        hits = await self._on_store(
            lambda s: s.search(request.collection, query, top_k, filter, request.include_vectors)
        )
        return retrieval_pb2.SearchResponse(
            hits=[
                retrieval_pb2.Hit(
                    id=h.id,
                    score=h.score,
                    text=h.text,
                    metadata=_struct(h.metadata),
                    vector=h.vector.tolist() if h.vector is not None else [],
                )
                for h in hits
            ]
        )
