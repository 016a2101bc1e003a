"""Text → model inputs with a fast (Rust) tokenizer, the same in the service and in export checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from services.runtime.errors import InvalidArgument


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [batch, seq], padded with the pad id
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_counts: np.ndarray  # int32 [batch], after truncation, special tokens included
    truncated: np.ndarray  # bool [batch]


class TextTokenizer:
    """Tokenizes batches of text to `max_seq_length` tokens (special tokens included)."""

    def __init__(self, tokenizer_file: str | Path, max_seq_length: int) -> None:
        self.max_seq_length = max_seq_length
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        # The tokenizer's own truncation keeps its special tokens ([CLS] ... [SEP]) in place.
        self._tokenizer.enable_truncation(max_seq_length)
        pad = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def __call__(self, texts: list[str], *, truncate: bool = True) -> TokenBatch:
        encodings = self._tokenizer.encode_batch(texts)
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        if not truncate and truncated.any():
            i = int(np.argmax(truncated))
            raise InvalidArgument(
                f"text {i} is longer than the model's {self.max_seq_length} tokens; "
                "shorten it or allow truncation (truncate=True)"
            )
        counts = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        width = int(counts.max()) if len(counts) else 0
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask, token_counts=counts, truncated=truncated)
