"""Reranking (`facet.v1.Rerank`): score and order candidate documents for a query with a cross-encoder.

The rerankers are cross-encoders trained by Facet from all-MiniLM-L6-v2 (MiniLM with a relevance
head over `[CLS] query [SEP] document [SEP]`), the default one fine-tuned on RAR-b's train split:
"fine-tuning a reranker injects reasoning more easily than fine-tuning a bi-encoder" (Xiao et
al., 2024, "RAR-b: Reasoning as Retrieval Benchmark", §5). Probabilities are calibrated by
temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks", §4.2).
Limits named below are keys of the service's `[rerank]` config section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, overload

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._proto.facet.v1 import rerank_pb2, rerank_pb2_grpc
from sdk._struct import from_struct
from sdk._tensors import finite_float
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

# Every RPC only reads: each is safe to send again after UNAVAILABLE (sdk._retry).
SERVICE = Service("rerank", rerank_pb2_grpc.RerankStub, idempotent=frozenset({"Rerank", "ListRerankers", "GetReranker"}))
INT32_MIN = -(2**31)

# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RankedDocument:
    """One document of a rerank, with its scores.

    Attributes:
        index: its position in the `documents` given to `rerank`.
        score: the probability (default), or the model's logit with `raw_scores=True`.
        probability: sigmoid(logit / temperature), in [0, 1]: the reranker's calibrated
            probability that the document is relevant to the query.
        document: its text, with `return_documents=True`; else None.
        windowed: it was longer than the model's window beside the query and was scored by its
            best window (overlapping windows over its tokens; the highest logit counts).
        truncated: it was longer than the window and `truncate=True` cut it to its first tokens.
    """

    index: int
    score: float
    probability: float
    document: str | None = None
    windowed: bool = False
    truncated: bool = False


@dataclasses.dataclass(frozen=True)
class RerankResult(Sequence[RankedDocument]):
    """The ranked documents of one `rerank` call: a sequence, best first.

    Attributes:
        results: the `RankedDocument`s, sorted by score descending (ties by index).
        model: the reranker that scored them.
        none_relevant: `min_probability` was given and no document reached it (the sequence is
            then empty): "no relevant document".
        query_truncated: `truncate=True` cut the query to its first tokens (it left fewer than
            `rerank.min_window_tokens` document tokens per pair).
    """

    results: tuple[RankedDocument, ...]
    model: str
    none_relevant: bool = False
    query_truncated: bool = False

    @overload
    def __getitem__(self, i: int) -> RankedDocument: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[RankedDocument, ...]: ...
    def __getitem__(self, i: int | slice) -> RankedDocument | tuple[RankedDocument, ...]:
        return self.results[i]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[RankedDocument]:
        return iter(self.results)


@dataclasses.dataclass(frozen=True)
class RerankerInfo:
    """A reranker (cross-encoder) the service serves, as its training and export recorded it.

    Attributes:
        name: what `rerank(model=...)` takes, e.g. "minilm-l6-rerank".
        version: the version served.
        default: the one `rerank` uses without `model`.
        max_seq_length: tokens of one (query, document) pair, special tokens included; longer
            documents are windowed or truncated.
        temperature: probability = sigmoid(logit / temperature).
        base_model: what the weights started from.
        source: where the weights came from (the build that trained them).
        training_data: the data sets it was trained on, e.g. [{"name": ..., "pairs": ..., "split": ...}].
        training: the training settings (steps, batch, learning rate, seed, time_s, ...).
        metrics: its evaluation results (e.g. RAR-b MCR accuracy per task).
        calibration: what the temperature was fitted on, and the expected calibration error
            before and after.
    """

    name: str
    version: int
    default: bool
    max_seq_length: int
    temperature: float
    base_model: str
    source: str
    training_data: list[Any]
    training: dict[str, Any]
    metrics: dict[str, Any]
    calibration: dict[str, Any]


# -- requests and responses ---------------------------------------------------------------------



def _info(r: rerank_pb2.Reranker) -> RerankerInfo:
    return RerankerInfo(
        name=r.name,
        version=int(r.version),
        default=r.default,
        max_seq_length=int(r.max_seq_length),
        temperature=float(r.temperature),
        base_model=r.base_model,
        source=r.source,
        training_data=from_struct(r.training_data) if r.HasField("training_data") else [],
        training=from_struct(r.training),
        metrics=from_struct(r.metrics),
        calibration=from_struct(r.calibration),
    )


def _rerank_call(
    query: str,
    documents: Sequence[str],
    top_n: int | None,
    return_documents: bool,
    raw_scores: bool,
    truncate: bool,
    min_probability: float | None,
    model: str | None,
) -> Call[RerankResult]:
    texts = check.texts(documents, "documents")
    request = rerank_pb2.RerankRequest(
        query=check.text(query, "query"),
        documents=texts,
        top_n=check.optional_integer(top_n, "top_n", low=INT32_MIN),
        return_documents=check.flag(return_documents, "return_documents"),
        raw_scores=check.flag(raw_scores, "raw_scores"),
        truncate=check.flag(truncate, "truncate"),
        min_probability=None if min_probability is None else check.number(min_probability, "min_probability", low=0.0, high=1.0),
        model="" if model is None else check.text(model, "model"),
    )

    def parse(r: rerank_pb2.RerankResponse) -> RerankResult:
        results = []
        for i, x in enumerate(r.results):
            if not 0 <= x.index < len(texts):
                raise ValueError(f"results[{i}].index is {x.index}, not a position among the {len(texts)} documents")
            results.append(
                RankedDocument(
                    index=int(x.index),
                    score=finite_float(x.score, f"results[{i}].score"),
                    probability=finite_float(x.probability, f"results[{i}].probability"),
                    document=x.document if x.HasField("document") else None,
                    windowed=x.windowed,
                    truncated=x.truncated,
                )
            )
        return RerankResult(tuple(results), model=r.model, none_relevant=r.none_relevant, query_truncated=r.query_truncated)

    return Call(SERVICE, "Rerank", request, parse)


def _list_rerankers_call() -> Call[list[RerankerInfo]]:
    return Call(SERVICE, "ListRerankers", rerank_pb2.ListRerankersRequest(), lambda r: [_info(x) for x in r.rerankers])


def _get_reranker_call(name: str) -> Call[RerankerInfo]:
    return Call(SERVICE, "GetReranker", rerank_pb2.GetRerankerRequest(name=check.text(name, "name")), _info)


# -- methods ------------------------------------------------------------------------------------


class RerankMethods(SyncTransport):
    """The reranking methods of `sdk.Client`."""

    _service = SERVICE

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        truncate: bool = False,
        min_probability: float | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> RerankResult:
        """Score every document against the query with a cross-encoder and order them, best first.

        Each (query, document) pair is read by the model together (`[CLS] query [SEP] document
        [SEP]`), which is slower than comparing embeddings and more accurate: rerank the top
        candidates of a search. A document longer than the model's window beside the query
        (`max_seq_length` tokens per pair, see `get_reranker`) is scored by its best window
        (overlapping windows of its tokens, each with the whole query; the highest logit
        counts; `windowed`) unless `truncate=True` (its first tokens only; `truncated`).

        Args:
            query: the query, not blank, at most `rerank.max_query_chars` characters, and short
                enough to leave room for document tokens in the model's window.
            documents: a list of texts (not one string): 1 to `rerank.max_documents_per_request`
                (1,000) of them, none blank, each at most `rerank.max_document_chars`
                characters, all with the query at most `rerank.max_request_chars`. Text is plain
                text: "[SEP]" in it is characters, never a special token.
            top_n: how many results to return; None, <= 0, or more than len(documents): all of
                them (as Cohere's rerank API).
            return_documents: put each document's text in its result.
            raw_scores: `score` is the model's logit (unbounded, float) instead of the
                calibrated probability; the order is the same.
            truncate: cut long documents to their first window instead of scoring their best
                window, and a query too long to leave `rerank.min_window_tokens` document tokens
                to its first tokens (the result's `query_truncated`). With False and the
                service's `rerank.windowing` off, a long document raises InvalidArgument; so
                does such a query.
            min_probability: in [0, 1]: leave out documents whose probability is below it;
                when none is left, the result is empty and its `none_relevant` is True.
            model: a reranker's name from `list_rerankers()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            RerankResult: a sequence of `RankedDocument(index, score, probability, document,
            windowed, truncated)` sorted by score, best first, with `.model` and
            `.none_relevant`.
        Raises:
            InvalidArgument: before sending, documents given as one string, a top_n that is
                not an int32, min_probability not a number in [0, 1]; from the service, a blank
                or too long query (in characters, or in tokens: no room left for a document),
                no documents or more than `rerank.max_documents_per_request`, a blank
                document (named by its index), a document or the call over its character
                limit, a long document with truncate=False while windowing is off, more
                (query, window) pairs than `rerank.max_pairs_per_request`.
            NotFound: the service serves no reranker called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> ranked = client.rerank("Where is the Eiffel Tower?",
            ...                        ["It is in Paris.", "Bananas are yellow."], top_n=1, return_documents=True)
            >>> ranked[0].index, ranked[0].document           # the best document
            (0, 'It is in Paris.')
            >>> 0.0 <= ranked[0].probability <= 1.0, ranked.model
            (True, 'minilm-l6-rerank')
        """
        return self._run(
            _rerank_call(query, documents, top_n, return_documents, raw_scores, truncate, min_probability, model), timeout_s
        )

    def list_rerankers(self, *, timeout_s: float | None = None) -> list[RerankerInfo]:
        """The rerankers the service serves, the default first.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Each one's name, version, max_seq_length (tokens), temperature, base model, training
            data and settings, metrics and calibration.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> [(r.name, r.default) for r in client.list_rerankers()]
            [('minilm-l6-rerank', True)]
        """
        return self._run(_list_rerankers_call(), timeout_s)

    def get_reranker(self, name: str = "", *, timeout_s: float | None = None) -> RerankerInfo:
        """One reranker by name.

        Args:
            name: a name from `list_rerankers()`; "" (the default) is the service's default
                reranker (`rerank.model`).
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Its description, as in `list_rerankers()`.
        Raises:
            NotFound: the service serves no reranker of that name; the message lists those it does.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> client.get_reranker("minilm-l6-rerank").temperature
            >>> client.get_reranker().name  # the default reranker
        """
        return self._run(_get_reranker_call(name), timeout_s)


@docstrings_from(RerankMethods)
class AsyncRerankMethods(AsyncTransport):
    """The reranking methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        return_documents: bool = False,
        raw_scores: bool = False,
        truncate: bool = False,
        min_probability: float | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> RerankResult:
        return await self._run(
            _rerank_call(query, documents, top_n, return_documents, raw_scores, truncate, min_probability, model), timeout_s
        )

    async def list_rerankers(self, *, timeout_s: float | None = None) -> list[RerankerInfo]:
        return await self._run(_list_rerankers_call(), timeout_s)

    async def get_reranker(self, name: str = "", *, timeout_s: float | None = None) -> RerankerInfo:
        return await self._run(_get_reranker_call(name), timeout_s)
