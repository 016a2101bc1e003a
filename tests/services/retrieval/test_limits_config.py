"""The [retrieval] limits refuse a configuration under which a stored document could not be
read back, or a filter could reach SQLite's expression depth (no server)."""

from __future__ import annotations

import pytest

from sdk._contract import MAX_MESSAGE_BYTES
from services.retrieval.config import DOCUMENT_OVERHEAD_BYTES, RetrievalConfig
from services.runtime.config import ConfigError, load_config


def test_defaults_let_a_full_get_and_search_of_the_largest_documents_fit_in_one_reply() -> None:
    limits = RetrievalConfig()
    per_document = limits.max_document_text_bytes + limits.max_metadata_bytes + DOCUMENT_OVERHEAD_BYTES
    assert limits.max_documents_per_request * per_document <= MAX_MESSAGE_BYTES
    assert limits.max_top_k * per_document <= MAX_MESSAGE_BYTES
    assert limits.reply_documents(4 * 384) >= limits.max_documents_per_request


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FACET_RETRIEVAL_MAX_METADATA_BYTES": "100000"}, "max_documents_per_request"),
        ({"FACET_RETRIEVAL_MAX_DOCUMENT_TEXT_BYTES": "1000000", "FACET_RETRIEVAL_MAX_DOCUMENTS_PER_REQUEST": "10"}, "max_top_k"),
        ({"FACET_RETRIEVAL_MAX_FILTER_KEYS": "499"}, "max_filter_keys"),
        ({"FACET_RETRIEVAL_MAX_VECTOR_NORM": "1e19"}, "max_vector_norm"),
        ({"FACET_RETRIEVAL_MAX_REQUEST_CHARS": "0"}, "max_request_chars"),
    ],
)
def test_unsafe_limits_are_refused_naming_the_key(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(env=env).section(RetrievalConfig)


def test_a_max_top_k_below_the_default_rerank_candidates_is_accepted() -> None:
    """A deployment that lowers retrieval.max_top_k need not lower rerank_candidates too: the
    default candidates of a reranked search are capped at max_top_k (the servicer's `_candidates`)."""
    assert RetrievalConfig(max_top_k=50).rerank_candidates == 100
    with pytest.raises(ConfigError, match="retrieval.rerank_candidates must be >= 1, got 0"):
        RetrievalConfig(rerank_candidates=0)
