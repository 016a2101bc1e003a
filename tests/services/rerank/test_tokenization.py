"""Pairs and windows of the rerank tokenizer, on MiniLM's real tokenizer (the cross-encoders' own)."""

from __future__ import annotations

import string

import numpy as np
import pytest
from tokenizers import Tokenizer

from services.rerank.tokenization import PairBatch, PairTokenizer
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


def test_the_admission_bound_never_exceeds_the_real_pairs(tokenizer: PairTokenizer) -> None:
    """Rerank sizes a call before tokenizing it with the shared `services.text.tokens_at_least`
    (one row per document, each capped at the pair length): a call is never refused for work it
    would not do, so the bound stays at or under each document's first real pair."""
    from services.text import tokens_at_least

    documents = ["paris is the capital of france", "a " * 40, "e=mc^2, (einstein 1905)", "naïve café's crème brûlée", "x"]
    real = _pairs(tokenizer, documents, truncate=True).token_counts  # one pair per document: its first window
    for document, count in zip(documents, real, strict=True):
        assert tokens_at_least([document], QUERY + " ", tokenizer.max_seq_length, tokenizer.pair_special_tokens) <= count
    assert tokens_at_least(documents, QUERY + " ", tokenizer.max_seq_length, tokenizer.pair_special_tokens) <= real.sum()


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
