"""The `[retrieval]` config section (`FACET_RETRIEVAL_*`): the embedding model and the limits of
every Retrieval RPC, checked before any work is done."""

from __future__ import annotations

import dataclasses

from services.runtime.config import check


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Attributes:
    embedding_model: the model repository's embedding model the service loads.
    max_texts_per_request: texts per Embed call.
    max_text_chars: characters per text, prompt included.
    max_documents_per_request: documents or ids per Upsert, Get or DeleteDocuments call.
    max_top_k: hits per Search.
    index_save_interval_s: how often changed FAISS indexes are written (SQLite is always durable).
    filter_exact_max_matches: a filtered Search whose filter matches at most this many documents
        scores them exactly (brute force); above, HNSW collections search the graph with the
        filter, widening ef until min(top_k, matches) hits are found (see DocumentStore.search).
    startup_integrity_check: "quick" (PRAGMA quick_check), "full" (PRAGMA integrity_check) or
        "off": how the database is checked before the service starts serving it.
    max_database_bytes: the most the SQLite database may grow to (0: no limit but the disk's);
        writes beyond it fail with RESOURCE_EXHAUSTED, as on a full disk.
    """

    embedding_model: str = "all-minilm-l6-v2"
    max_texts_per_request: int = 256
    max_text_chars: int = 100_000
    max_documents_per_request: int = 1024
    max_top_k: int = 1000
    index_save_interval_s: float = 30.0
    filter_exact_max_matches: int = 10_000
    startup_integrity_check: str = "quick"
    max_database_bytes: int = 0

    def __post_init__(self) -> None:
        check(bool(self.embedding_model), "retrieval.embedding_model must be set")
        check(self.max_texts_per_request >= 1, "retrieval.max_texts_per_request must be >= 1")
        check(self.max_text_chars >= 1, "retrieval.max_text_chars must be >= 1")
        check(self.max_documents_per_request >= 1, "retrieval.max_documents_per_request must be >= 1")
        check(self.max_top_k >= 1, "retrieval.max_top_k must be >= 1")
        check(self.index_save_interval_s > 0, "retrieval.index_save_interval_s must be > 0")
        check(self.filter_exact_max_matches >= 0, "retrieval.filter_exact_max_matches must be >= 0")
        check(
            self.startup_integrity_check in ("quick", "full", "off"),
            f"retrieval.startup_integrity_check must be quick, full or off, got {self.startup_integrity_check!r}",
        )
        check(self.max_database_bytes >= 0, "retrieval.max_database_bytes must be >= 0 (0: no limit)")
