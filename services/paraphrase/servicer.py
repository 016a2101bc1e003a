"""The Paraphrase gRPC servicer: validates a call against `[paraphrase]`, tokenizes it with the
paraphraser's own tokenizer, decodes it step by step over the backend (`generator`,
`decoding`), selects and scores the candidates (`candidates`, the embedding model) and converts
the result to protobuf."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import struct_pb2
from tokenizers import Tokenizer

from sdk._proto.facet.v1 import paraphrase_pb2, paraphrase_pb2_grpc
from services.backends import create_backend
from services.backends.base import Backend, ModelMetadata
from services.model_repository import ModelRepository
from services.paraphrase import candidates as selection
from services.paraphrase import decoding, tokenization
from services.paraphrase.catalog import File, Kind, Prop, encoder_name
from services.paraphrase.config import ParaphraseConfig
from services.paraphrase.generator import BackendStepModel
from services.retrieval.config import RetrievalConfig
from services.retrieval.embedder import Embedder
from services.runtime.config import FacetConfig
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from services.runtime.outputs import finite_output
from services.runtime.server import FacetService
from services.text import is_blank

log = logging.getLogger(__name__)

BUILD_COMMAND = "facet paraphrase build"
EMBEDDING_BUILD_COMMAND = "facet models build"
ORDER_BY = selection.ORDER_KEYS
# Beams (without beam_width) and samples per paraphrase asked for: the selection drops candidates
# equal to the source, duplicates and near-duplicates (max_pairwise_bleu), so the decoder proposes
# twice as many as n (capped by paraphrase.max_beam_width / max_sample_rows).
BEAM_OVERSAMPLING = 2
# The sentence each tokenizer reads once at start (the backend warms the models as it loads
# them). No paraphrase runs at start: under a batching delay set to wait for company
# (`batching.max_queue_delay_microseconds`) a lone warm-up would wait that long at every step.
WARMUP_TEXT = "How do I improve my English speaking skills?"


# The decoding options each strategy uses: one set for another strategy is refused, not ignored.
OPTION_STRATEGIES: dict[str, tuple[str, ...]] = {
    "beam_width": ("beam", "diverse_beam"),
    "beam_groups": ("diverse_beam",),
    "diversity_penalty": ("diverse_beam",),
    "temperature": ("sample",),
    "top_p": ("sample",),
    "top_k": ("sample",),
    "seed": ("sample",),
}


@dataclasses.dataclass(frozen=True)
class Paraphraser:
    """A served paraphraser: its decoder step's repository metadata and its tokenizer."""

    metadata: ModelMetadata
    tokenizer: Tokenizer

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def max_length(self) -> int:
        """Most tokens of a source or a paraphrase, [CLS]/[SEP] excluded (`Prop.MAX_LENGTH`)."""
        return int(self.metadata.properties[Prop.MAX_LENGTH])

    @property
    def encoder(self) -> str:
        return str(self.metadata.properties.get(Prop.ENCODER_MODEL) or encoder_name(self.name))

    @property
    def unk_id(self) -> int:
        """[UNK]'s id: what the tokenizer gives a piece outside the paraphraser's vocabulary."""
        return int(self.metadata.properties[Prop.SPECIAL_IDS]["unk"])

    def property(self, key: str, default: Any) -> Any:
        return self.metadata.properties.get(key, default)


@dataclasses.dataclass(frozen=True)
class Source:
    """A call's text as the paraphraser reads it."""

    text: str
    ids: list[int]  # token ids without [CLS]/[SEP], at most the model's max_length
    truncated: bool


