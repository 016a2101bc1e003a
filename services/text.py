"""Plain-text checks shared by the services that read user text (embedding, reranking): which
text shows nothing, and a tokenizer-free lower bound of a text's token count.

Both are properties of the text, not of one service's tokenizer: the embedding service
(`services.retrieval`) and the reranker (`services.rerank`, and search's reranking) apply the
same rules, so the same input is refused or admitted the same way by both.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable

# Characters that show nothing: Unicode whitespace and separators (Zs, Zl, Zp), controls (Cc),
# format characters (Cf: zero-width space and joiners, BOM, bidi marks, ...), and the Hangul and
# Braille fillers, which render as blank.
BLANK_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})
_BLANK_EXTRA = "\u115f\u1160\u2800\u3164\uffa0"

# A run of non-space characters with at least one letter or digit (greedy: one match per
# space-separated chunk that has one). WordPiece, byte-level BPE and SentencePiece all split at a
# plain space and keep letters and digits, so each such chunk is at least one token.
_ALNUM_CHUNK = re.compile(r"[^ ]*[^\W_]")


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


def is_blank(text: str) -> bool:
    """True when `text` has no visible character: it is empty, or every character is Unicode
    whitespace, a control or format character (categories Zs, Zl, Zp, Cc, Cf: e.g. U+200B
    zero-width space, U+FEFF) or a blank filler (U+115F, U+1160, U+2800, U+3164, U+FFA0).

    Args:
        text: any string.
    Returns:
        Whether a reader would see nothing in it.
    """
    return _visible_pattern().search(text) is None


def chunks_at_least(text: str) -> int:
    """A lower bound of the tokens `text` alone tokenizes to, uncapped: its space-separated chunks
    holding a letter or digit (see `tokens_at_least`). The reranker sizes a long document's
    windows with it before tokenizing.

    Args:
        text: any string.
    Returns:
        The bound (int, >= 0).
    """
    return len(_ALNUM_CHUNK.findall(text))


def tokens_at_least(texts: Iterable[str], prefix: str, max_tokens: int, special_tokens: int) -> int:
    """A lower bound of the tokens that `texts`, each after `prefix`, tokenize to, known without
    tokenizing: one per space-separated chunk holding a letter or digit, plus the template's
    `special_tokens`, each text capped at `max_tokens`. Admission control sizes a call with it
    before tokenizing, so a call is never refused for work it would not have done. On English
    prose it is about three quarters of the real count of a WordPiece tokenizer (RAR-b sentences,
    tests/services/retrieval/test_admission_width.py).

    Args:
        texts: the texts.
        prefix: prepended to every text (a prompt, or a reranker's query and a space).
        max_tokens: the most tokens one text counts for (the model's max_seq_length).
        special_tokens: tokens the template adds to every text.
    Returns:
        The bound, summed over `texts` (int, >= 0).
    """
    return sum(min(max_tokens, chunks_at_least(prefix + t) + special_tokens) for t in texts)
