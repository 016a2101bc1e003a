"""Paraphrasers' token ids back to text, written once for the service, the builds and the evaluation.

`tokenizers` (0.23) applies its WordPiece decoder's clean-up to each token on its own, so the
clean-up's multi-token patterns never match and `decode` gives "what ' s the best way ?" for
"What's the best way?"; transformers' `decode(..., clean_up_tokenization_spaces=True)` — what the
paper's code decodes with — joins them again. `decode` does the same here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    """What `decode` needs of a tokenizer (`tokenizers.Tokenizer` has it)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


def clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before . ? ! , and inside the English
    contractions ("what ' s" -> "what's", "don ' t" -> "don't"). A no-op on ordinary text."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def decode(tokenizer: Decoder, ids: Sequence[int]) -> str:
    """The text of token `ids` (special tokens skipped), spaced as transformers decodes it."""
    return clean_up_spaces(tokenizer.decode(list(ids)))
