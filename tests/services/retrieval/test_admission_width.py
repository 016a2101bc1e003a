"""Admission sizes an Embed call before tokenizing it with `TextTokenizer.tokens_at_least`: a
lower bound, so a call is never refused for work it would not have done, and a tight one (an
estimate far below the real work lets overload in: the bound it replaced, a token per 101
characters, counted about 1 token in 20). Checked on the default model's real tokenizer."""

from __future__ import annotations

import csv
import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from services.retrieval.tokenization import TextTokenizer
from tests.serving import RARB_DATA
from training.retrieval.export import packaged_minilm_dir

MAX_SEQ_LENGTH = 256
HARD = [
    "a\u0301 \u0301 \u0301\u0301 b",  # combining marks alone between spaces: stripped by an uncased model
    "a\x1cb\x1dc\x1ed\x1ff",  # controls the tokenizer drops, which str.split() calls whitespace
    "don't stop-believing_now",
    "I ❤️ 🤖 naïve café 北京 Привет",
    "\u200b\u200d\ufeff word \u2060",
    "x" * 5000,  # one word far past the truncation cut
    "word " * 400,  # more words than the model reads
    "[CLS] [SEP] [MASK]",
    "1,234.56 $% ^&* ()",
    "\t\n\r tabs\tand\nnewlines\r",
]


@functools.cache
def _service_tokenizer() -> TextTokenizer:
    return TextTokenizer(packaged_minilm_dir() / "tokenizer.json", MAX_SEQ_LENGTH)


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return _service_tokenizer()


@functools.cache
def _reference_tokenizer() -> Tokenizer:
    """The tokenizer as the model reads text: plain text, truncated to its sequence length."""
    raw = Tokenizer.from_file(str(packaged_minilm_dir() / "tokenizer.json"))
    raw.no_padding()
    raw.encode_special_tokens = True
    raw.enable_truncation(MAX_SEQ_LENGTH)
    return raw


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    return _reference_tokenizer()


def _real(reference: Tokenizer, texts: list[str], prompt: str = "") -> int:
    return sum(len(e.ids) for e in reference.encode_batch([prompt + t for t in texts]))


@pytest.mark.parametrize("text", HARD)
@pytest.mark.parametrize("prompt", ["", "query:", "query: "])
def test_the_bound_never_exceeds_the_real_tokens_of_hard_text(tokenizer: TextTokenizer, reference: Tokenizer, text: str, prompt: str) -> None:
    assert tokenizer.tokens_at_least([text], prompt) <= _real(reference, [text], prompt)


def test_on_real_sentences_the_bound_is_below_and_close_to_the_real_count(tokenizer: TextTokenizer, reference: Tokenizer) -> None:
    texts: list[str] = []
    for path in sorted((RARB_DATA).glob("*.csv")):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                texts.append(row["queries"])
    texts = [t for t in texts if t.strip()][::10]
    assert len(texts) > 500
    bounds = [tokenizer.tokens_at_least([t]) for t in texts]
    reals = [len(e.ids) for e in reference.encode_batch(texts)]
    assert all(b <= r for b, r in zip(bounds, reals, strict=True))
    # a batch's bound is the sum of its texts'
    assert tokenizer.tokens_at_least(texts) == sum(bounds)
    assert sum(bounds) >= 0.6 * sum(reals), "the bound is too loose to keep overload out"


_ALPHABET = list("ab Z9 _-'.,\u0301\u00e9\x1c\x00\t\n\u200b北😀\ufffd ")


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.lists(st.text(st.sampled_from(_ALPHABET), min_size=1, max_size=60), min_size=1, max_size=4), st.sampled_from(["", "q:", "q: "]))
def test_the_bound_never_exceeds_the_real_tokens_of_generated_text(texts: list[str], prompt: str) -> None:
    assert _service_tokenizer().tokens_at_least(texts, prompt) <= _real(_reference_tokenizer(), texts, prompt)
