"""Paraphrase generation (`facet.v1.Paraphrase`): n diverse paraphrases of a sentence, with scores.

The paraphrasers are Transformer encoder-decoders trained by Facet with DDL + VSAR under the KRL
schedule, after Yu et al., "Language as a Latent Sequence: deep latent variable models for
semi-supervised paraphrase generation" (§3: DDL trains both directions of labelled pairs, VSAR
treats an unlabelled sentence's paraphrase as a latent sequence with a language-model prior,
KRL trains DDL first and DDL+VSAR from its best checkpoint). The service decodes greedily, by beam
search, by diverse beam search (Vijayakumar et al. 2018) or by sampling (temperature, top-k,
top-p: Holtzman et al. 2020), keeps candidates that differ from the source and from each other
(pairwise sacreBLEU under a cap), and scores each by its log-probability, its cosine similarity
to the source (all-MiniLM-L6-v2 embeddings) and its BLEU to the source. Limits named below are
keys of the service's `[paraphrase]` config section.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, overload

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._proto.facet.v1 import paraphrase_pb2, paraphrase_pb2_grpc
from sdk._struct import from_struct
from sdk._tensors import finite_float
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

# Every RPC only reads: each is safe to send again after UNAVAILABLE (sdk._retry); a stream only
# before its first token.
SERVICE = Service("paraphrase", paraphrase_pb2_grpc.ParaphraseStub, idempotent=frozenset({"Paraphrase", "ParaphraseStream", "ListParaphrasers"}))
INT32_MIN = -(2**31)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Paraphrase:
    """One paraphrase with its scores.

    Attributes:
        text: the paraphrase.
        logprob: sum of its tokens' log-probabilities (natural log, the closing [SEP]'s
            included) in the model's distribution, <= 0: higher is more likely.
        similarity: cosine similarity of the embedding model's (all-MiniLM-L6-v2) embeddings of
            the source and the paraphrase, in [-1, 1]: higher keeps the meaning closer.
        source_bleu: sacreBLEU sentence BLEU of the paraphrase against the source, 0..100:
            lower copies less of the source's wording.
        tokens: its tokens ([SEP] excluded).
    """

    text: str
    logprob: float
    similarity: float
    source_bleu: float
    tokens: int = 0


@dataclasses.dataclass(frozen=True)
class ParaphraseResult(Sequence[Paraphrase]):
    """The paraphrases of one `paraphrase` call: a sequence, ordered by `order_by`, best first.

    Attributes:
        paraphrases: the `Paraphrase`s (at most n).
        model: the paraphraser that generated them.
        truncated: `truncate=True` cut the text to the model's max_length tokens.
        considered: candidates the decoder produced before the selection.
        dropped_same_as_source: candidates equal to the source after normalisation (lowercase,
            accents removed, punctuation split from words, whitespace collapsed, punctuation at
            the ends stripped), or empty.
        dropped_duplicate: candidates equal to one kept before them.
        dropped_too_similar: candidates whose BLEU to a kept one was above `max_pairwise_bleu`.
    """

    paraphrases: tuple[Paraphrase, ...]
    model: str
    truncated: bool = False
    considered: int = 0
    dropped_same_as_source: int = 0
    dropped_duplicate: int = 0
    dropped_too_similar: int = 0

    @overload
    def __getitem__(self, i: int) -> Paraphrase: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Paraphrase, ...]: ...
    def __getitem__(self, i: int | slice) -> Paraphrase | tuple[Paraphrase, ...]:
        return self.paraphrases[i]

    def __len__(self) -> int:
        return len(self.paraphrases)

    def __iter__(self) -> Iterator[Paraphrase]:
        return iter(self.paraphrases)


@dataclasses.dataclass(frozen=True)
class ParaphraseToken:
    """One token of a streamed paraphrase.

    Attributes:
        text: what it adds to the paraphrase: joining every token's text gives exactly the text
            `paraphrase` returns for the same tokens ("what's the best way?"). An apostrophe,
            which the next token may join to it, arrives with the next token, its own text "".
        token_id: its id in the paraphraser's tokenizer.
        logprob: its log-probability in the model's distribution (natural log, <= 0).
        index: its position in the paraphrase: 0, 1, 2, ...
        model: the paraphraser decoding.
        truncated: `truncate=True` cut the source text.
    """

    text: str
    token_id: int
    logprob: float
    index: int
    model: str = ""
    truncated: bool = False


@dataclasses.dataclass(frozen=True)
class ParaphraserInfo:
    """A paraphraser the service serves, as its training and export recorded it.

    Attributes:
        name: what `paraphrase(model=...)` takes, e.g. "ddl-vsar-quora".
        version: the version served.
        default: the one `paraphrase` uses without `model`.
        setting: how it was trained: "ddl", "vsar", "ddl+vsar" or "krl".
        training_data: dataset, labelled_pairs, unlabelled_sources, label_fraction.
        metrics: its test-split results (bleu1..4, sacrebleu, self_bleu, ibleu, rouge1/2/L).
        max_length: most tokens of a source or of a paraphrase ([CLS]/[SEP] excluded).
        architecture: the model's sizes (d_model, layers, heads, vocab_size, ...).
        training: the training settings and time_s.
        encoder: its encoder's name in the model repository.
        source: where the weights came from.
    """

    name: str
    version: int
    default: bool
    setting: str
    training_data: dict[str, Any]
    metrics: dict[str, Any]
    max_length: int
    architecture: dict[str, Any]
    training: dict[str, Any]
    encoder: str
    source: str


# -- requests and responses ---------------------------------------------------------------------


def _info(r: paraphrase_pb2.Paraphraser) -> ParaphraserInfo:
    return ParaphraserInfo(
        name=r.name,
        version=int(r.version),
        default=r.default,
        setting=r.setting,
        training_data=from_struct(r.training_data),
        metrics=from_struct(r.metrics),
        max_length=int(r.max_length),
        architecture=from_struct(r.architecture),
        training=from_struct(r.training),
        encoder=r.encoder,
        source=r.source,
    )


def _optional_number(value: object, name: str) -> float | None:
    return None if value is None else check.number(value, name)


def _optional_seed(value: object) -> int | None:
    return None if value is None else check.integer(value, "seed", low=INT64_MIN, high=INT64_MAX)


def _paraphrase_call(
    text: str,
    n: int,
    strategy: str,
    beam_width: int | None,
    beam_groups: int | None,
    diversity_penalty: float | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    max_pairwise_bleu: float | None,
    order_by: str,
    max_length: int | None,
    truncate: bool,
    seed: int | None,
    model: str | None,
) -> Call[ParaphraseResult]:
    request = paraphrase_pb2.ParaphraseRequest(
        text=check.text(text, "text"),
        n=check.integer(n, "n", low=INT32_MIN),
        strategy=check.text(strategy, "strategy"),
        beam_width=check.optional_integer(beam_width, "beam_width", low=INT32_MIN),
        beam_groups=check.optional_integer(beam_groups, "beam_groups", low=INT32_MIN),
        diversity_penalty=_optional_number(diversity_penalty, "diversity_penalty"),
        temperature=_optional_number(temperature, "temperature"),
        top_p=_optional_number(top_p, "top_p"),
        top_k=check.optional_integer(top_k, "top_k", low=INT32_MIN),
        max_pairwise_bleu=_optional_number(max_pairwise_bleu, "max_pairwise_bleu"),
        order_by=check.text(order_by, "order_by"),
        max_length=check.optional_integer(max_length, "max_length", low=INT32_MIN),
        truncate=check.flag(truncate, "truncate"),
        seed=_optional_seed(seed),
        model="" if model is None else check.text(model, "model"),
    )

    def parse(r: paraphrase_pb2.ParaphraseResponse) -> ParaphraseResult:
        paraphrases = tuple(
            Paraphrase(
                text=p.text,
                logprob=finite_float(p.logprob, f"paraphrases[{i}].logprob"),
                similarity=finite_float(p.similarity, f"paraphrases[{i}].similarity"),
                source_bleu=finite_float(p.source_bleu, f"paraphrases[{i}].source_bleu"),
                tokens=int(p.tokens),
            )
            for i, p in enumerate(r.paraphrases)
        )
        return ParaphraseResult(
            paraphrases,
            model=r.model,
            truncated=r.truncated,
            considered=int(r.considered),
            dropped_same_as_source=int(r.dropped_same_as_source),
            dropped_duplicate=int(r.dropped_duplicate),
            dropped_too_similar=int(r.dropped_too_similar),
        )

    return Call(SERVICE, "Paraphrase", request, parse)


def _stream_call(
    text: str,
    strategy: str,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    max_length: int | None,
    truncate: bool,
    seed: int | None,
    model: str | None,
) -> Call[ParaphraseToken]:
    request = paraphrase_pb2.ParaphraseStreamRequest(
        text=check.text(text, "text"),
        strategy=check.text(strategy, "strategy"),
        temperature=_optional_number(temperature, "temperature"),
        top_p=_optional_number(top_p, "top_p"),
        top_k=check.optional_integer(top_k, "top_k", low=INT32_MIN),
        max_length=check.optional_integer(max_length, "max_length", low=INT32_MIN),
        truncate=check.flag(truncate, "truncate"),
        seed=_optional_seed(seed),
        model="" if model is None else check.text(model, "model"),
    )

    def parse(t: paraphrase_pb2.ParaphraseToken) -> ParaphraseToken:
        return ParaphraseToken(
            text=t.text,
            token_id=int(t.token_id),
            logprob=finite_float(t.logprob, "logprob"),
            index=int(t.index),
            model=t.model,
            truncated=t.truncated,
        )

    return Call(SERVICE, "ParaphraseStream", request, parse)


def _list_paraphrasers_call() -> Call[list[ParaphraserInfo]]:
    return Call(SERVICE, "ListParaphrasers", paraphrase_pb2.ListParaphrasersRequest(), lambda r: [_info(x) for x in r.paraphrasers])


# -- methods ------------------------------------------------------------------------------------


class ParaphraseMethods(SyncTransport):
    """The paraphrase methods of `sdk.Client`."""

    _service = SERVICE

    def paraphrase(
        self,
        text: str,
        *,
        n: int = 1,
        strategy: str = "beam",
        beam_width: int | None = None,
        beam_groups: int | None = None,
        diversity_penalty: float | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_pairwise_bleu: float | None = None,
        order_by: str = "logprob",
        max_length: int | None = None,
        truncate: bool = False,
        seed: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> ParaphraseResult:
        """Up to n paraphrases of a sentence, each with its log-probability, its similarity to
        the source and its BLEU to the source.

        The decoder proposes candidates (a beam search's beams, samples); the service drops
        those equal to the source after normalisation and duplicates, keeps in order those whose
        BLEU to every kept one is at most `max_pairwise_bleu`, scores them and returns the first
        n by `order_by`. Fewer than n come back when fewer pass (the result's `dropped_*` say why).

        Args:
            text: the sentence, not blank, at most `paraphrase.max_text_chars` (1,000)
                characters and at most the model's `max_length` tokens (`list_paraphrasers()`;
                20 for the default) unless `truncate`.
            n: paraphrases wanted, 1..`paraphrase.max_n` (10); at most `beam_width` for beam
                strategies; 1 for "greedy".
            strategy: "beam" (default), "diverse_beam", "sample" or "greedy".
            beam_width: beams (beam strategies), n..`paraphrase.max_beam_width` (16); None:
                max(2n, `paraphrase.default_beam_width` (4)), at most the maximum: twice the
                beams asked for, so that n are left after the selection.
            beam_groups: groups of diverse beam search, dividing beam_width; None: one beam per group.
            diversity_penalty: diverse beam search's Hamming diversity strength, >= 0; None: 0.5.
            temperature: sampling temperature, > 0; None: 1.
            top_p: nucleus sampling mass, in (0, 1]; None: 1 (off).
            top_k: sample from the k most likely tokens; None or 0: off.
            max_pairwise_bleu: no two returned paraphrases have a sentence BLEU (0..100) to each
                other above it; None: the service's `paraphrase.max_pairwise_bleu` (70).
            order_by: "logprob" (default, most likely first), "similarity" (closest meaning
                first) or "source_bleu".
            max_length: most tokens per paraphrase, 1..the model's max_length; None: that.
            truncate: cut a text longer than the model's max_length tokens to its first tokens
                (the result's `truncated`) instead of raising InvalidArgument.
            seed: seed of the sampler: the same seed gives the same samples; None: random.
            model: a paraphraser's name from `list_paraphrasers()`; None: the service's default.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            ParaphraseResult: a sequence of `Paraphrase(text, logprob, similarity, source_bleu,
            tokens)`, with `.model`, `.truncated` and the selection's counts.
        Raises:
            InvalidArgument: before sending, an argument of the wrong type or a non-finite
                number; from the service (naming the field and the limit): blank text, text
                over its character or token limit, n <= 0 or above `paraphrase.max_n`, n above
                beam_width, beam_width out of range, temperature <= 0, top_p outside (0, 1],
                an unknown strategy or order_by (the message lists them), max_pairwise_bleu
                outside [0, 100], max_length out of range.
            NotFound: the service serves no paraphraser called `model`.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated, ResourceExhausted.

        Example:
            >>> out = client.paraphrase("How do I improve my English speaking skills?", n=3, strategy="diverse_beam")
            >>> for p in out:
            ...     print(f"{p.logprob:7.2f} {p.similarity:.2f} {p.source_bleu:5.1f}  {p.text}")
        """
        return self._run(
            _paraphrase_call(
                text, n, strategy, beam_width, beam_groups, diversity_penalty, temperature, top_p, top_k,
                max_pairwise_bleu, order_by, max_length, truncate, seed, model,
            ),
            timeout_s,
        )  # fmt: skip

    def paraphrase_stream(
        self,
        text: str,
        *,
        strategy: str = "greedy",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_length: int | None = None,
        truncate: bool = False,
        seed: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> Iterator[ParaphraseToken]:
        """The tokens of one paraphrase as the service decodes them.

        Stop iterating (break, or `close()` the generator; `aclose()` on AsyncClient) to cancel
        the call: the service stops decoding too.

        Args:
            text: the sentence, as `paraphrase`'s.
            strategy: "greedy" (default) or "sample"; the beam strategies cannot stream (a
                beam's best hypothesis is known only at its end) and raise InvalidArgument.
            temperature: sampling temperature, > 0; None: 1.
            top_p: nucleus sampling mass, in (0, 1]; None: 1 (off).
            top_k: sample from the k most likely tokens; None or 0: off.
            max_length: most tokens to stream, 1..the model's max_length; None: that.
            truncate: cut a text longer than the model's max_length tokens instead of raising
                InvalidArgument (every token's `truncated` says so).
            seed: seed of the sampler; None: random.
            model: a paraphraser's name from `list_paraphrasers()`; None: the service's default.
            timeout_s: deadline of the whole stream in seconds; None takes the client's `timeout_s`.
        Yields:
            ParaphraseToken(text, token_id, logprob, index): joining the texts gives the
            paraphrase, as `paraphrase` spells it.
        Raises:
            InvalidArgument, NotFound, FacetError: as `paraphrase`, on the first iteration.

        Example:
            >>> print("".join(t.text for t in client.paraphrase_stream("What is the best way to learn Python?")))
        """
        yield from self._stream(_stream_call(text, strategy, temperature, top_p, top_k, max_length, truncate, seed, model), timeout_s)

    def list_paraphrasers(self, *, timeout_s: float | None = None) -> list[ParaphraserInfo]:
        """The paraphrasers the service serves, the default first.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            Each one's name, version, training setting and data, metrics, max_length and architecture.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> [(p.name, p.setting) for p in client.list_paraphrasers()]
            [('ddl-vsar-quora', 'krl')]
        """
        return self._run(_list_paraphrasers_call(), timeout_s)


@docstrings_from(ParaphraseMethods)
class AsyncParaphraseMethods(AsyncTransport):
    """The paraphrase methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def paraphrase(
        self,
        text: str,
        *,
        n: int = 1,
        strategy: str = "beam",
        beam_width: int | None = None,
        beam_groups: int | None = None,
        diversity_penalty: float | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_pairwise_bleu: float | None = None,
        order_by: str = "logprob",
        max_length: int | None = None,
        truncate: bool = False,
        seed: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> ParaphraseResult:
        return await self._run(
            _paraphrase_call(
                text, n, strategy, beam_width, beam_groups, diversity_penalty, temperature, top_p, top_k,
                max_pairwise_bleu, order_by, max_length, truncate, seed, model,
            ),
            timeout_s,
        )  # fmt: skip

    async def paraphrase_stream(
        self,
        text: str,
        *,
        strategy: str = "greedy",
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        max_length: int | None = None,
        truncate: bool = False,
        seed: int | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncIterator[ParaphraseToken]:
        # aclosing: when the consumer stops, the inner stream is closed (and cancelled) at once
        call = _stream_call(text, strategy, temperature, top_p, top_k, max_length, truncate, seed, model)
        async with contextlib.aclosing(self._stream(call, timeout_s)) as stream:
            async for token in stream:
                yield token

    async def list_paraphrasers(self, *, timeout_s: float | None = None) -> list[ParaphraserInfo]:
        return await self._run(_list_paraphrasers_call(), timeout_s)
