"""Query + documents → relevance scores: validation, pair tokenization, and the cross-encoders
through a backend. No gRPC here (the servicer converts messages)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from services.backends.base import Backend, ModelMetadata
from services.backends.padding import length_groups
from services.model_repository import ModelRepository
from services.rerank.catalog import File, Kind, Prop, Tensor
from services.rerank.config import RerankConfig
from services.rerank.tokenization import CallTooLarge, PairTokenizer
from services.runtime.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, shown
from services.runtime.outputs import finite_output
from services.text import is_blank

log = logging.getLogger(__name__)

# Rows per model call when a call's pairs are split by length (as the embedder does: a CPU runs
# a few short, similar-length rows faster than one batch padded to its longest pair). The
# backend's batcher joins these groups with other calls' (up to `batching.max_batch_size` rows
# and `batching.max_batch_duration_ms` of estimated work: a token budget, rows x length).
RERANK_GROUP_MAX_ROWS = 16
BUILD_COMMAND = "facet rerank build"
# What a Rerank caller can do when its call alone cannot finish before its deadline (added to the
# batcher's DEADLINE_EXCEEDED, which knows rows, not documents).
RERANK_REMEDY = (
    "for Rerank: pass truncate=True (each document scored on its first window only), or send fewer or "
    "shorter documents (a document longer than the model's window costs one pair per window)"
)


@dataclasses.dataclass(frozen=True)
class Reranker:
    """A served cross-encoder: its repository metadata and its tokenizers."""

    metadata: ModelMetadata
    pairs: PairTokenizer

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def temperature(self) -> float:
        """probability = sigmoid(logit / temperature) (`Prop.TEMPERATURE`; 1.0 when the export recorded none)."""
        return float(self.metadata.properties.get(Prop.TEMPERATURE, 1.0))

    @property
    def max_seq_length(self) -> int:
        return self.pairs.max_seq_length

    def property(self, key: str, default: Any) -> Any:
        return self.metadata.properties.get(key, default)


@dataclasses.dataclass(frozen=True)
class Ranking:
    """The documents of one Rerank call, best first.

    Attributes:
        index: int32 [k], positions in the request's documents.
        logit: float32 [k], each document's relevance logit (its best window's).
        probability: float64 [k], sigmoid(logit / temperature).
        windowed: bool [k], scored by its best window.
        truncated: bool [k], scored on its first window only.
        model: the reranker's name.
        none_relevant: a min_probability was given and no document reached it (k is 0).
        unreadable: int32 [u], documents left out for having no token the model reads (only
            with `skip_unreadable`), in their order.
        query_truncated: truncate cut the query to fit beside `rerank.min_window_tokens`.
    """

    index: np.ndarray
    logit: np.ndarray
    probability: np.ndarray
    windowed: np.ndarray
    truncated: np.ndarray
    model: str
    none_relevant: bool
    unreadable: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    query_truncated: bool = False


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """float64 sigmoid(logits / temperature), computed as (1 + tanh(x / 2)) / 2 so that no
    logit overflows (temperature scaling: Guo et al. 2017, "On Calibration of Modern Neural
    Networks", §4.2)."""
    return 0.5 * (1.0 + np.tanh(logits.astype(np.float64) / (2.0 * temperature)))


class Scorer:
    """Loads the cross-encoders of the model repository and scores (query, document) pairs.

    Args:
        backend: the inference backend.
        config: the `[rerank]` section.
        repository: the model repository the backend serves.
    """

    def __init__(self, backend: Backend, config: RerankConfig, repository: Path) -> None:
        self._backend = backend
        self._config = config
        self._repository = ModelRepository(repository)
        self.rerankers: dict[str, Reranker] = {}

    @property
    def default(self) -> str:
        return self._config.model

    @property
    def max_query_chars(self) -> int:
        """`rerank.max_query_chars`."""
        return self._config.max_query_chars

    async def load(self) -> list[str]:
        """Load the default reranker (`rerank.model`) and every other cross-encoder in the repository.

        Returns:
            The names loaded, the default first.
        Raises:
            FailedPrecondition: the default is missing (the message gives the build command) or
                is not a cross-encoder.
        """
        kinds = {name: self._repository.get(name).kind for name in self._repository.models()}
        if kinds.get(self.default) != Kind.CROSS_ENCODER:
            what = "is not in" if self.default not in kinds else f"is a {kinds[self.default]} model, not a {Kind.CROSS_ENCODER}, in"
            raise FailedPrecondition(
                f"reranker '{self.default}' (rerank.model) {what} the model repository {self._repository.root}; "
                f"build it with `{BUILD_COMMAND}` (or `facet models build`)"
            )
        names = [self.default, *sorted(n for n, k in kinds.items() if k == Kind.CROSS_ENCODER and n != self.default)]
        for name, meta in (await self._backend.load_all(names)).items():
            max_seq_length = int(meta.properties[Prop.MAX_SEQ_LENGTH])
            tokenizer = meta.files[File.TOKENIZER]
            self.rerankers[name] = Reranker(meta, PairTokenizer(tokenizer, max_seq_length, self._config.min_window_tokens))
        log.info("serving %d rerankers: %s (default %s)", len(names), ", ".join(names), self.default)
        return names

    def reranker(self, name: str) -> Reranker:
        """The reranker called `name` ("" = the default).

        Raises:
            NotFound: the service serves no reranker of that name (the message lists them).
        """
        found = self.rerankers.get(name or self.default)
        if found is None:
            raise NotFound(f"reranker '{shown(name)}' is not served; available: {', '.join(self.rerankers)}")
        return found

    def validate(self, query: str, documents: list[str], min_probability: float | None) -> None:
        """The cheap checks of a Rerank call, before any tokenizing.

        Raises:
            InvalidArgument: a blank or too long query; no documents or too many; a document too
                long; all the text over `rerank.max_request_chars`; a blank document (named by
                index); min_probability outside [0, 1].
        """
        limits = self._config
        if min_probability is not None and not 0.0 <= min_probability <= 1.0:  # NaN fails too
            raise InvalidArgument(f"min_probability must be between 0 and 1, got {min_probability}")
        if len(query) > limits.max_query_chars:
            raise InvalidArgument(f"query has {len(query)} characters; the limit is rerank.max_query_chars ({limits.max_query_chars})")
        if is_blank(query):
            raise InvalidArgument("query is blank (empty, or only whitespace, control or zero-width characters); send the query text")
        if not documents:
            raise InvalidArgument("documents is empty; send at least one document")
        if len(documents) > limits.max_documents_per_request:
            raise CallTooLarge(
                f"{len(documents)} documents in one call; the limit is rerank.max_documents_per_request "
                f"({limits.max_documents_per_request})",
                "split the call",
            )
        for i, document in enumerate(documents):
            if len(document) > limits.max_document_chars:
                raise InvalidArgument(
                    f"documents[{i}] has {len(document)} characters; the limit is rerank.max_document_chars ({limits.max_document_chars})"
                )
        chars = len(query) + sum(len(d) for d in documents)
        if chars > limits.max_request_chars:
            raise CallTooLarge(
                f"query and documents have {chars} characters in all; the limit is rerank.max_request_chars "
                f"({limits.max_request_chars})",
                "split the call",
            )
        for i, document in enumerate(documents):  # after the budget: this one reads the characters
            if is_blank(document):
                raise InvalidArgument(
                    f"documents[{i}] is blank (empty, or only whitespace, control or zero-width characters); "
                    "send text with at least one visible character, or leave it out"
                )

    def _admit(self, reranker: Reranker, rows: int, width: int, remedy: str) -> None:
        """The backend's admission of `rows` pairs of `width` tokens; a call too large for its
        deadline on its own (DEADLINE_EXCEEDED) gets `remedy` added to the message."""
        try:
            self._backend.admit(reranker.name, rows, width)
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"{exc.message}; {remedy}") from None

    async def rerank(
        self,
        query: str,
        documents: list[str],
        *,
        model: str = "",
        top_n: int | None = None,
        truncate: bool = False,
        min_probability: float | None = None,
        skip_unreadable: bool = False,
        remedy: str = RERANK_REMEDY,
    ) -> Ranking:
        """Score every document against `query` and order them, best first.

        A document longer than the window the query leaves in the model's `max_seq_length` is
        scored by its best window (the highest logit of overlapping windows) unless `truncate`
        (its first window only); tokenizing runs on a worker thread.

        Args:
            query: not blank, at most `rerank.max_query_chars` characters.
            documents: 1..`rerank.max_documents_per_request`, none blank.
            model: a served reranker's name; "" = the default (`rerank.model`).
            top_n: results to keep; None, <= 0 or above len(documents): all (as Cohere's API).
            truncate: cut long documents to their first window instead of windowing them.
            min_probability: in [0, 1]; drop documents whose probability is below it.
            skip_unreadable: leave out (`Ranking.unreadable`) a document with no token the
                model reads instead of refusing the call (a search's stored texts).
            remedy: what the caller can change when the call alone cannot finish before its
                deadline (appended to the admission's DEADLINE_EXCEEDED message).
        Returns:
            Ranking: sorted by logit, descending (ties by index); probabilities follow the same order.
        Raises:
            NotFound: an unknown model.
            InvalidArgument: see `validate` and `PairTokenizer.__call__`.
            ResourceExhausted, DeadlineExceeded: the backend's admission refuses the call before
                it is tokenized, on a lower bound of its size, or after tokenizing, on its real
                pairs before any runs (`batching.max_queue_size`, `batching.deadline_admission`).
            InternalError: the model returned a non-finite logit (a server fault).
        """
        reranker = self.reranker(model)
        self.validate(query, documents, min_probability)
        # Admission before tokenizing the documents, on lower bounds (at least one pair per
        # document, and a long document's windows, each document at least its letter-or-digit
        # chunks long): nothing the batcher could run is refused, and a call too large for its
        # deadline is refused before its tokenizing takes the deadline's time. A bad query and a
        # call over the pairs limit are refused first, as such.
        limits = self._config
        rows, tokens = reranker.pairs.pairs_at_least(
            query, documents, truncate=truncate, windowing=limits.windowing, max_pairs=limits.max_pairs_per_request
        )
        self._admit(reranker, rows, max(1, tokens // rows), remedy)
        batch = await asyncio.to_thread(
            reranker.pairs,
            query,
            documents,
            truncate=truncate,
            windowing=limits.windowing,
            overlap=limits.window_overlap_tokens,
            max_pairs=limits.max_pairs_per_request,
            skip_unreadable=skip_unreadable,
        )
        if len(batch.token_counts):  # its real work (every window), before any of it is queued
            self._admit(reranker, len(batch.token_counts), int(np.ceil(batch.token_counts.mean())), remedy)
        groups = [np.array(g) for g in length_groups(batch.token_counts.tolist(), max_rows=RERANK_GROUP_MAX_ROWS)] if len(batch.token_counts) else []
        outputs = await asyncio.gather(
            *(
                self._backend.infer(
                    reranker.name,
                    {
                        Tensor.INPUT_IDS: batch.input_ids[g, : batch.token_counts[g].max()],
                        Tensor.ATTENTION_MASK: batch.attention_mask[g, : batch.token_counts[g].max()],
                        Tensor.TOKEN_TYPE_IDS: batch.token_type_ids[g, : batch.token_counts[g].max()],
                    },
                )
                for g in groups
            )
        )
        pair_logits = np.empty(len(batch.token_counts), dtype=np.float32)
        for g, out in zip(groups, outputs, strict=True):
            pair_logits[g] = np.asarray(out[Tensor.LOGITS]).reshape(len(g))
        finite_output(f"the logits of reranker '{reranker.name}'", pair_logits)
        logits = np.full(len(documents), -np.inf, dtype=np.float32)
        np.maximum.at(logits, batch.document, pair_logits)  # a document's score is its best window's
        probability = probabilities(logits, reranker.temperature)
        order = np.lexsort((np.arange(len(documents)), -logits))
        order = order[~batch.unreadable[order]]
        none_relevant = False
        if min_probability is not None:
            order = order[probability[order] >= min_probability]
            none_relevant = len(order) == 0
        if top_n is not None and 0 < top_n < len(order):
            order = order[:top_n]
        return Ranking(
            index=order.astype(np.int32),
            logit=logits[order],
            probability=probability[order],
            windowed=batch.windowed[order],
            truncated=batch.truncated[order],
            model=reranker.name,
            none_relevant=none_relevant,
            unreadable=np.flatnonzero(batch.unreadable).astype(np.int32),
            query_truncated=batch.query_truncated,
        )

