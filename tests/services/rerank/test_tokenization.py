"""Pairs and windows of the rerank tokenizer, on MiniLM's real tokenizer (the cross-encoders' own)."""

from __future__ import annotations

import string

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from services.rerank.tokenization import CallTooLarge, PairBatch, PairTokenizer
from services.runtime.errors import InvalidArgument
from training.retrieval.export import packaged_minilm_dir

CLS, SEP = 101, 102
MAX = 16  # tokens per pair: 3 special, the query's 3, so windows of 10 document tokens
QUERY = "where is it"
LETTERS = list(string.ascii_lowercase[:25])  # 25 one-token words


@pytest.fixture(scope="module")
def tokenizer() -> PairTokenizer:
    return PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX)


@pytest.fixture(scope="module")
def vocabulary() -> Tokenizer:
    """The same tokenizer.json read on its own: what each word's id is."""
    vocabulary = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    vocabulary.no_padding()
    return vocabulary


def _pairs(
    tokenizer: PairTokenizer, documents: list[str], *, truncate: bool = False, windowing: bool = True, overlap: int = 4, max_pairs: int = 100
) -> PairBatch:
    return tokenizer(QUERY, documents, truncate=truncate, windowing=windowing, overlap=overlap, max_pairs=max_pairs)


def test_a_long_document_becomes_overlapping_windows_that_cover_it(tokenizer: PairTokenizer, vocabulary: Tokenizer) -> None:
    batch = _pairs(tokenizer, ["short one", " ".join(LETTERS)])
    letter_ids = [vocabulary.token_to_id(t) for t in LETTERS]
    query_ids = vocabulary.encode(QUERY, add_special_tokens=False).ids
    assert len(query_ids) == 3
    assert batch.document.tolist() == [0, 1, 1, 1, 1]  # 25 tokens, windows of 10 every 6: 0, 6, 12, 18
    assert batch.windowed.tolist() == [False, True] and not batch.truncated.any()
    windows = []
    for row in range(1, 5):
        ids = batch.input_ids[row, : batch.token_counts[row]].tolist()
        assert ids[:5] == [CLS, *query_ids, SEP] and ids[-1] == SEP and len(ids) <= MAX
        types = batch.token_type_ids[row, : batch.token_counts[row]].tolist()
        assert types == [0] * 5 + [1] * (len(ids) - 5)
        windows.append(ids[5:-1])
    assert windows == [letter_ids[0:10], letter_ids[6:16], letter_ids[12:22], letter_ids[18:25]]
    assert batch.attention_mask.sum(1).tolist() == batch.token_counts.tolist()


def test_truncate_keeps_the_first_window(tokenizer: PairTokenizer, vocabulary: Tokenizer) -> None:
    batch = _pairs(tokenizer, [" ".join(LETTERS)], truncate=True)
    letter_ids = [vocabulary.token_to_id(t) for t in LETTERS]
    assert batch.document.tolist() == [0] and batch.truncated.tolist() == [True] and not batch.windowed.any()
    assert batch.input_ids[0, 5:-1].tolist() == letter_ids[:10]


def test_the_overlap_is_at_most_half_a_window(tokenizer: PairTokenizer) -> None:
    batch = _pairs(tokenizer, [" ".join(LETTERS)], overlap=50)  # 5 of the 10 tokens: windows at 0, 5, 10, 15
    assert batch.document.tolist() == [0, 0, 0, 0]


def test_limits_and_refusals(tokenizer: PairTokenizer) -> None:
    with pytest.raises(InvalidArgument, match=r"windowing is off \(rerank.windowing\)"):
        _pairs(tokenizer, [" ".join(LETTERS)], windowing=False)
    with pytest.raises(InvalidArgument, match=r"rerank.max_pairs_per_request \(3\)"):
        _pairs(tokenizer, [" ".join(LETTERS)], max_pairs=3)
    with pytest.raises(InvalidArgument, match="no room is left for a document: shorten the query to at most 12 tokens"):
        tokenizer(" ".join(LETTERS[:13]), ["a"], truncate=False, windowing=True, overlap=0, max_pairs=10)
    with pytest.raises(InvalidArgument, match=r"documents\[0\] has no token"):
        _pairs(tokenizer, ["\u0301"])  # a lone combining accent: stripped by the tokenizer's normalizer


