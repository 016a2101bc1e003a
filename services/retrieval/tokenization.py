"""Text → model inputs with a fast (Rust) tokenizer, the same in the service and in export checks.

User text is text: a special-token string in it (`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`, `[UNK]`)
is split like any other characters (`[`, `cl`, `##s`, `]`); the only special tokens the model
sees are the ones the tokenizer's template adds around each text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from services.runtime.errors import InvalidArgument
from services.text import tokens_at_least

_WHITESPACE = re.compile(r"\s")
_CUT_WORD_SEARCH_CHARS = 1024


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [batch, seq], padded with the pad id
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_counts: np.ndarray  # int32 [batch], after truncation, special tokens included
    truncated: np.ndarray  # bool [batch]


class TextTokenizer:
    """Tokenizes batches of text to `max_seq_length` tokens (special tokens included).

    Args:
        tokenizer_file: a Hugging Face `tokenizer.json`.
        max_seq_length: tokens the model takes, its template's special tokens included.
        truncate_chars_per_token: with truncation on, a text longer than
            `max_seq_length * truncate_chars_per_token` characters is cut to that length before
            it is tokenized, when the cut provably keeps the same tokens (else the whole text is
            tokenized): a 100,000-character text costs what a short one does.
    """

    def __init__(self, tokenizer_file: str | Path, max_seq_length: int, truncate_chars_per_token: int = 16) -> None:
        self.max_seq_length = max_seq_length
        self._cut_chars = max_seq_length * truncate_chars_per_token
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        # Special-token strings in user text are matched as plain text, never as special tokens.
        self._tokenizer.encode_special_tokens = True
        # The tokenizer's own truncation keeps its special tokens ([CLS] ... [SEP]) in place.
        self._tokenizer.enable_truncation(max_seq_length)
        self.special_tokens = self._tokenizer.post_processor.num_special_tokens_to_add(False) if self._tokenizer.post_processor else 0
        pad = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def tokens_at_least(self, texts: list[str], prompt: str = "") -> int:
        """A lower bound of the tokens (special tokens included, each text capped at
        max_seq_length) that `texts`, each after `prompt`, tokenize to, known without tokenizing
        (`services.text.tokens_at_least`)."""
        return tokens_at_least(texts, prompt, self.max_seq_length, self.special_tokens)

    def content_tokens(self, text: str) -> int:
        """Tokens of `text` alone, without the template's special tokens and without truncation
        (`text` should be short: a prompt)."""
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return len(encoding.ids) + sum(len(o.ids) for o in encoding.overflowing)

    def _encode_truncated(self, texts: list[str]) -> list[Encoding]:
        """The first max_seq_length tokens of each text, tokenizing only a prefix where that is exact."""
        heads = [t[: self._cut_chars] for t in texts]
        encodings = self._tokenizer.encode_batch(heads)
        redo = []
        for i, (text, head, encoding) in enumerate(zip(texts, heads, encodings, strict=True)):
            if len(text) <= len(head):
                continue
            # Only the word the cut goes through can tokenize differently; the tokens kept are
            # the whole text's when they all end before the last whitespace of the prefix.
            tail = head[-_CUT_WORD_SEARCH_CHARS:]
            spaces = [m.start() for m in _WHITESPACE.finditer(tail)]
            ends = [end for (_, end), special in zip(encoding.offsets, encoding.special_tokens_mask, strict=True) if not special]
            boundary = spaces[-1] + len(head) - len(tail) if spaces else -1
            if not (encoding.overflowing and ends and ends[-1] <= boundary):
                redo.append(i)
        if redo:
            for i, encoding in zip(redo, self._tokenizer.encode_batch([texts[i] for i in redo]), strict=True):
                encodings[i] = encoding
        return encodings

    def __call__(self, texts: list[str], *, truncate: bool = True, names: Sequence[str] | None = None) -> TokenBatch:
        """Tokenize `texts`.

        Args:
            texts: the texts.
            truncate: cut each to max_seq_length tokens (else refuse a longer one).
            names: each text's name in messages, the request field it came from (e.g.
                "texts[3]", "documents[7].text", "query"); default "text <i>".
        Returns:
            TokenBatch: int64 ids and mask [len(texts), longest], counts and truncation flags.
        Raises:
            InvalidArgument: with truncate=False, a text longer than max_seq_length tokens; a
                text that leaves no token besides the template's (only characters the
                tokenizer drops).
        """
        if truncate:
            encodings = self._encode_truncated(texts)
        else:
            encodings = self._tokenizer.encode_batch(texts)
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        if not truncate and truncated.any():
            i = int(np.argmax(truncated))
            raise InvalidArgument(
                f"{names[i] if names is not None else f'text {i}'} is longer than the model's {self.max_seq_length} tokens; "
                "shorten it or allow truncation (truncate=True)"
            )
        counts = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        for i, count in enumerate(counts):
            if count <= self.special_tokens:
                name = names[i] if names is not None else f"text {i}"
                raise InvalidArgument(f"{name} has no token the model reads (only characters the tokenizer drops)")
        width = int(counts.max()) if len(counts) else 0
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask, token_counts=counts, truncated=truncated)
