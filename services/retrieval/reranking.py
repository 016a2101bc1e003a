"""Retrieve, then rerank: a Search's nearest documents reordered by a cross-encoder.

The retrieval service runs the reranker itself, through its own backend, with the rerank
service's `Scorer` (the same validation, pair tokenization, best-window scoring of long documents
and calibrated probabilities), rather than calling the rerank service over gRPC: a search then
needs no second service up, no address, TLS or API key of one service for another, and no
second network hop with its own deadline. With the Triton or Ray backend the cross-encoder is
hosted once by the engine and batched across both services' calls; with the in-process ONNX
Runtime backend this process holds its own session of it (~90 MB for MiniLM-L6).

The cross-encoders are loaded on the first Search with `rerank` (not at start-up: `facet up`
builds the reranker after the embedding model, and a service that never reranks never pays for
it); while none is in the model repository, such a Search is FAILED_PRECONDITION naming the
command that builds one, and the next one looks again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from services.backends.base import Backend
from services.rerank.config import RerankConfig
from services.rerank.scorer import Scorer
from services.rerank.tokenization import CallTooLarge
from services.retrieval.store import ScoredDocument
from services.runtime.errors import InvalidArgument
from services.text import is_blank

# What a reranked Search can change when reranking its candidates alone cannot finish before its
# deadline (added to the batcher's DEADLINE_EXCEEDED): a search has no `truncate`.
SEARCH_REMEDY = (
    "for a reranked search: ask for fewer candidates (candidates=; each stored text longer than the reranker's "
    "window is scored window by window)"
)


def _candidates(count: int) -> str:
    return f"{count} candidate{'' if count == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class RerankedHit:
    """A search hit after reranking.

    Attributes:
        hit: the stored document and its vector-search score.
        retrieval_rank: its 0-based position in the vector search.
        probability: the reranker's calibrated probability that it is relevant, or None for a
            document the reranker cannot read — no text, or only characters its tokenizer drops
            (such hits follow the reranked ones, in search order).
    """

    hit: ScoredDocument
    retrieval_rank: int
    probability: float | None


class SearchReranker:
    """Reorders search hits with a cross-encoder of the model repository.

    Args:
        backend: the retrieval service's backend (it loads the cross-encoders too).
        config: the `[rerank]` section: the default reranker (`rerank.model`) and the limits of
            one reranking (`rerank.max_request_chars`, `rerank.max_pairs_per_request`, ...).
        repository: the model repository the backend serves.
    """

    def __init__(self, backend: Backend, config: RerankConfig, repository: Path) -> None:
        self._scorer = Scorer(backend, config, repository)
        self._lock = asyncio.Lock()

    async def ready(self, reranker: str, query: str) -> None:
        """Load the cross-encoders on first use, check that `reranker` is one of them and that it
        can read `query` (before the search embeds anything).

        Args:
            reranker: a cross-encoder's name; "" = the default (`rerank.model`).
            query: the search's text query.
        Raises:
            FailedPrecondition: the default reranker is not in the model repository (the
                message gives `facet rerank build`).
            NotFound: no cross-encoder called `reranker`.
            InvalidArgument: the query is over `rerank.max_query_chars`, or fills the
                reranker's window alone (the message says so; no candidates would help).
        """
        async with self._lock:
            if not self._scorer.rerankers:
                await self._scorer.load()
        found = self._scorer.reranker(reranker)
        limit = self._scorer.max_query_chars
        try:
            if len(query) > limit:
                raise InvalidArgument(f"query has {len(query)} characters; the limit is rerank.max_query_chars ({limit})")
            await asyncio.to_thread(found.pairs.window_tokens, query)
        except InvalidArgument as exc:
            raise InvalidArgument(f"the reranker '{found.name}' cannot read this query: {exc.message}") from None

    async def rerank(self, query: str, hits: list[ScoredDocument], top_k: int, reranker: str) -> tuple[list[RerankedHit], str]:
        """The `top_k` best of `hits` by the reranker's score, then hits without text.

        Args:
            query: the search's text query (without the embedding prompt: the reranker reads
                the query as a user wrote it).
            hits: the vector search's hits, nearest first.
            top_k: hits to return.
            reranker: a cross-encoder's name; "" = the default.
        Returns:
            The reranked hits, best first, and the reranker's name.
        Raises:
            InvalidArgument: see `ready`; the candidates together exceed a `[rerank]` per-call
                limit (the message says to ask for fewer candidates); a stored text the reranker
                refuses.
            FailedPrecondition, NotFound: see `ready`.
        """
        await self.ready(reranker, query)
        readable = [i for i, h in enumerate(hits) if not is_blank(h.text)]
        if not readable:
            return [RerankedHit(h, i, None) for i, h in enumerate(hits)][:top_k], self._scorer.reranker(reranker).name
        try:
            ranking = await self._scorer.rerank(
                query, [hits[i].text for i in readable], model=reranker, top_n=top_k, skip_unreadable=True, remedy=SEARCH_REMEDY
            )
        except CallTooLarge as exc:  # the candidates together are over a per-call limit
            fix = (
                "ask for fewer candidates"
                if len(readable) > 1
                else "this one stored text is over it alone: shorten the stored text, or raise that limit of the retrieval service"
            )
            raise InvalidArgument(f"reranking {_candidates(len(readable))}: {exc.limit}: {fix}") from None
        except InvalidArgument as exc:  # one stored text (the query was checked by `ready`)
            raise InvalidArgument(f"reranking {_candidates(len(readable))}: {exc.message}") from None
        reranked = [
            RerankedHit(hits[readable[int(j)]], readable[int(j)], float(p)) for j, p in zip(ranking.index, ranking.probability, strict=True)
        ]
        # hits the reranker cannot read (no text, or no token it reads) follow, in search order
        unreadable = sorted({i for i, h in enumerate(hits) if is_blank(h.text)} | {readable[int(j)] for j in ranking.unreadable})
        return (reranked + [RerankedHit(hits[i], i, None) for i in unreadable])[:top_k], ranking.model
