"""Embedding retrieval (`facet.v1.Retrieval`): embed texts, keep collections of documents, search them.

The service embeds with one sentence-embedding model (all-MiniLM-L6-v2 by default) and is
evaluated with RAR-b's multiple-choice retrieval protocol (Xiao et al., 2024, "RAR-b: Reasoning
as Retrieval Benchmark"; `facet eval rarb-mcr`): an instruction is given as `prompt` on queries
only. Limits named below are keys of the service's `[retrieval]` config section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import common_pb2, retrieval_pb2, retrieval_pb2_grpc
from sdk._struct import from_struct, to_struct
from sdk._tensors import tensor_from_numpy, tensor_to_numpy
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

# Retried on UNAVAILABLE (sdk._retry): reads, Embed, and writes by id (Upsert, DeleteDocuments:
# sent twice they leave the same state; after a retry, `created` / the deleted count say what
# the last attempt changed). Not CreateCollection / DeleteCollection: a retry after a lost
# reply would answer AlreadyExists / NotFound.
SERVICE = Service(
    "retrieval",
    retrieval_pb2_grpc.RetrievalStub,
    idempotent=frozenset({"Embed", "GetModel", "ListCollections", "Upsert", "Get", "DeleteDocuments", "Search"}),
)

# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: the document's id.
        score: similarity to the query under the collection's metric: cosine or dot product
            (higher is closer), or squared Euclidean distance for "l2" (lower is closer).
        text: the document's text ("" for a document stored by vector alone).
        metadata: the document's metadata, JSON-like; integral numbers come back as int, others
            as float (protobuf Struct keeps doubles: 3.0 stored comes back 3).
        vector: float32 [dimension], the stored vector, when asked for with include_vectors.
        rerank_probability: with `search(rerank=True)`, the reranker's calibrated probability
            (0..1) that the document is relevant; hits come ordered by it. None without rerank,
            and for a document without text (the reranker reads text).
        retrieval_rank: with `search(rerank=True)`, the hit's 0-based position in the vector
            search before reranking; None without rerank.
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None
    rerank_probability: float | None = None
    retrieval_rank: int | None = None


class SearchResult(list[Hit]):
    """The hits of one `search`: a list (indexing, slicing, `len`, `==` with a list of hits all
    work as before), plus which reranker ordered them, as `RerankResult.model` says for `rerank`.

    Attributes:
        reranker: with `search(rerank=True)`, the name of the cross-encoder that ordered the hits
            (the one named by `reranker=`, or the service's default, `rerank.model`); None
            without rerank.
    """

    reranker: str | None

    def __init__(self, hits: Iterable[Hit] = (), reranker: str | None = None) -> None:
        super().__init__(hits)
        self.reranker = reranker

    def __repr__(self) -> str:
        return f"SearchResult({list.__repr__(self)}, reranker={self.reranker!r})"


@dataclasses.dataclass(frozen=True)
class Document:
    """One stored document.

    Attributes:
        id: unique in its collection.
        text: the document's text ("" for a document stored by vector alone).
        metadata: JSON-like; integral numbers come back as int, others as float (protobuf
            Struct keeps doubles: 3.0 stored comes back 3).
        vector: float32 [dimension], the stored vector, when asked for with include_vectors.
    """

    id: str
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Collection:
    """A collection of documents and its index.

    Attributes:
        name: letters, digits, `_` and `-`.
        metric: "cosine", "dot" or "l2" (squared Euclidean distance).
        index_type: "flat" (exact search) or "hnsw" (approximate, FAISS HNSW).
        dimension: length of every vector in it.
        document_count: documents it holds.
        hnsw_m: HNSW collections: graph degree (neighbours per node); 0 for flat.
        hnsw_ef_search: HNSW collections: search breadth (candidates visited); 0 for flat.
    """

    name: str
    metric: str
    index_type: str
    dimension: int
    document_count: int
    hnsw_m: int = 0
    hnsw_ef_search: int = 0


@dataclasses.dataclass(frozen=True)
class UpsertResult:
    """What an upsert did.

    Attributes:
        upserted: documents written (all that were sent).
        created: of those, ids that did not exist before; the rest were replaced.
    """

    upserted: int
    created: int


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A model the service serves from its model repository.

    Attributes:
        name: the model's directory name in the repository, e.g. "all-minilm-l6-v2".
        version: the numeric version directory served.
        kind: e.g. "embedding".
        source: where the weights came from.
        properties: kind-specific facts as strings, e.g. "dimension" and "max_seq_length"
            (tokens) for an embedding model.
    """

    name: str
    version: int
    kind: str
    source: str
    properties: dict[str, str]


# -- requests and responses ---------------------------------------------------------------------

_METRICS = {"cosine": retrieval_pb2.METRIC_COSINE, "dot": retrieval_pb2.METRIC_DOT, "l2": retrieval_pb2.METRIC_L2}
_METRIC_NAMES = {v: k for k, v in _METRICS.items()}
_INDEX_TYPES = {"flat": retrieval_pb2.INDEX_TYPE_FLAT, "hnsw": retrieval_pb2.INDEX_TYPE_HNSW}
_INDEX_NAMES = {v: k for k, v in _INDEX_TYPES.items()}


def _vector(values: Sequence[float]) -> np.ndarray | None:
    return None if len(values) == 0 else np.asarray(values, dtype=np.float32)


def _hit(h: retrieval_pb2.Hit) -> Hit:
    return Hit(
        id=h.id,
        score=h.score,
        text=h.text,
        metadata=from_struct(h.metadata),
        vector=_vector(h.vector),
        rerank_probability=h.rerank_probability if h.HasField("rerank_probability") else None,
        retrieval_rank=h.retrieval_rank if h.HasField("retrieval_rank") else None,
    )


def _document(d: retrieval_pb2.Document) -> Document:
    return Document(id=d.id, text=d.text, metadata=from_struct(d.metadata), vector=_vector(d.vector))


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


def _model_info_call() -> Call[ModelInfo]:
    def parse(r: common_pb2.ModelInfo) -> ModelInfo:
        return ModelInfo(name=r.name, version=r.version, kind=r.kind, source=r.source, properties=dict(r.properties))

    return Call(SERVICE, "GetModel", retrieval_pb2.GetModelRequest(), parse)


def _embed_call(texts: Sequence[str], normalize: bool, truncate: bool, prompt: str) -> Call[np.ndarray]:
    request = retrieval_pb2.EmbedRequest(
        texts=check.texts(texts, "texts"),
        normalize=check.flag(normalize, "normalize"),
        truncate=check.flag(truncate, "truncate"),
        prompt=check.text(prompt, "prompt"),
    )
    return Call(SERVICE, "Embed", request, lambda r: tensor_to_numpy(r.embeddings, "embeddings"))


def _create_collection_call(
    name: str, metric: str, index_type: str, dimension: int, hnsw_m: int, hnsw_ef_search: int
) -> Call[Collection]:
    request = retrieval_pb2.CreateCollectionRequest(
        name=check.text(name, "name"),
        metric=_METRICS[check.choice(metric, "metric", _METRICS)],
        index_type=_INDEX_TYPES[check.choice(index_type, "index_type", _INDEX_TYPES)],
        dimension=check.integer(dimension, "dimension"),
        hnsw_m=check.integer(hnsw_m, "hnsw_m"),
        hnsw_ef_search=check.integer(hnsw_ef_search, "hnsw_ef_search"),
    )
    return Call(SERVICE, "CreateCollection", request, _collection)


def _upsert_call(
    collection: str,
    ids: Sequence[str],
    texts: Sequence[str] | None,
    vectors: np.ndarray | Sequence[Sequence[float]] | None,
    metadata: Sequence[Mapping[str, Any] | None] | None,
) -> Call[UpsertResult]:
    collection = check.text(collection, "collection")
    ids = check.texts(ids, "ids")
    n = len(ids)
    texts = None if texts is None else check.texts(texts, "texts")
    array = None if vectors is None else check.float_array(vectors, "vectors", ndim=2, shape="[len(ids), dimension]")
    metas = None if metadata is None else check.json_objects(metadata, "metadata", n)
    for name, values in (("texts", texts), ("vectors", array)):
        if values is not None and len(values) != n:
            raise InvalidArgument(f"{name} has {len(values)} entries but ids has {n}")
    if texts is None and array is None:
        raise InvalidArgument("give texts, vectors or both")
    documents = []
    for i, doc_id in enumerate(ids):
        doc = retrieval_pb2.Document(id=doc_id, text=texts[i] if texts is not None else "")
        if array is not None:
            doc.vector.extend(array[i].tolist())
        meta = to_struct(metas[i] if metas is not None else None, f"metadata[{i}]")
        if meta is not None:
            doc.metadata.CopyFrom(meta)
        documents.append(doc)
    request = retrieval_pb2.UpsertRequest(collection=collection, documents=documents)
    return Call(SERVICE, "Upsert", request, lambda r: UpsertResult(upserted=int(r.upserted), created=int(r.created)))


def _search_call(
    collection: str,
    query: str | np.ndarray | Sequence[float],
    top_k: int,
    filter: Mapping[str, Any] | None,
    prompt: str,
    include_vectors: bool,
    rerank: bool = False,
    candidates: int | None = None,
    reranker: str | None = None,
) -> Call[SearchResult]:
    request = retrieval_pb2.SearchRequest(
        collection=check.text(collection, "collection"),
        top_k=check.integer(top_k, "top_k", low=1),
        prompt=check.text(prompt, "prompt"),
        include_vectors=check.flag(include_vectors, "include_vectors"),
        rerank=check.flag(rerank, "rerank"),
        reranker=check.text(reranker or "", "reranker"),
    )
    count = check.optional_integer(candidates, "candidates", low=1)
    if count is not None:
        request.candidates = count
    if isinstance(query, str):
        request.text = check.text(query, "query")
    else:
        vector = check.float_array(query, "query", ndim=None, shape="[dimension] (or a text)")
        if not (vector.ndim == 1 or (vector.ndim == 2 and len(vector) == 1)):
            raise InvalidArgument(f"query must be a text or a vector [dimension], got shape {list(vector.shape)}")
        request.vector.CopyFrom(tensor_from_numpy(vector.reshape(-1)))
    struct = to_struct(None if filter is None else check.json_object(filter, "filter"), "filter")
    if struct is not None:
        request.filter.CopyFrom(struct)
    return Call(
        SERVICE, "Search", request, lambda r: SearchResult((_hit(h) for h in r.hits), reranker=r.reranker or None)
    )


def _list_collections_call() -> Call[list[Collection]]:
    request = retrieval_pb2.ListCollectionsRequest()
    return Call(SERVICE, "ListCollections", request, lambda r: [_collection(c) for c in r.collections])


def _delete_collection_call(name: str) -> Call[int]:
    request = retrieval_pb2.DeleteCollectionRequest(name=check.text(name, "name"))
    return Call(SERVICE, "DeleteCollection", request, lambda r: int(r.deleted_documents))


def _get_call(collection: str, ids: Sequence[str], include_vectors: bool) -> Call[list[Document]]:
    request = retrieval_pb2.GetRequest(
        collection=check.text(collection, "collection"),
        ids=check.texts(ids, "ids"),
        include_vectors=check.flag(include_vectors, "include_vectors"),
    )
    return Call(SERVICE, "Get", request, lambda r: [_document(d) for d in r.documents])


def _delete_call(collection: str, ids: Sequence[str]) -> Call[int]:
    request = retrieval_pb2.DeleteDocumentsRequest(
        collection=check.text(collection, "collection"), ids=check.texts(ids, "ids")
    )
    return Call(SERVICE, "DeleteDocuments", request, lambda r: int(r.deleted))


# -- methods ------------------------------------------------------------------------------------


class RetrievalMethods(SyncTransport):
    """The retrieval methods of `sdk.Client`."""

    _service = SERVICE

    def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = True,
        prompt: str = "",
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Embed texts with the service's embedding model.

        Args:
            texts: a list of texts (not one string): at most the service's
                `retrieval.max_texts_per_request` of them, each at most `retrieval.max_text_chars`
                characters with the prompt, all together at most `retrieval.max_request_chars`
                (config keys). None may be blank (empty, or only whitespace, control or
                zero-width characters). Text is plain text: "[CLS]" or "[SEP]" in it are
                characters, never special tokens.
            normalize: L2-normalise each embedding (default), so a dot product is a cosine.
            truncate: cut texts longer than the model's max sequence length (default); with
                False such a text raises InvalidArgument.
            prompt: prepended verbatim to every text, e.g. an instruction. RAR-b's
                with-instruction setting embeds queries with `prompt=instruction + " "` and
                candidates without. It must leave room for the text in the model's
                max_seq_length tokens.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            float32 array [len(texts), dimension], one row per text in order; `dimension` is
            the model's (384 for the default all-MiniLM-L6-v2).
        Raises:
            InvalidArgument: one string instead of a list (before sending); an empty or too
                long list; a blank text; a text too long, in characters, or in tokens with
                truncate=False; more characters in all than `retrieval.max_request_chars`; a
                prompt that fills the model's sequence.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> client.embed(["a sentence", "another"]).shape
            (2, 384)
        """
        return self._run(_embed_call(texts, normalize, truncate, prompt), timeout_s)

    def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        """The embedding model that embed, upsert and search use.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Its name, version, kind, source and properties (`dimension`, `max_seq_length`, ...).
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_model_info_call(), timeout_s)

    def create_collection(
        self,
        name: str,
        *,
        metric: str = "cosine",
        index_type: str = "flat",
        dimension: int = 0,
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
        timeout_s: float | None = None,
    ) -> Collection:
        """Create an empty collection.

        Args:
            name: letters A-Z a-z, digits, `_` and `-` (the error message gives the length limit).
            metric: "cosine" (default), "dot" or "l2" (squared Euclidean distance).
            index_type: "flat" (exact, default) or "hnsw" (approximate, FAISS HNSW, for large
                collections).
            dimension: vector dimension; 0 takes the embedding model's. A collection whose
                dimension differs from the model's takes vectors only.
            hnsw_m: HNSW graph degree (neighbours per node); 0 takes the service's default.
            hnsw_ef_search: HNSW search breadth (candidates visited); 0 takes the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The new collection, with document_count 0.
        Raises:
            InvalidArgument: an unknown metric or index_type (before sending); an invalid
                name, a negative dimension, hnsw_m or hnsw_ef_search out of range.
            AlreadyExists: a collection of that name exists.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> client.create_collection("notes").dimension
            384
        """
        return self._run(
            _create_collection_call(name, metric, index_type, dimension, hnsw_m, hnsw_ef_search), timeout_s
        )

    def list_collections(self, *, timeout_s: float | None = None) -> list[Collection]:
        """Every collection, by name.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The collections with their document counts, sorted by name.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_list_collections_call(), timeout_s)

    def delete_collection(self, name: str, *, timeout_s: float | None = None) -> int:
        """Delete a collection and its documents.

        Args:
            name: the collection.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            How many documents it held.
        Raises:
            InvalidArgument: an invalid name.
            NotFound: no collection of that name.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_delete_collection_call(name), timeout_s)

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> UpsertResult:
        """Insert or replace documents by id; returns once they are durable.

        A document with a vector is stored with it; one without is embedded from its text.

        Args:
            collection: the collection's name.
            ids: one id per document, unique within the call; at most
                the service's `retrieval.max_documents_per_request` documents per call.
            texts: one text per id (at most the service's `retrieval.max_text_chars` characters), or None.
            vectors: [len(ids), dimension] floats (sent as float32), or None: the texts are
                embedded by the service.
            metadata: one JSON-like dict (or None) per id; search can filter on it.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            How many documents were written, and how many of their ids were new.
        Raises:
            InvalidArgument: before sending, lists of different lengths, neither texts nor
                vectors, vectors not 2-D, metadata that is not JSON-like, an integer in metadata
                beyond +-2**53 (it would not be stored exactly); from the service, too many
                documents, a duplicate or empty id, a document without vector whose text is
                blank, a wrong vector dimension, NaN or inf, a vector norm above
                `retrieval.max_vector_norm`, a text above `retrieval.max_document_text_bytes`,
                metadata above `retrieval.max_metadata_bytes` or nested deeper than
                `retrieval.max_metadata_depth`. Nothing is embedded for a refused call.
            NotFound: no collection of that name.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> client.upsert("notes", ids=["a", "b"], texts=["Hello", "Hallo"],
            ...               metadata=[{"lang": "en"}, {"lang": "de"}])
            UpsertResult(upserted=2, created=2)
        """
        return self._run(_upsert_call(collection, ids, texts, vectors, metadata), timeout_s)

    def get(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, timeout_s: float | None = None
    ) -> list[Document]:
        """Documents by id.

        Args:
            collection: the collection's name.
            ids: at most the service's `retrieval.max_documents_per_request` ids, each once.
            include_vectors: also return each document's stored vector.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The documents found, in the order asked; unknown ids are left out.
        Raises:
            InvalidArgument: no ids, too many, an empty or duplicate id.
            NotFound: no collection of that name.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_get_call(collection, ids, include_vectors), timeout_s)

    def delete(self, collection: str, ids: Sequence[str], *, timeout_s: float | None = None) -> int:
        """Delete documents by id.

        Args:
            collection: the collection's name.
            ids: at most the service's `retrieval.max_documents_per_request` ids, each once.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            How many of the ids existed (and are now deleted).
        Raises:
            InvalidArgument: no ids, too many, an empty or duplicate id.
            NotFound: no collection of that name.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_delete_call(collection, ids), timeout_s)

    def search(
        self,
        collection: str,
        query: str | np.ndarray | Sequence[float],
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        prompt: str = "",
        include_vectors: bool = False,
        rerank: bool = False,
        candidates: int | None = None,
        reranker: str | None = None,
        timeout_s: float | None = None,
    ) -> SearchResult:
        """Nearest documents to a text (embedded by the service) or a vector.

        Args:
            collection: the collection's name.
            query: a text, or a vector of the collection's dimension (sent as float32).
            top_k: hits to return, 1 to the service's `retrieval.max_top_k`; 0 raises
                InvalidArgument (it is never read as the default).
            filter: metadata equality, e.g. {"lang": "en"}: every key must match; values are
                strings, numbers within +-2**53, booleans or None; at most
                `retrieval.max_filter_keys` keys.
            prompt: prepended to a text query before embedding, e.g. a RAR-b instruction.
            include_vectors: also return each hit's stored vector.
            rerank: retrieve, then rerank: the `candidates` nearest documents are scored
                against the text query by a cross-encoder (run by the retrieval service through
                its backend, long documents by their best window) and the top_k best are
                returned, ordered by `Hit.rerank_probability`. Needs a text query; the
                reranker reads it without `prompt`.
            candidates: with rerank, how many nearest documents the reranker reads: top_k to
                `retrieval.max_top_k`; None: max(top_k, min(`retrieval.rerank_candidates`,
                `retrieval.max_top_k`)), i.e. max(top_k, 100) with the default config.
            reranker: with rerank, the name of a cross-encoder in the retrieval service's model
                repository (under `facet up` the rerank service's too: `client.list_rerankers()`);
                None: the default (`rerank.model`).
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            A `SearchResult`: a list of at most top_k `Hit`s, closest first (highest score;
            lowest for "l2"); with rerank, most probably relevant first, then any hit without
            text, and `.reranker` names the cross-encoder that ordered them (None without rerank).
        Raises:
            InvalidArgument: filter not JSON-like or with an integer beyond +-2**53 (before
                sending); top_k out of range, a blank text query, a vector of the wrong
                dimension or with norm above `retrieval.max_vector_norm`, a text query on a
                collection whose dimension is not the model's, a filter value that is not a
                scalar, too many filter keys; rerank with a vector query, candidates below top_k
                or above `retrieval.max_top_k`, candidates or reranker without rerank, candidates
                over a `[rerank]` limit (e.g. `rerank.max_request_chars`).
            NotFound: no collection of that name; with rerank, no reranker of that name.
            FailedPrecondition: rerank, and no reranker in the model repository (the message
                says `facet rerank build`).
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> hits = client.search("notes", "greeting", top_k=5, filter={"lang": "en"})
            >>> hits[0].id, hits[0].score, hits[0].text, hits[0].metadata
            >>> best = client.search("notes", "greeting", top_k=5, rerank=True, candidates=100)
            >>> best[0].rerank_probability, best[0].retrieval_rank, best.reranker
        """
        return self._run(_search_call(collection, query, top_k, filter, prompt, include_vectors, rerank, candidates, reranker), timeout_s)


