"""Request building and response parsing for the Retrieval service, shared by Client and AsyncClient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format, struct_pb2

from sdk._call import Call
from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import common_pb2, retrieval_pb2
from sdk._tensors import tensor_from_numpy, tensor_to_numpy
from sdk._types import Collection, Document, Hit, ModelInfo, UpsertResult

R = TypeVar("R")
SERVICE = "retrieval"

_METRICS = {"cosine": retrieval_pb2.METRIC_COSINE, "dot": retrieval_pb2.METRIC_DOT, "l2": retrieval_pb2.METRIC_L2}
_METRIC_NAMES = {v: k for k, v in _METRICS.items()}
_INDEX_TYPES = {"flat": retrieval_pb2.INDEX_TYPE_FLAT, "hnsw": retrieval_pb2.INDEX_TYPE_HNSW}
_INDEX_NAMES = {v: k for k, v in _INDEX_TYPES.items()}


def _struct(data: Mapping[str, Any] | None, what: str) -> struct_pb2.Struct | None:
    if data is None:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(dict(data))
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{what} must be JSON-like (str, number, bool, None, list, dict): {exc}") from None
    return struct


def _vector(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None or len(values) == 0 else np.asarray(values, dtype=np.float32)


def _hit(h: retrieval_pb2.Hit) -> Hit:
    return Hit(id=h.id, score=h.score, text=h.text, metadata=json_format.MessageToDict(h.metadata), vector=_vector(h.vector))


def _document(d: retrieval_pb2.Document) -> Document:
    return Document(id=d.id, text=d.text, metadata=json_format.MessageToDict(d.metadata), vector=_vector(d.vector))


def _collection(c: retrieval_pb2.Collection) -> Collection:
    return Collection(
        name=c.name,
        metric=_METRIC_NAMES.get(c.metric, "cosine"),
        index_type=_INDEX_NAMES.get(c.index_type, "flat"),
        dimension=c.dimension,
        document_count=c.document_count,
        hnsw_m=c.hnsw_m,
        hnsw_ef_search=c.hnsw_ef_search,
    )


def embed(texts: Sequence[str], normalize: bool, truncate: bool, prompt: str) -> Call[np.ndarray]:
    if isinstance(texts, str):
        raise InvalidArgument("texts must be a list of strings, not one string: embed([text])")
    request = retrieval_pb2.EmbedRequest(texts=list(texts), normalize=normalize, truncate=truncate, prompt=prompt)
    return Call(SERVICE, "Embed", request, lambda r: tensor_to_numpy(r.embeddings, "embeddings"))


def get_model() -> Call[ModelInfo]:
    def parse(r: common_pb2.ModelInfo) -> ModelInfo:
        return ModelInfo(name=r.name, version=r.version, kind=r.kind, source=r.source, properties=dict(r.properties))

    return Call(SERVICE, "GetModel", retrieval_pb2.GetModelRequest(), parse)


def create_collection(
    name: str, metric: str, index_type: str, dimension: int, hnsw_m: int, hnsw_ef_search: int
) -> Call[Collection]:
    if metric not in _METRICS:
        raise InvalidArgument(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
    if index_type not in _INDEX_TYPES:
        raise InvalidArgument(f"index_type must be one of {sorted(_INDEX_TYPES)}, got {index_type!r}")
    request = retrieval_pb2.CreateCollectionRequest(
        name=name,
        metric=_METRICS[metric],
        index_type=_INDEX_TYPES[index_type],
        dimension=dimension,
        hnsw_m=hnsw_m,
        hnsw_ef_search=hnsw_ef_search,
    )
    return Call(SERVICE, "CreateCollection", request, _collection)


def list_collections() -> Call[list[Collection]]:
    return Call(
        SERVICE, "ListCollections", retrieval_pb2.ListCollectionsRequest(), lambda r: [_collection(c) for c in r.collections]
    )


def delete_collection(name: str) -> Call[int]:
    return Call(
        SERVICE, "DeleteCollection", retrieval_pb2.DeleteCollectionRequest(name=name), lambda r: int(r.deleted_documents)
    )


def upsert(
    collection: str,
    ids: Sequence[str],
    texts: Sequence[str] | None,
    vectors: np.ndarray | Sequence[Sequence[float]] | None,
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> Call[UpsertResult]:
    n = len(ids)
    for name, values in (("texts", texts), ("vectors", vectors), ("metadata", metadata)):
        if values is not None and len(values) != n:
            raise InvalidArgument(f"{name} has {len(values)} entries but ids has {n}")
    if texts is None and vectors is None:
        raise InvalidArgument("give texts, vectors or both")
    array = None if vectors is None else np.asarray(vectors, dtype=np.float32)
    if array is not None and array.ndim != 2:
        raise InvalidArgument(f"vectors must be 2-D [len(ids), dimension], got shape {array.shape}")
    documents = []
    for i, doc_id in enumerate(ids):
        doc = retrieval_pb2.Document(id=doc_id, text=texts[i] if texts is not None else "")
        if array is not None:
            doc.vector.extend(array[i].tolist())
        meta = _struct(metadata[i] if metadata is not None else None, f"metadata[{i}]")
        if meta is not None:
            doc.metadata.CopyFrom(meta)
        documents.append(doc)
    request = retrieval_pb2.UpsertRequest(collection=collection, documents=documents)
    return Call(SERVICE, "Upsert", request, lambda r: UpsertResult(upserted=int(r.upserted), created=int(r.created)))


def get(collection: str, ids: Sequence[str], include_vectors: bool) -> Call[list[Document]]:
    request = retrieval_pb2.GetRequest(collection=collection, ids=list(ids), include_vectors=include_vectors)
    return Call(SERVICE, "Get", request, lambda r: [_document(d) for d in r.documents])


def delete_documents(collection: str, ids: Sequence[str]) -> Call[int]:
    request = retrieval_pb2.DeleteDocumentsRequest(collection=collection, ids=list(ids))
    return Call(SERVICE, "DeleteDocuments", request, lambda r: int(r.deleted))


def search(
    collection: str,
    query: str | np.ndarray | Sequence[float],
    top_k: int,
    filter: Mapping[str, Any] | None,
    prompt: str,
    include_vectors: bool,
) -> Call[list[Hit]]:
    request = retrieval_pb2.SearchRequest(collection=collection, top_k=top_k, prompt=prompt, include_vectors=include_vectors)
    if isinstance(query, str):
        request.text = query
    else:
        request.vector.CopyFrom(tensor_from_numpy(np.asarray(query, dtype=np.float32).reshape(-1)))
    struct = _struct(filter, "filter")
    if struct is not None:
        request.filter.CopyFrom(struct)
    return Call(SERVICE, "Search", request, lambda r: [_hit(h) for h in r.hits])
