"""(query, document) pairs → cross-encoder inputs, with long documents cut into windows.

The model's own `tokenizer.json` tokenizes the query and each document once (a fast Rust
tokenizer); its pair template then joins the query with each window of a document
(`[CLS] query [SEP] window [SEP]`, token type ids 0 then 1). User text is text: special-token
strings in it (`[CLS]`, `[SEP]`, ...) are split like any other characters, as in the embedding
service (`services.retrieval.tokenization`).

A window holds as many document tokens as the model's `max_seq_length` leaves beside the query
and the template's special tokens. A document longer than one window is cut into windows that
overlap by `overlap` tokens (at most half a window), as BERT's reading-comprehension fine-tuning
does with its "doc_stride" (Devlin et al. 2019, "BERT", §4.2, SQuAD), or only its first window
is kept (truncation).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from services.runtime.errors import InvalidArgument
from services.text import chunks_at_least


class CallTooLarge(InvalidArgument):
    """INVALID_ARGUMENT for the documents of one call taken together (their number, characters or
    pairs over a `[rerank]` per-call limit), not for one document or the query: fewer documents
    fix it (a reranked search: fewer candidates).

    Args:
        limit: what is over which limit (names the config key).
        remedy: what a Rerank caller can do about it.
    """

    def __init__(self, limit: str, remedy: str) -> None:
        super().__init__(f"{limit}: {remedy}")
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class PairBatch:
    """The pairs of one call, one row per (query, window).

    Attributes:
        input_ids: int64 [pairs, longest], padded with the pad id.
        attention_mask: int64 [pairs, longest].
        token_type_ids: int64 [pairs, longest] (0: query side, 1: document side; 0 on padding).
        token_counts: int32 [pairs], special tokens included.
        document: int32 [pairs], the index of the document each pair belongs to.
        windowed: bool [documents], scored by more than one window.
        truncated: bool [documents], cut to its first window.
        unreadable: bool [documents], no token the model reads (no pair; only with
            `skip_unreadable`, else such a document is refused).
        query_truncated: the query was cut to fit (`window_tokens` with truncate).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    token_counts: np.ndarray
    document: np.ndarray
    windowed: np.ndarray
    truncated: np.ndarray
    unreadable: np.ndarray
    query_truncated: bool = False


