"""The `[retrieval]` config section (`FACET_RETRIEVAL_*`): the embedding model and the limits of
every Retrieval RPC, checked before any work is done."""

from __future__ import annotations

import dataclasses

from sdk._contract import MAX_MESSAGE_BYTES
from services.runtime.config import check

# Bytes a returned document takes besides its text and metadata: its id (256 characters, up to
# 1 KiB in UTF-8) and the message framing.
DOCUMENT_OVERHEAD_BYTES = 2048
STORES = ("embedded", "milvus")
MILVUS_CONSISTENCY = ("Strong", "Bounded", "Session", "Eventually")
MILVUS_MAX_VARCHAR_BYTES = 65_535  # a Milvus VARCHAR field's largest max_length
MILVUS_MAX_TOP_K = 16_384  # Milvus' largest search limit (topK)


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
    max_request_chars: characters one call may send to the embedding model, all texts together
        (each with its prompt): bounds the tokenizer's work and memory per call.
    truncate_chars_per_token: with truncation on, a text is cut to
        `max_seq_length * truncate_chars_per_token` characters before it is tokenized (the
        tokens kept are the same as the whole text's; the rest is never tokenized).
    max_document_text_bytes: UTF-8 bytes of one stored document's text.
    max_metadata_bytes: serialized bytes of one document's metadata (protobuf Struct).
    max_metadata_depth: nesting of lists and objects in metadata (1: flat).
    max_filter_keys: keys in one Search filter.
    max_vector_norm: L2 norm of a vector sent to Upsert or Search; larger vectors would overflow
        float32 scores (dot products, squared distances).
    rerank_candidates: a Search with `rerank` and no `candidates` lets the reranker read the
        max(top_k, rerank_candidates) nearest documents, at most max_top_k.
    store: where collections live: "embedded" (SQLite + FAISS in the data dir, one process) or
        "milvus" (a Milvus server or cluster that several service processes share).
    milvus_uri: the Milvus server (http://host:19530); required with store = "milvus" (`facet up
        --retrieval-store milvus` without a URI starts a local Milvus standalone and sets it).
    milvus_token: "user:password" or an API key; empty for a server without authentication.
    milvus_database: the Milvus database that holds Facet's collections.
    milvus_consistency: the consistency level of Facet's Milvus collections and of every search
        and read: "Strong" (a read sees every acknowledged write, through any service process),
        "Bounded", "Session" or "Eventually" (faster, may miss the latest writes).
    milvus_timeout_s: the longest one Milvus call may take; past it, or when the server cannot be
        reached, the call fails with UNAVAILABLE naming the URI.
    milvus_concurrency: Milvus calls one service process runs at once.
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
    max_request_chars: int = 4_000_000
    truncate_chars_per_token: int = 16
    max_document_text_bytes: int = 40_000
    max_metadata_bytes: int = 16_384
    max_metadata_depth: int = 16
    max_filter_keys: int = 64
    max_vector_norm: float = 1e18
    rerank_candidates: int = 100
    store: str = "embedded"
    milvus_uri: str = ""
    milvus_token: str = dataclasses.field(default="", repr=False)
    milvus_database: str = "default"
    milvus_consistency: str = "Strong"
    milvus_timeout_s: float = 10.0
    milvus_concurrency: int = 8

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
        check(self.max_request_chars >= 1, "retrieval.max_request_chars must be >= 1")
        check(self.truncate_chars_per_token >= 1, "retrieval.truncate_chars_per_token must be >= 1")
        check(self.max_document_text_bytes >= 1, "retrieval.max_document_text_bytes must be >= 1")
        check(self.max_metadata_bytes >= 1, "retrieval.max_metadata_bytes must be >= 1")
        check(self.max_metadata_depth >= 1, "retrieval.max_metadata_depth must be >= 1")
        check(1 <= self.max_filter_keys <= 256, "retrieval.max_filter_keys must be 1..256 (SQLite's expression depth)")
        check(self.rerank_candidates >= 1, f"retrieval.rerank_candidates must be >= 1, got {self.rerank_candidates}")
        check(0 < self.max_vector_norm <= 1e18, "retrieval.max_vector_norm must be in (0, 1e18] (float32 scores overflow above)")
        check(self.store in STORES, f"retrieval.store must be one of {', '.join(STORES)}, got {self.store!r}")
        check(
            self.milvus_consistency in MILVUS_CONSISTENCY,
            f"retrieval.milvus_consistency must be one of {', '.join(MILVUS_CONSISTENCY)}, got {self.milvus_consistency!r}",
        )
        check(self.milvus_timeout_s > 0, "retrieval.milvus_timeout_s must be > 0")
        check(self.milvus_concurrency >= 1, "retrieval.milvus_concurrency must be >= 1")
        if self.store == "milvus":
            check(
                bool(self.milvus_uri),
                "retrieval.milvus_uri must be set with retrieval.store = milvus (for example http://localhost:19530)",
            )
            check(
                self.milvus_uri.startswith(("http://", "https://", "tcp://")),
                f"retrieval.milvus_uri must start with http://, https:// or tcp://, got {self.milvus_uri!r}",
            )
            check(
                self.max_document_text_bytes <= MILVUS_MAX_VARCHAR_BYTES,
                f"retrieval.max_document_text_bytes ({self.max_document_text_bytes}) exceeds what a Milvus VARCHAR holds "
                f"({MILVUS_MAX_VARCHAR_BYTES} bytes) with retrieval.store = milvus",
            )
            check(
                self.max_top_k <= MILVUS_MAX_TOP_K,
                f"retrieval.max_top_k ({self.max_top_k}) exceeds Milvus' limit ({MILVUS_MAX_TOP_K}) with retrieval.store = milvus",
            )
        # Every stored document must come back: a full Get or Search reply fits in one message.
        per_document = self.max_document_text_bytes + self.max_metadata_bytes + DOCUMENT_OVERHEAD_BYTES
        for key, count in (("max_documents_per_request", self.max_documents_per_request), ("max_top_k", self.max_top_k)):
            check(
                count * per_document <= MAX_MESSAGE_BYTES,
                f"retrieval.{key} ({count}) x (max_document_text_bytes + max_metadata_bytes + {DOCUMENT_OVERHEAD_BYTES}) "
                f"= {count * per_document} bytes exceeds the message limit {MAX_MESSAGE_BYTES}: lower one of them",
            )

    def reply_documents(self, vector_bytes: int) -> int:
        """How many documents, each with a vector of `vector_bytes`, fit in one reply."""
        return MAX_MESSAGE_BYTES // (self.max_document_text_bytes + self.max_metadata_bytes + DOCUMENT_OVERHEAD_BYTES + vector_bytes)
