"""The `[rerank]` config section (`FACET_RERANK_*`): the default reranker, the limits of every
Rerank call (checked before any tokenizing) and how long documents are windowed."""

from __future__ import annotations

import dataclasses

from services.runtime.config import check


@dataclasses.dataclass(frozen=True)
class RerankConfig:
    """Attributes:
    model: the reranker (a cross-encoder in the model repository) a Rerank without `model`
        uses; the service does not start without it (`facet rerank build` builds it). Every
        other cross-encoder in the repository is served too, by name.
    max_documents_per_request: documents per Rerank call.
    max_query_chars: characters of the query.
    max_document_chars: characters of one document.
    max_request_chars: characters of one call, the query and every document together: bounds
        the tokenizer's work and memory per call.
    windowing: score a document longer than the model's window by its best window (sliding
        windows over its tokens, each paired with the whole query); off: such a document is
        INVALID_ARGUMENT unless the call asks for `truncate`.
    window_overlap_tokens: document tokens two consecutive windows share (at most half of a
        window: with a long query the window is short, and the overlap shrinks with it).
    max_pairs_per_request: (query, window) pairs one call may score, every document's windows
        together: bounds the model's work per call when documents are long.
    min_window_tokens: the fewest document tokens a query may leave beside it in one (query,
        document) pair; a longer query is INVALID_ARGUMENT (in Rerank and in a reranked Search),
        since windows of a few tokens score as noise. With MiniLM's 128 tokens and 3 special ones,
        16 allows queries of up to 109 tokens.
    """

    model: str = "minilm-l6-rerank"
    max_documents_per_request: int = 1000
    max_query_chars: int = 4096
    max_document_chars: int = 100_000
    max_request_chars: int = 1_000_000
    windowing: bool = True
    window_overlap_tokens: int = 32
    max_pairs_per_request: int = 4096
    min_window_tokens: int = 16

    def __post_init__(self) -> None:
        check(bool(self.model), "rerank.model must be set")
        for key in ("max_documents_per_request", "max_query_chars", "max_document_chars", "max_request_chars", "max_pairs_per_request", "min_window_tokens"):
            check(getattr(self, key) >= 1, f"rerank.{key} must be >= 1")
        check(self.window_overlap_tokens >= 0, "rerank.window_overlap_tokens must be >= 0")
        check(
            self.max_pairs_per_request >= self.max_documents_per_request,
            f"rerank.max_pairs_per_request ({self.max_pairs_per_request}) must be >= rerank.max_documents_per_request "
            f"({self.max_documents_per_request}): every document is at least one pair",
        )