def _load_tokenizer(path: str) -> Tokenizer:
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _struct(value: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if isinstance(value, dict):
        message.update(value)
    return message


def _optional(request: Any, field: str) -> Any:
    return getattr(request, field) if request.HasField(field) else None


def _check_float(name: str, value: float | None, rule: str, ok: bool) -> None:
    if value is not None and not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number {rule}, got {value}")
    if value is not None and not ok:
        raise InvalidArgument(f"{name} must be {rule}, got {value}")


class ParaphraseService(paraphrase_pb2_grpc.ParaphraseServicer, FacetService):
    name = "paraphrase"

    def __init__(self, config: FacetConfig) -> None:
        self._backend: Backend = create_backend(config)
        self._config = config.section(ParaphraseConfig)
        self._repository = ModelRepository(config.model_repository)
        # The retrieval capability's embedding code path (tokenization, length groups, limits),
        # on this service's backend, with the paraphrase section's embedding model.
        embedding = dataclasses.replace(config.section(RetrievalConfig), embedding_model=self._config.embedding_model)
        self._embedder = Embedder(self._backend, embedding)
        self.paraphrasers: dict[str, Paraphraser] = {}

    @property
    def default(self) -> str:
        return self._config.model

    def register(self, server: grpc.aio.Server) -> None:
        paraphrase_pb2_grpc.add_ParaphraseServicer_to_server(self, server)

    async def start(self) -> None:
        """Load (and warm, as the backend loads them) the default paraphraser and every other one
        in the repository, their encoders, their tokenizers and the embedding model.

        Raises:
            FailedPrecondition: the default paraphraser or the embedding model is missing (the
                message gives the build command), or a model is not of the expected kind.
        """
        kinds = {name: self._repository.get(name).kind for name in self._repository.models()}
        if kinds.get(self.default) != Kind.DECODER_STEP:
            what = "is not in" if self.default not in kinds else f"is a {kinds[self.default]} model, not a {Kind.DECODER_STEP}, in"
            raise FailedPrecondition(
                f"paraphraser '{self.default}' (paraphrase.model) {what} the model repository {self._repository.root}; "
                f"build it with `{BUILD_COMMAND}` (or `facet models build`)"
            )
        if self._config.embedding_model not in kinds:
            raise FailedPrecondition(
                f"embedding model '{self._config.embedding_model}' (paraphrase.embedding_model) is not in the model repository "
                f"{self._repository.root}; build it with `{EMBEDDING_BUILD_COMMAND}`"
            )
        names = [self.default, *sorted(n for n, k in kinds.items() if k == Kind.DECODER_STEP and n != self.default)]
        loaded = await self._backend.load_all(names)
        encoders = [str(m.properties.get(Prop.ENCODER_MODEL) or encoder_name(n)) for n, m in loaded.items()]
        missing = [e for e in encoders if kinds.get(e) != Kind.ENCODER]
        if missing:
            raise FailedPrecondition(f"paraphraser encoder(s) {', '.join(missing)} missing from {self._repository.root}; rebuild with `{BUILD_COMMAND}`")
        await asyncio.gather(self._backend.load_all(encoders), self._embedder.load())
        for name, meta in loaded.items():
            self.paraphrasers[name] = Paraphraser(meta, await asyncio.to_thread(_load_tokenizer, meta.files[File.TOKENIZER]))
            self.paraphrasers[name].tokenizer.encode(WARMUP_TEXT, add_special_tokens=False)  # its first call builds caches
        log.info("serving %d paraphrasers: %s (default %s)", len(names), ", ".join(names), self.default)

    async def healthy(self) -> bool:
        return await self._backend.serving()

    async def stop(self) -> None:
        await self._backend.close()

    # -- validation ------------------------------------------------------------------------

    def paraphraser(self, name: str) -> Paraphraser:
        """The paraphraser called `name` ("" = the default).

        Raises:
            NotFound: the service serves no paraphraser of that name (the message lists them).
        """
        found = self.paraphrasers.get(name or self.default)
        if found is None:
            raise NotFound(f"paraphraser '{shown(name)}' is not served; available: {', '.join(self.paraphrasers)}")
        return found

    def _source(self, paraphraser: Paraphraser, text: str, truncate: bool) -> Source:
        """Check and tokenize the text.

        Raises:
            InvalidArgument: over `paraphrase.max_text_chars` characters, blank, or over the
                model's max_length tokens without truncate.
        """
        limit = self._config.max_text_chars
        if len(text) > limit:
            raise InvalidArgument(f"text has {len(text)} characters; the limit is paraphrase.max_text_chars ({limit})")
        if is_blank(text):
            raise InvalidArgument("text is blank (empty, or only whitespace, control or zero-width characters); send the sentence to paraphrase")
        ids = paraphraser.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            raise InvalidArgument("text has no token the paraphraser reads; send a sentence")
        if all(i == paraphraser.unk_id for i in ids):
            raise InvalidArgument(
                f"text has no word paraphraser '{paraphraser.name}' knows (every token is [UNK]: e.g. only emoji or a "
                "script outside its English vocabulary); send an English sentence"
            )
        most = paraphraser.max_length
        if len(ids) > most:
            if not truncate:
                raise InvalidArgument(
                    f"text has {len(ids)} tokens; paraphraser '{paraphraser.name}' reads at most {most} (its max_length): "
                    "shorten it, or pass truncate=True to paraphrase its first tokens"
                )
            return Source(text, ids[:most], True)
        return Source(text, ids, False)

    def _options(self, paraphraser: Paraphraser, strategy: str, n: int, fields: dict[str, Any]) -> decoding.DecodingOptions:
        """The call's decoding options, checked against `[paraphrase]` and the model.

        Raises:
            InvalidArgument: naming the field and its limit (the config key where there is one).
        """
        limits = self._config
        if strategy not in decoding.STRATEGIES:
            raise InvalidArgument(f"strategy must be one of {', '.join(decoding.STRATEGIES)}; got '{shown(strategy)}'")
        unused = [name for name, strategies in OPTION_STRATEGIES.items() if fields.get(name) is not None and strategy not in strategies]
        if unused:
            raise InvalidArgument(
                "; ".join(f"{name} applies to strategy {' or '.join(OPTION_STRATEGIES[name])} only" for name in unused)
                + f", not to '{strategy}': leave it unset or pick that strategy"
            )
        if not 1 <= n <= limits.max_n:
            raise InvalidArgument(f"n must be between 1 and paraphrase.max_n ({limits.max_n}), got {n}")
        beam_width = fields.get("beam_width")
        if beam_width is not None and not 1 <= beam_width <= limits.max_beam_width:
            raise InvalidArgument(f"beam_width must be between 1 and paraphrase.max_beam_width ({limits.max_beam_width}), got {beam_width}")
        if strategy in ("beam", "diverse_beam"):
            if beam_width is not None and n > beam_width:
                raise InvalidArgument(f"n ({n}) must be <= beam_width ({beam_width}) for strategy '{strategy}': beam search returns at most its beams")
            if beam_width is None:
                beam_width = min(max(BEAM_OVERSAMPLING * n, limits.default_beam_width), limits.max_beam_width)
                groups = fields.get("beam_groups")
                if strategy == "diverse_beam" and groups is not None and groups >= 1:
                    beam_width = min(-(-beam_width // groups) * groups, limits.max_beam_width)
        _check_float("temperature", fields.get("temperature"), "> 0", (fields.get("temperature") or 0) > 0)
        top_p = fields.get("top_p")
        _check_float("top_p", top_p, "in (0, 1]", top_p is not None and 0 < top_p <= 1)
        _check_float("diversity_penalty", fields.get("diversity_penalty"), ">= 0", (fields.get("diversity_penalty") or 0) >= 0)
        max_length = fields.get("max_length")
        if max_length is not None and not 1 <= max_length <= paraphraser.max_length:
            raise InvalidArgument(
                f"max_length must be between 1 and {paraphraser.max_length} (paraphraser '{paraphraser.name}''s max_length), got {max_length}"
            )
        rows = n
        if strategy == "sample":  # draw more samples than asked, so that n survive the selection
            rows = min(limits.max_sample_rows, BEAM_OVERSAMPLING * n)
        given = {k: v for k, v in fields.items() if v is not None}
        given.update(strategy=strategy, n=rows, beam_width=beam_width if strategy in ("beam", "diverse_beam") else given.get("beam_width"))
        try:
            return decoding.DecodingOptions(**given).validate(
                max_n=max(limits.max_n, limits.max_sample_rows), max_beam_width=limits.max_beam_width, max_length=paraphraser.max_length
            )
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None

    # -- calls -----------------------------------------------------------------------------

    async def _paraphrase(
        self,
        text: str,
        *,
        model: str,
        n: int,
        strategy: str,
        options: dict[str, Any],
        max_pairwise_bleu: float | None,
        order_by: str,
        truncate: bool,
    ) -> paraphrase_pb2.ParaphraseResponse:
        paraphraser = self.paraphraser(model)
        order_by = order_by or "logprob"
        if order_by not in ORDER_BY:
            raise InvalidArgument(f"order_by must be one of {', '.join(ORDER_BY)}; got '{shown(order_by)}'")
        cap = self._config.max_pairwise_bleu if max_pairwise_bleu is None else max_pairwise_bleu
        _check_float("max_pairwise_bleu", cap, "in [0, 100] (sacreBLEU's scale)", 0.0 <= cap <= 100.0)
        decoding_options = self._options(paraphraser, strategy, n, options)
        source = self._source(paraphraser, text, truncate)
        rows = decoding_options.beam_width if strategy in ("beam", "diverse_beam") and decoding_options.beam_width else decoding_options.n
        self._backend.admit(paraphraser.encoder, 1, len(source.ids) + 2)
        self._backend.admit(paraphraser.name, rows, 1)
        step_model = BackendStepModel(self._backend, paraphraser.metadata, decoding_options.max_length or paraphraser.max_length)
        hypotheses = await decoding.generate(step_model, source.ids, decoding_options)
        source_text = tokenization.decode(paraphraser.tokenizer, source.ids) if source.truncated else text
        found = [
            selection.Candidate(text=tokenization.decode(paraphraser.tokenizer, h.token_ids), token_ids=tuple(h.token_ids), logprob=float(h.logprob))
            for h in hypotheses
        ]
        readable = [c for c in found if not is_blank(c.text)]  # e.g. only pieces the tokenizer decodes to nothing
        chosen = await asyncio.to_thread(selection.select, source_text, readable, n, cap)
        similarity = await self._similarity(source_text, [c.text for c in chosen.kept])
        scored = [dataclasses.replace(c, similarity=float(s)) for c, s in zip(chosen.kept, similarity, strict=True)]
        ordered = selection.order(scored, order_by)
        return paraphrase_pb2.ParaphraseResponse(
            paraphrases=[
                paraphrase_pb2.ParaphraseCandidate(
                    text=c.text,
                    logprob=c.logprob,
                    similarity=float(c.similarity if c.similarity is not None else 0.0),
                    source_bleu=float(c.source_bleu if c.source_bleu is not None else 0.0),
                    tokens=len(c.token_ids),
                )
                for c in ordered
            ],
            model=paraphraser.name,
            truncated=source.truncated,
            considered=chosen.considered + len(found) - len(readable),
            dropped_same_as_source=chosen.dropped_same_as_source + len(found) - len(readable),
            dropped_duplicate=chosen.dropped_duplicate,
            dropped_too_similar=chosen.dropped_too_similar,
        )

    async def _similarity(self, source: str, texts: Sequence[str]) -> np.ndarray:
        """float64 [len(texts)]: cosine of the embedding model's (L2-normalised) embeddings of
        `source` and each text, clipped to [-1, 1] (rounding can pass 1 by an ulp)."""
        if not texts:
            return np.zeros(0)
        embedded = await self._embedder.embed([source, *texts], normalize=True, truncate=True, names=["text", *(f"paraphrases[{i}]" for i in range(len(texts)))])
        vectors = embedded.vectors.astype(np.float64)
        cosine = vectors[1:] @ vectors[0]
        return np.clip(finite_output(f"the similarity of embedding model '{self._config.embedding_model}'", cosine), -1.0, 1.0)

    async def Paraphrase(self, request: paraphrase_pb2.ParaphraseRequest, context: grpc.aio.ServicerContext) -> paraphrase_pb2.ParaphraseResponse:
        fields = {
            name: _optional(request, name)
            for name in ("beam_width", "beam_groups", "diversity_penalty", "temperature", "top_p", "top_k", "max_length", "seed")
        }
        return await self._paraphrase(
            request.text,
            model=request.model,
            n=request.n if request.HasField("n") else 1,
            strategy=request.strategy or "beam",
            options=fields,
            max_pairwise_bleu=_optional(request, "max_pairwise_bleu"),
            order_by=request.order_by,
            truncate=request.truncate,
        )

    async def ParaphraseStream(
        self, request: paraphrase_pb2.ParaphraseStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[paraphrase_pb2.ParaphraseToken]:
        paraphraser = self.paraphraser(request.model)
        strategy = request.strategy or "greedy"
        if strategy not in decoding.STREAM_STRATEGIES:
            if strategy in decoding.STRATEGIES:
                raise InvalidArgument(
                    f"strategy '{strategy}' cannot stream (a beam's best hypothesis is known only at its end); "
                    f"ParaphraseStream takes {' or '.join(decoding.STREAM_STRATEGIES)}, Paraphrase takes every strategy"
                )
            raise InvalidArgument(f"strategy must be one of {', '.join(decoding.STREAM_STRATEGIES)} for a stream; got '{shown(strategy)}'")
        fields = {name: _optional(request, name) for name in ("temperature", "top_p", "top_k", "max_length", "seed")}
        options = self._options(paraphraser, strategy, 1, fields)
        options = dataclasses.replace(options, n=1)
        source = self._source(paraphraser, request.text, request.truncate)
        self._backend.admit(paraphraser.encoder, 1, len(source.ids) + 2)
        self._backend.admit(paraphraser.name, 1, 1)
        step_model = BackendStepModel(self._backend, paraphraser.metadata, options.max_length or paraphraser.max_length)
        texts = StreamText(paraphraser.tokenizer)
        held: list[tuple[int, float]] = []  # tokens whose text waits for the next one
        index = 0

        def messages(text: str) -> list[paraphrase_pb2.ParaphraseToken]:
            """The held tokens, in order; the last one carries `text`, the others ""."""
            nonlocal index
            out = []
            for i, (token_id, logprob) in enumerate(held):
                out.append(
                    paraphrase_pb2.ParaphraseToken(
                        index=index + i,
                        token_id=token_id,
                        text=text if i == len(held) - 1 else "",
                        logprob=float(finite_output(f"a log-probability of paraphraser '{paraphraser.name}'", np.float64(logprob))),
                        model=paraphraser.name,
                        truncated=source.truncated,
                    )
                )
            index += len(held)
            held.clear()
            return out

        tokens = decoding.stream(step_model, source.ids, options)
        try:
            async for token_id, logprob in tokens:  # a cancelled call stops here: no further step runs
                if token_id == step_model.eos_id:  # the end: [SEP] itself is not sent
                    break
                held.append((int(token_id), float(logprob)))
                text = texts.add(int(token_id))
                if text is not None:
                    for message in messages(text):
                        yield message
            if held:  # it ended on a token whose text was waiting
                for message in messages(texts.flush()):
                    yield message
        finally:
            await tokens.aclose()

    async def ListParaphrasers(
        self, request: paraphrase_pb2.ListParaphrasersRequest, context: grpc.aio.ServicerContext
    ) -> paraphrase_pb2.ListParaphrasersResponse:
        return paraphrase_pb2.ListParaphrasersResponse(
            paraphrasers=[_paraphraser_message(p, p.name == self.default) for p in self.paraphrasers.values()]
        )


class StreamText:
    """What each streamed token adds to the paraphrase's text, so that joining the tokens' texts
    gives exactly the text `Paraphrase` returns for the same tokens (`tokenization.decode`:
    WordPiece's spelling with transformers' clean-up of spaces).

    A new token changes only its own part of that text, with one exception: the clean-up joins
    " ' " into "'" once the token after an apostrophe is there ("what ' s" -> "what's"), which
    removes the space before the apostrophe. So a token whose text ends in an apostrophe is held
    (`add` returns None) and its text goes out with the next token's.

    Args:
        tokenizer: the paraphraser's tokenizer (`File.TOKENIZER`).
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._sent = ""

    def add(self, token_id: int) -> str | None:
        """The text `token_id` (and any held before it) adds, or None: held for the next token."""
        self._ids.append(token_id)
        full = tokenization.decode(self._tokenizer, self._ids)
        return None if full.endswith("'") else self._take(full)

    def flush(self) -> str:
        """The text still held (the paraphrase ended on a held token)."""
        return self._take(tokenization.decode(self._tokenizer, self._ids))

    def _take(self, full: str) -> str:
        if not full.startswith(self._sent):  # the clean-up rewrote text already sent: not expected
            log.warning("streamed text %r is not a prefix of %r; the joined stream will differ", self._sent, full)
            common = next((i for i, (a, b) in enumerate(zip(self._sent, full, strict=False)) if a != b), min(len(self._sent), len(full)))
            self._sent = self._sent[:common]
        delta = full[len(self._sent) :]
        self._sent = full
        return delta


def _paraphraser_message(paraphraser: Paraphraser, default: bool) -> paraphrase_pb2.Paraphraser:
    meta = paraphraser.metadata
    return paraphrase_pb2.Paraphraser(
        name=meta.name,
        version=meta.version,
        default=default,
        setting=str(paraphraser.property(Prop.SETTING, "")),
        training_data=_struct(paraphraser.property(Prop.TRAINING_DATA, {})),
        metrics=_struct(paraphraser.property(Prop.METRICS, {})),
        max_length=paraphraser.max_length,
        architecture=_struct(paraphraser.property(Prop.ARCHITECTURE, {})),
        training=_struct(paraphraser.property(Prop.TRAINING, {})),
        encoder=paraphraser.encoder,
        source=meta.source,
    )