def test_special_token_strings_in_text_are_text(tokenizer: PairTokenizer) -> None:
    batch = _pairs(tokenizer, ["[SEP] [CLS]"])
    ids = batch.input_ids[0, : batch.token_counts[0]].tolist()
    assert ids.count(SEP) == 2 and ids.count(CLS) == 1  # only the template's
    assert np.all(batch.token_type_ids[0, ids.index(SEP) + 1 : batch.token_counts[0]] == 1)


def test_skip_unreadable_marks_a_document_without_tokens_instead_of_refusing_the_call(tokenizer: PairTokenizer) -> None:
    documents = ["\u0301\u0301", "a readable document", "\ue000\ue001"]  # combining accents; private-use characters
    batch = tokenizer(QUERY, documents, truncate=False, windowing=True, overlap=4, max_pairs=100, skip_unreadable=True)
    assert batch.unreadable.tolist() == [True, False, True]
    assert batch.document.tolist() == [1]  # one pair, the readable document's
    nothing = tokenizer(QUERY, ["\u0301"], truncate=False, windowing=True, overlap=4, max_pairs=100, skip_unreadable=True)
    assert nothing.unreadable.tolist() == [True] and nothing.input_ids.shape == (0, 0)


_HARD_DOCUMENTS = [
    "paris is the capital of france",
    "a " * 40,  # four windows of 10 document tokens beside QUERY
    "e=mc^2, (einstein 1905)",
    "naïve café's crème brûlée",
    "x",
    "x" * 300,  # one word past WordPiece's 100 characters: one [UNK]
    "antidisestablishmentarianism unbelievably " * 6,  # words of several WordPiece tokens each
    "don't stop-believing_now " * 12,
    "\u0301 a\u0301 \x1c\x1d b",  # marks and controls the tokenizer drops
    "!!! ??? ...",  # tokens, but no letter or digit: counted as one pair
]


def _at_most(bound: tuple[int, int], real: tuple[int, int]) -> bool:
    """Both counts of `bound` at most `real`'s (pairs, tokens)."""
    return bound[0] <= real[0] and bound[1] <= real[1]


def _real_work(tokenizer: PairTokenizer, query: str, documents: list[str], truncate: bool, windowing: bool, overlap: int) -> tuple[int, int]:
    batch = tokenizer(query, documents, truncate=truncate, windowing=windowing, overlap=overlap, max_pairs=10_000)
    return len(batch.token_counts), int(batch.token_counts.sum())


@pytest.mark.parametrize(
    ("query", "truncate", "windowing"),
    [
        (QUERY, False, True),
        (QUERY, True, True),
        (QUERY, True, False),
        ("q", False, True),
        ("q", True, False),
        ("a b c d e f g h i j k l", True, True),  # cut to leave exactly min_window_tokens (truncate only)
    ],
)
@pytest.mark.parametrize("overlap", [0, 4])
def test_the_admission_bound_never_exceeds_the_real_pairs(query: str, truncate: bool, windowing: bool, overlap: int) -> None:
    """Rerank sizes a call before tokenizing it (`PairTokenizer.pairs_at_least`): pairs and their
    tokens, a long document's windows included. A lower bound of both, so that a call is never
    refused for work it would not do, on every kind of document, query and setting."""
    strict = PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX, min_window_tokens=4)
    pairs, tokens = strict.pairs_at_least(query, _HARD_DOCUMENTS, truncate=truncate, windowing=windowing, max_pairs=10_000)
    real_pairs, real_tokens = _real_work(strict, query, _HARD_DOCUMENTS, truncate, windowing, overlap)
    assert pairs <= real_pairs and tokens <= real_tokens
    for document in _HARD_DOCUMENTS:
        bound = strict.pairs_at_least(query, [document], truncate=truncate, windowing=windowing, max_pairs=10_000)
        assert _at_most(bound, _real_work(strict, query, [document], truncate, windowing, overlap)), document