@docstrings_from(RetrievalMethods)
class AsyncRetrievalMethods(AsyncTransport):
    """The retrieval methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = True,
        prompt: str = "",
        timeout_s: float | None = None,
    ) -> np.ndarray:
        return await self._run(_embed_call(texts, normalize, truncate, prompt), timeout_s)

    async def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        return await self._run(_model_info_call(), timeout_s)

    async def create_collection(
        self,
        name: str,
        *,
        metric: str = "cosine",
        index_type: str = "flat",
        dimension: int = 0,
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
        timeout_s: float | None = None,
    ) -> Collection:
        return await self._run(
            _create_collection_call(name, metric, index_type, dimension, hnsw_m, hnsw_ef_search), timeout_s
        )

    async def list_collections(self, *, timeout_s: float | None = None) -> list[Collection]:
        return await self._run(_list_collections_call(), timeout_s)

    async def delete_collection(self, name: str, *, timeout_s: float | None = None) -> int:
        return await self._run(_delete_collection_call(name), timeout_s)

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> UpsertResult:
        return await self._run(_upsert_call(collection, ids, texts, vectors, metadata), timeout_s)

    async def get(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, timeout_s: float | None = None
    ) -> list[Document]:
        return await self._run(_get_call(collection, ids, include_vectors), timeout_s)

    async def delete(self, collection: str, ids: Sequence[str], *, timeout_s: float | None = None) -> int:
        return await self._run(_delete_call(collection, ids), timeout_s)

    async def search(
        self,
        collection: str,
        query: str | np.ndarray | Sequence[float],
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        prompt: str = "",
        include_vectors: bool = False,
        rerank: bool = False,
        candidates: int | None = None,
        reranker: str | None = None,
        timeout_s: float | None = None,
    ) -> SearchResult:
        return await self._run(_search_call(collection, query, top_k, filter, prompt, include_vectors, rerank, candidates, reranker), timeout_s)
