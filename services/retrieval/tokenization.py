"""Text → model inputs with a fast (Rust) tokenizer, the same in the service and in export checks.

User text is text: a special-token string in it (`[CLS]`, `[SEP]`, `[MASK]`, `[PAD]`, `[UNK]`)
is split like any other characters (`[`, `cl`, `##s`, `]`); the only special tokens the model
sees are the ones the tokenizer's template adds around each text.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
import unicodedata
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from services.runtime.errors import InvalidArgument

# Characters that show nothing: Unicode whitespace and separators (Zs, Zl, Zp), controls (Cc),
# format characters (Cf: zero-width space and joiners, BOM, bidi marks, ...), and the Hangul and
# Braille fillers, which render as blank.
BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
_BLANK_EXTRA = "\u115f\u1160\u2800\u3164\uffa0"


@functools.cache
def _visible_pattern() -> re.Pattern[str]:
    ranges: list[tuple[int, int]] = []
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char) in BLANK_CATEGORIES or char in _BLANK_EXTRA:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    members = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[^{members}]")


_WHITESPACE = re.compile(r"\s")
# A run of non-space characters with at least one letter or digit (greedy: one match per
# space-separated chunk that has one). WordPiece, byte-level BPE and SentencePiece all split at a
# plain space and keep letters and digits, so each such chunk is at least one token.
_ALNUM_CHUNK = re.compile(r"[^ ]*[^\W_]")
_CUT_WORD_SEARCH_CHARS = 1024


def is_blank(text: str) -> bool:
    """True when `text` has no visible character: it is empty, or every character is Unicode
    whitespace, a control or format character (categories Zs, Zl, Zp, Cc, Cf: e.g. U+200B
    zero-width space, U+FEFF) or a blank filler (U+115F, U+1160, U+2800, U+3164, U+FFA0)."""
    return _visible_pattern().search(text) is None


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
        max_seq_length) that `texts`, each after `prompt`, tokenize to, known without tokenizing:
        one per space-separated chunk holding a letter or digit. Admission control sizes a call
        with it before tokenizing, so a call is never refused for work it would not have done.
        On English prose it is about three quarters of the real count (RAR-b sentences)."""
        return sum(min(self.max_seq_length, len(_ALNUM_CHUNK.findall(prompt + t)) + self.special_tokens) for t in texts)

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

    def __call__(self, texts: list[str], *, truncate: bool = True) -> TokenBatch:
        """Tokenize `texts`.

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
                f"text {i} is longer than the model's {self.max_seq_length} tokens; "
                "shorten it or allow truncation (truncate=True)"
            )
        counts = np.array([len(e.ids) for e in encodings], dtype=np.int32)
        for i, count in enumerate(counts):
            if count <= self.special_tokens:
                raise InvalidArgument(f"text {i} has no token the model reads (only characters the tokenizer drops)")
        width = int(counts.max()) if len(counts) else 0
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
        return TokenBatch(input_ids=ids, attention_mask=mask, token_counts=counts, truncated=truncated)
