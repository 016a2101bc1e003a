"""Token ids back to text: what users read and what BLEU to the source is computed on."""

from __future__ import annotations

from services.paraphrase.tokenization import clean_up_spaces, decode
from training.paraphrase.data import build_tokenizer

SENTENCES = ["What's the best way to learn Python?", "I don't know, it's fine.", "We're sure they've gone!"]


def test_decoded_text_keeps_contractions_and_punctuation_as_written() -> None:
    tokenizer = build_tokenizer(SENTENCES)
    for text in SENTENCES:
        ids = tokenizer.encode(text).ids
        assert " ' " in tokenizer.decode(ids)  # what tokenizers 0.23 gives on its own
        assert decode(tokenizer, ids) == text.lower()


def test_clean_up_leaves_ordinary_text_alone() -> None:
    assert clean_up_spaces("how do i learn python") == "how do i learn python"
    assert clean_up_spaces("what ' s new , friend ?") == "what's new, friend?"
