"""Text ↔ tokens for the SAE capability: the one place where text is tokenized (user text at
serving time, the corpus at build time) and where token ids become display strings.

Rules (README "SAE tokens and spans"):

- Text is text. A user's text and the corpus are tokenized as plain characters: a special-token
  string such as ``<|endoftext|>`` in the text is split like any other characters. Only an
  explicit request (`allow_special=True`) lets such strings become special tokens.
- Every token carries its character span ``[start, end)`` in the text it came from, counted in
  Unicode code points (Python ``str`` indices). The spans tile the text: in order, contiguous, not
  overlapping, from 0 to ``len(text)``, so ``"".join(text[s:e])`` over the tokens is the text.
- A byte-level BPE token may hold only some bytes of a character (an emoji is 4 bytes, often in
  2-3 tokens). Such a character belongs to the *first* token holding any of its bytes; the later
  ones get an empty span (start == end) right after it. Every token that holds part of a
  character is marked ``partial``. A display string is ``text[start:end]``: it is never U+FFFD
  (unless the text itself contains U+FFFD).
- Characters no token covers (whitespace a tokenizer drops) go to the token after them; those at
  the end go to the last token.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders

PAD = -1  # token id outside a context in a stored window
_PARTIAL, _SPECIAL = 1, 2  # bits of the stored flags


def character_spans(offsets: Sequence[tuple[int, int]], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolve a fast tokenizer's offsets into spans that tile the text (the rules of this module).

    The fast tokenizer gives every byte piece of a multi-byte character that character's span,
    so several tokens share it; this is the one function that decides who owns it.

    Args:
        offsets: per token, (start, end) in code points of the text, as the tokenizer reports them.
        length: the text's length in code points.
    Returns:
        (starts int32 [n], ends int32 [n], partial bool [n]): spans in code points, contiguous
        from 0 to `length` when n > 0; partial marks tokens that share a character with a neighbour.
    """
    n = len(offsets)
    starts = np.zeros(n, dtype=np.int32)
    ends = np.zeros(n, dtype=np.int32)
    partial = np.zeros(n, dtype=bool)
    cursor = 0
    for i, (s, e) in enumerate(offsets):
        starts[i] = cursor
        cursor = max(cursor, min(int(e), length))
        ends[i] = cursor
        if i > 0 and s < offsets[i - 1][1] and s < e:
            partial[i] = partial[i - 1] = True
    if n:
        ends[-1] = length
    return starts, ends, partial


@dataclasses.dataclass(frozen=True)
class TokenizedText:
    """A text and its tokens.

    Attributes:
        text: the text the spans index (code points).
        ids: int64 [n] token ids.
        starts: int32 [n] span starts, code points of `text`.
        ends: int32 [n] span ends (exclusive).
        partial: bool [n] the token holds part of a character.
        special: bool [n] a special token (e.g. <|endoftext|>): its span holds its literal string.
    """

    text: str
    ids: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    partial: np.ndarray
    special: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def pieces(self) -> list[str]:
        """Each token's display string, `text[start:end]`; they join to `text`."""
        return [self.text[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True)]

    def window(self, begin: int, end: int) -> TokenizedText:
        """Tokens [begin, end) with their own text (spans rebased to it)."""
        begin, end = max(begin, 0), min(end, len(self))
        if end <= begin:
            return concat([])
        first, last = int(self.starts[begin]), int(self.ends[end - 1])
        return TokenizedText(
            self.text[first:last], self.ids[begin:end], self.starts[begin:end] - first, self.ends[begin:end] - first,
            self.partial[begin:end], self.special[begin:end],
        )  # fmt: skip