def test_the_admission_bound_counts_a_long_documents_windows(tokenizer: PairTokenizer) -> None:
    """A document of one-token words is sized exactly before tokenizing (without overlap): 25
    words beside QUERY's 10-token windows make 3 pairs of 16, 16 and 11 tokens; a call with
    hundreds of windows is sized as hundreds of pairs, not as one, so that admission can refuse it
    before tokenizing takes its deadline."""
    document = " ".join(LETTERS)
    assert tokenizer.pairs_at_least(QUERY, [document], truncate=False, windowing=True, max_pairs=100) == (3, 16 + 16 + 11)
    assert _real_work(tokenizer, QUERY, [document], False, True, 0) == (3, 16 + 16 + 11)
    assert tokenizer.pairs_at_least(QUERY, [document], truncate=True, windowing=True, max_pairs=100) == (1, 16)
    pairs, _ = tokenizer.pairs_at_least(QUERY, ["a " * 5000], truncate=False, windowing=True, max_pairs=500)
    assert pairs == 500
    with pytest.raises(CallTooLarge, match=r"more than 499 \(query, window\) pairs.*rerank.max_pairs_per_request \(499\)"):
        tokenizer.pairs_at_least(QUERY, ["a " * 5000], truncate=False, windowing=True, max_pairs=499)


def test_the_admission_bound_refuses_a_bad_query_as_such_first() -> None:
    """A query that leaves too short a window is INVALID_ARGUMENT naming the query (and
    truncate=True), before the call is sized: not a call too large or too slow for its deadline."""
    strict = PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX, min_window_tokens=8)
    with pytest.raises(InvalidArgument, match=r"query takes 12 tokens.*pass truncate=True") as refused:
        strict.pairs_at_least("a b c d e f g h i j k l", ["a " * 50_000], truncate=False, windowing=True, max_pairs=10)
    assert not isinstance(refused.value, CallTooLarge)


_ALPHABET = list("ab Z9 _-'.,\u0301\u00e9\x1c\t\n\u200b北😀 ")


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    st.text(st.sampled_from(_ALPHABET), min_size=1, max_size=30).filter(lambda q: bool(q.strip())),
    st.lists(st.text(st.sampled_from(_ALPHABET), min_size=1, max_size=120), min_size=1, max_size=4),
    st.booleans(),
)
def test_the_admission_bound_never_exceeds_the_real_pairs_of_generated_text(query: str, documents: list[str], truncate: bool) -> None:
    strict = PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX, min_window_tokens=4)
    try:
        real = _real_work(strict, query, documents, truncate, True, 4)
    except InvalidArgument:
        return  # refused after tokenizing (an unreadable query or document): no work to bound
    assert _at_most(strict.pairs_at_least(query, documents, truncate=truncate, windowing=True, max_pairs=10_000), real)


def test_a_query_that_leaves_windows_under_the_minimum_is_refused_naming_the_limit() -> None:
    """With 16 tokens per pair and at least 8 per window (`rerank.min_window_tokens`), the
    3-token QUERY leaves 10 and is read; a 6-token query leaves 7 and is refused, naming its
    tokens, what is left, the key and the longest query that fits (16 - 3 special - 8 = 5)."""
    strict = PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX, min_window_tokens=8)
    assert strict.window_tokens(QUERY)[1] == 10
    assert strict.window_tokens("a b c d e")[1] == 8
    with pytest.raises(InvalidArgument, match=r"query takes 6 tokens.*only 7 document tokens per window are left, under rerank.min_window_tokens \(8\).*at most 5 tokens"):
        strict.window_tokens("a b c d e f")


def test_truncate_cuts_a_query_that_leaves_too_short_a_window() -> None:
    """With truncate=True a query too long for `rerank.min_window_tokens` is cut to its first
    tokens so that exactly that many document tokens are left (as CrossEncoder truncates a pair
    that does not fit); without it the refusal names truncate=True; a caller without the option
    (truncate None: a reranked search) is not told to pass it."""
    strict = PairTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX, min_window_tokens=8)
    encoding, room = strict.window_tokens("a b c d e f g h i j k l m n", truncate=True)
    assert room == 8 and encoding.tokens == ["a", "b", "c", "d", "e"]  # 16 - 3 special - 8
    with pytest.raises(InvalidArgument, match=r"at most 5 tokens \(or pass truncate=True to cut it there\)"):
        strict.window_tokens("a b c d e f", truncate=False)
    with pytest.raises(InvalidArgument, match=r"at most 5 tokens$"):
        strict.window_tokens("a b c d e f")
    batch = strict("a b c d e f g h i j k l m n", ["paris is the capital of france and a big city"], truncate=True,
                   windowing=True, overlap=2, max_pairs=10)  # fmt: skip
    assert batch.input_ids.shape == (1, MAX) and bool(batch.truncated[0])