class PairTokenizer:
    """Tokenizes a query with its documents into pairs of at most `max_seq_length` tokens.

    Args:
        tokenizer_file: the cross-encoder's `tokenizer.json` (with its pair template).
        max_seq_length: tokens of one pair the model takes, special tokens included.
        min_window_tokens: the fewest document tokens a query may leave in one pair
            (`rerank.min_window_tokens`; 1: any room at all). A query longer than that leaves
            windows too short to mean anything (a 2-token window of a document scores as noise).
    """

    def __init__(self, tokenizer_file: str | Path, max_seq_length: int, min_window_tokens: int = 1) -> None:
        self.max_seq_length = max_seq_length
        self.min_window_tokens = max(1, min_window_tokens)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        # Special-token strings in user text are matched as plain text, never as special tokens.
        self._tokenizer.encode_special_tokens = True
        processor = self._tokenizer.post_processor
        self.pair_special_tokens = processor.num_special_tokens_to_add(True) if processor else 0
        pad = self._tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad is None else pad

    def window_tokens(self, query: str, truncate: bool | None = None) -> tuple[Encoding, int]:
        """The query's tokens and how many document tokens fit beside it in one pair.

        Args:
            query: the query, not blank.
            truncate: True: cut a query that leaves fewer than `min_window_tokens` document tokens
                to its first tokens, so that exactly that many are left (sentence-transformers'
                CrossEncoder likewise truncates the longer text of a pair that does not fit);
                False: refuse it, naming truncate=True; None: refuse it (a caller without that
                option, a reranked search).
        Raises:
            InvalidArgument: the query has no token the model reads, or (without truncate) it
                leaves fewer than `min_window_tokens` document tokens in a pair (none: no room
                for a document).
        """
        encoding = self._tokenizer.encode(query, add_special_tokens=False)
        if not encoding.ids:
            raise InvalidArgument("query has no token the model reads (only characters the tokenizer drops)")
        room = self.max_seq_length - self.pair_special_tokens - len(encoding.ids)
        least = self.min_window_tokens
        most = self.max_seq_length - self.pair_special_tokens - least
        if room < least and truncate and most >= 1:
            encoding.truncate(most)
            return encoding, least
        if room < least:
            left = (
                "no room is left for a document"
                if room < 1
                else f"only {room} document token{'s' if room != 1 else ''} per window {'are' if room != 1 else 'is'} left, "
                f"under rerank.min_window_tokens ({least}) (a shorter window cannot carry a document's meaning)"
            )
            fix = (
                f"shorten the query to at most {most} tokens" + (" (or pass truncate=True to cut it there)" if truncate is False else "")
                if most >= 1
                else f"no query fits this model with rerank.min_window_tokens ({least}): lower it"
            )
            raise InvalidArgument(
                f"query takes {len(encoding.ids)} tokens; the model reads {self.max_seq_length} tokens per (query, document) "
                f"pair, {self.pair_special_tokens} of them special, so {left}: {fix}"
            )
        return encoding, room

    def pairs_at_least(self, query: str, documents: list[str], *, truncate: bool, windowing: bool, max_pairs: int) -> tuple[int, int]:
        """Lower bounds of the (query, window) pairs a call makes and of their tokens, known
        after tokenizing the query alone, so that admission can refuse a call too large for its
        deadline before tokenizing its documents (tokenizing a 100,000-character document alone
        takes a large part of a short deadline on 2 cores).

        Each document counts at least one pair; with windowing (and not truncate), a document of
        at least L tokens (`services.text.chunks_at_least`) beside the query's window of R
        document tokens makes at least ceil(L / R) windows (overlap only adds windows).

        Args:
            query: the query, not blank.
            documents: the documents.
            truncate: a long document is cut to its first window (one pair); as `window_tokens`.
            windowing: a long document is windowed (else one pair: it is refused later).
            max_pairs: the most pairs the call may make (`rerank.max_pairs_per_request`).
        Returns:
            (pairs, tokens): ints >= 1; tokens counts special tokens and the query in every pair.
        Raises:
            InvalidArgument: the query, as `window_tokens` (before the call is sized, so a query
                too long is refused as such, not as a call too large).
            CallTooLarge: the bound already exceeds `max_pairs`, as `__call__` would find.
        """
        query_encoding, room = self.window_tokens(query, truncate)
        per_pair = len(query_encoding.ids) + self.pair_special_tokens
        pairs = tokens = 0
        for document in documents:
            length = chunks_at_least(document)
            windows = max(1, -(-length // room)) if windowing and not truncate else 1
            pairs += windows
            tokens += windows * per_pair + min(length, windows * room)
        if pairs > max_pairs:
            raise self._too_many_pairs(max_pairs, room)
        return pairs, tokens

    @staticmethod
    def _too_many_pairs(max_pairs: int, room: int) -> CallTooLarge:
        return CallTooLarge(
            f"the documents make more than {max_pairs} (query, window) pairs (a document longer than the model's "
            f"{room}-token window beside this query is scored window by window); the limit is "
            f"rerank.max_pairs_per_request ({max_pairs})",
            "send fewer or shorter documents, or pass truncate=True",
        )

    def __call__(
        self,
        query: str,
        documents: list[str],
        *,
        truncate: bool,
        windowing: bool,
        overlap: int,
        max_pairs: int,
        skip_unreadable: bool = False,
    ) -> PairBatch:
        """Tokenize `query` with every document.

        Args:
            query: the query, not blank.
            documents: the documents, none blank.
            truncate: keep only the first window of a longer document, and cut a query that
                leaves fewer than `min_window_tokens` document tokens (`window_tokens`).
            windowing: with truncate False, cut a longer document into overlapping windows
                (else refuse it).
            overlap: document tokens consecutive windows share (capped at half a window).
            max_pairs: the most pairs the call may make (`rerank.max_pairs_per_request`).
            skip_unreadable: mark a document with no token the model reads (`unreadable`)
                instead of refusing it: stored texts a search reranks, which the caller did not
                send and cannot change.
        Returns:
            PairBatch: every pair, the documents' windows in order (none for an unreadable one).
        Raises:
            InvalidArgument: see `window_tokens`; a document with no token the model reads
                (unless skip_unreadable); a
                document longer than a window with truncate and windowing both off; more than
                `max_pairs` pairs.
        """
        query_encoding, room = self.window_tokens(query, truncate)
        query_truncated = bool(query_encoding.overflowing)
        stride = min(overlap, room // 2)
        encodings = self._tokenizer.encode_batch(documents, add_special_tokens=False)
        windows: list[Encoding] = []
        owners: list[int] = []
        windowed = np.zeros(len(documents), dtype=bool)
        truncated = np.zeros(len(documents), dtype=bool)
        unreadable = np.zeros(len(documents), dtype=bool)
        for i, encoding in enumerate(encodings):
            tokens = len(encoding.ids)
            if tokens == 0:
                if skip_unreadable:
                    unreadable[i] = True
                    continue
                raise InvalidArgument(f"documents[{i}] has no token the model reads (only characters the tokenizer drops)")
            if tokens > room:
                if truncate:
                    truncated[i] = True
                elif windowing:
                    windowed[i] = True
                else:
                    raise InvalidArgument(
                        f"documents[{i}] has {tokens} tokens; beside this query the model reads {room} (max_seq_length "
                        f"{self.max_seq_length}) and windowing is off (rerank.windowing): shorten it or pass truncate=True"
                    )
                encoding.truncate(room, stride=stride if windowed[i] else 0)
            parts = [encoding, *encoding.overflowing] if windowed[i] else [encoding]
            windows += parts
            owners += [i] * len(parts)
            if len(windows) > max_pairs:
                raise self._too_many_pairs(max_pairs, room)
        pairs = [self._tokenizer.post_process(query_encoding, w, add_special_tokens=True) for w in windows]
        counts = np.array([len(p.ids) for p in pairs], dtype=np.int32)
        width = int(counts.max()) if len(counts) else 0
        ids = np.full((len(pairs), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(pairs), width), dtype=np.int64)
        types = np.zeros((len(pairs), width), dtype=np.int64)
        for row, pair in enumerate(pairs):
            n = len(pair.ids)
            ids[row, :n] = pair.ids
            mask[row, :n] = 1
            types[row, :n] = pair.type_ids
        return PairBatch(ids, mask, types, counts, np.array(owners, dtype=np.int32), windowed, truncated, unreadable, query_truncated)