def concat(parts: Sequence[TokenizedText]) -> TokenizedText:
    """Several tokenized texts one after another (spans shifted onto the joined text)."""
    shifts = np.cumsum([0] + [len(p.text) for p in parts])
    return TokenizedText(
        "".join(p.text for p in parts),
        np.concatenate([p.ids for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
        np.concatenate([p.starts + s for p, s in zip(parts, shifts, strict=False)]).astype(np.int32) if parts else np.zeros(0, np.int32),
        np.concatenate([p.ends + s for p, s in zip(parts, shifts, strict=False)]).astype(np.int32) if parts else np.zeros(0, np.int32),
        np.concatenate([p.partial for p in parts]).astype(bool) if parts else np.zeros(0, bool),
        np.concatenate([p.special for p in parts]).astype(bool) if parts else np.zeros(0, bool),
    )


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class SaeTokenizer:
    """The LM's fast tokenizer (`tokenizer.json`) with the rules of this module."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        serialized = tokenizer.to_str()
        self._plain = Tokenizer.from_str(serialized)  # special-token strings are split as text
        self._plain.encode_special_tokens = True
        self._with_special = Tokenizer.from_str(serialized)
        self._with_special.encode_special_tokens = False
        for t in (self._plain, self._with_special):
            t.no_padding()
            t.no_truncation()
        self.special_ids = frozenset(i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special)
        self._byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)

    @classmethod
    def from_file(cls, path: str | Path) -> SaeTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str, *, allow_special: bool = False) -> TokenizedText:
        """Tokenize `text` without adding any token (no BOS/EOS).

        Args:
            text: any string.
            allow_special: let special-token strings in the text become special tokens; by
                default they are split as plain text.
        Returns:
            The tokens with spans that tile `text`.
        """
        tokenizer = self._with_special if allow_special else self._plain
        encoding = tokenizer.encode(text, add_special_tokens=False)
        starts, ends, partial = character_spans(encoding.offsets, len(text))
        ids = np.asarray(encoding.ids, dtype=np.int64)
        special = np.isin(ids, np.fromiter(self.special_ids, dtype=np.int64, count=len(self.special_ids)))
        return TokenizedText(text, ids, starts, ends, partial, special)

    def special_token(self, token_id: int) -> TokenizedText:
        """One special token (e.g. the EOS between corpus documents), its literal string as text."""
        text = self._plain.id_to_token(token_id) or ""
        one = np.ones(1, dtype=bool)
        return TokenizedText(text, np.array([token_id], np.int64), np.zeros(1, np.int32), np.full(1, len(text), np.int32), ~one, one)

    def vocabulary_piece(self, token_id: int) -> tuple[str, bool]:
        """A vocabulary entry out of context (e.g. a promoted output token) as (display, partial).

        Bytes that are not whole UTF-8 characters are shown as `\\xNN` escapes (partial True),
        never as U+FFFD.
        """
        if token_id in self.special_ids or not self._byte_level:
            return self._plain.id_to_token(token_id) or "", False
        piece = self._plain.id_to_token(token_id) or ""
        table = _byte_of_char()
        if not all(c in table for c in piece):
            return piece, False
        raw = bytes(table[c] for c in piece)
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="backslashreplace"), True


# -- stored windows (top-activation contexts, the activation cache's contexts) -------------------


def pack_windows(windows: Sequence[TokenizedText], width: int, shape: tuple[int, ...], prefix: str) -> dict[str, np.ndarray]:
    """Arrays (for an .npz) holding `windows`, each padded to `width` tokens with PAD ids.

    Args:
        windows: len == prod(shape), row-major.
        width: tokens per stored window.
        shape: the leading shape, e.g. (units, k).
        prefix: key prefix, e.g. "top_".
    Returns:
        {prefix+"windows": int32 [*shape, width] ids (PAD where none), prefix+"lengths": int32
        [*shape, width] code points per token, prefix+"flags": uint8 (1 partial, 2 special),
        prefix+"text": uint8 UTF-8 of every window's text joined, prefix+"text_starts": int64
        [*shape] where each window's text begins (code points of the decoded text)}.
    """
    n = len(windows)
    ids = np.full((n, width), PAD, dtype=np.int32)
    lengths = np.zeros((n, width), dtype=np.int32)
    flags = np.zeros((n, width), dtype=np.uint8)
    text_starts = np.zeros(n, dtype=np.int64)
    cursor = 0
    for i, w in enumerate(windows):
        m = len(w)
        ids[i, :m] = w.ids
        lengths[i, :m] = w.ends - w.starts
        flags[i, :m] = w.partial * _PARTIAL + w.special * _SPECIAL
        text_starts[i] = cursor
        cursor += len(w.text)
    text = np.frombuffer("".join(w.text for w in windows).encode("utf-8", errors="surrogatepass"), dtype=np.uint8)
    return {
        prefix + "windows": ids.reshape(*shape, width),
        prefix + "lengths": lengths.reshape(*shape, width),
        prefix + "flags": flags.reshape(*shape, width),
        prefix + "text": text,
        prefix + "text_starts": text_starts.reshape(shape),
    }


class StoredWindows:
    """Windows written by `pack_windows`, read back as TokenizedText."""

    def __init__(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        self.ids = np.asarray(arrays[prefix + "windows"])
        self.lengths = np.asarray(arrays[prefix + "lengths"])
        self.flags = np.asarray(arrays[prefix + "flags"])
        self.text_starts = np.asarray(arrays[prefix + "text_starts"])
        self.text = np.asarray(arrays[prefix + "text"], dtype=np.uint8).tobytes().decode("utf-8", errors="surrogatepass")

    def get(self, *index: int) -> TokenizedText:
        """The window at `index` (leading indices), PAD tokens dropped."""
        ids, lengths, flags = self.ids[index], self.lengths[index], self.flags[index]
        keep = ids != PAD
        lengths = lengths[keep]
        ends = np.cumsum(lengths).astype(np.int32)
        begin = int(self.text_starts[index])
        return TokenizedText(
            self.text[begin : begin + (int(ends[-1]) if len(ends) else 0)], ids[keep].astype(np.int64), ends - lengths, ends,
            (flags[keep] & _PARTIAL) > 0, (flags[keep] & _SPECIAL) > 0,
        )  # fmt: skip

    def first_kept(self, *index: int) -> int:
        """How many PAD ids lead the window at `index` (to map a window position to a token index)."""
        ids = self.ids[index]
        return int(np.argmax(ids != PAD)) if (ids != PAD).any() else len(ids)
