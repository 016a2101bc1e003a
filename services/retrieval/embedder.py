"""Text → embeddings: validation, tokenization, and the embedding model through a backend."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from services.backends.base import Backend, ModelMetadata
from services.backends.padding import length_groups
from services.retrieval.catalog import File, Kind, Prop
from services.retrieval.config import RetrievalConfig
from services.retrieval.tokenization import TextTokenizer, TokenBatch
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.outputs import finite_output
from services.text import is_blank

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dimension]
    token_counts: np.ndarray  # int32 [n]
    truncated: np.ndarray  # bool [n]


# Rows per model call when a request's texts are split by length (a CPU runs a few short,
# similar-length rows faster than one batch padded to its longest text).
EMBED_GROUP_MAX_ROWS = 16


class Embedder:
    def __init__(self, backend: Backend, config: RetrievalConfig) -> None:
        self._backend = backend
        self._config = config
        self._model = config.embedding_model
        self._tokenizer: TextTokenizer | None = None
        self.metadata: ModelMetadata | None = None

    async def load(self) -> ModelMetadata:
        self.metadata = await self._backend.load(self._model)
        if self.metadata.kind != Kind.EMBEDDING:
            raise FailedPrecondition(f"model '{self._model}' is a {self.metadata.kind} model, not an embedding model")
        self._tokenizer = TextTokenizer(
            self.metadata.files[File.TOKENIZER],
            int(self.metadata.properties[Prop.MAX_SEQ_LENGTH]),
            self._config.truncate_chars_per_token,
        )
        return self.metadata

    @property
    def dimension(self) -> int:
        assert self.metadata is not None, "load() first"
        return int(self.metadata.properties[Prop.DIMENSION])

    def validate(self, texts: list[str], what: str = "texts", prompt: str = "", names: Sequence[str] | None = None) -> None:
        """The cheap checks of an embedding request, before any tokenizing.

        Args:
            texts: the texts to embed (the prompt is prepended to each).
            what: the request field the texts came from, for messages (e.g. "documents.text").
            prompt: prepended verbatim to every text.
            names: each text's name in messages (e.g. "query" for a search's one text); default
                "<what>[<i>]".
        Raises:
            InvalidArgument: no texts or too many; a text or the prompt too long; a blank text
                (see `services.text.is_blank`); all texts with their prompts over
                `retrieval.max_request_chars` characters.
        """
        if not texts:
            raise InvalidArgument(f"{what} is empty; send at least one text")
        if len(texts) > self._config.max_texts_per_request:
            raise InvalidArgument(
                f"{len(texts)} {what} in one call; the limit is {self._config.max_texts_per_request}: split the call"
            )
        limit = self._config.max_text_chars
        if len(prompt) > limit:
            raise InvalidArgument(f"prompt has {len(prompt)} characters; the limit is {limit}")
        for i, text in enumerate(texts):
            if len(prompt) + len(text) > limit:
                raise InvalidArgument(
                    f"{names[i] if names is not None else f'{what}[{i}]'} has {len(text)} characters (with the prompt {len(prompt) + len(text)}); the limit is {limit}"
                )
        self.check_budget(sum(len(t) for t in texts) + len(prompt) * len(texts), what)
        for i, text in enumerate(texts):  # after the budget: this one reads the characters
            if is_blank(text):
                raise InvalidArgument(
                    f"{names[i] if names is not None else f'{what}[{i}]'} is blank (empty, or only whitespace, control or zero-width characters); "
                    "send text with at least one visible character"
                )

    def check_budget(self, chars: int, what: str = "texts") -> None:
        """Raises InvalidArgument when `chars` characters to embed exceed `retrieval.max_request_chars`."""
        if chars > self._config.max_request_chars:
            raise InvalidArgument(
                f"{what} have {chars} characters in all (prompt included); retrieval.max_request_chars is "
                f"{self._config.max_request_chars}: split the call"
            )

    def _check_prompt(self, prompt: str) -> None:
        assert self._tokenizer is not None, "load() first"
        room = self._tokenizer.max_seq_length - self._tokenizer.special_tokens
        used = self._tokenizer.content_tokens(prompt)
        if used >= room:
            raise InvalidArgument(
                f"prompt takes {used} tokens; the model reads {room} besides its special tokens, so no room is left "
                f"for the text: shorten the prompt to under {room} tokens"
            )

    def _tokenize(self, texts: list[str], prompt: str, truncate: bool, names: Sequence[str]) -> TokenBatch:
        assert self._tokenizer is not None, "load() first"
        if prompt:
            self._check_prompt(prompt)
        return self._tokenizer([prompt + t for t in texts] if prompt else texts, truncate=truncate, names=names)

    async def embed(
        self, texts: list[str], *, normalize: bool = True, truncate: bool = True, prompt: str = "", names: Sequence[str] | None = None
    ) -> Embeddings:
        """Embed `texts`, each with `prompt` prepended.

        Tokenizing runs on a worker thread, so a large request never stalls the event loop.

        Args:
            texts: 1..max_texts_per_request texts, none blank.
            normalize: L2-normalise each embedding.
            truncate: cut texts past the model's max_seq_length tokens (else reject them).
            prompt: prepended verbatim to every text; it must leave room for the text.
            names: each text's name in messages, the request field it came from (e.g.
                "documents[7].text", "query"); default "texts[<i>]".
        Returns:
            Embeddings: float32 vectors [len(texts), dimension], int32 token counts, bool truncated.
        Raises:
            InvalidArgument: bad input (see `validate`), a prompt that fills the model's
                sequence, a text past max_seq_length tokens with truncate=False.
            ResourceExhausted, DeadlineExceeded: the backend's admission refuses the call before
                it is tokenized (`batching.max_queue_size`, `batching.deadline_admission`).
            InternalError: the model returned a non-finite embedding (a server fault).
        """
        names = list(names) if names is not None else [f"texts[{i}]" for i in range(len(texts))]
        self.validate(texts, prompt=prompt, names=names)
        assert self._tokenizer is not None, "load() first"
        # Admission before tokenizing: a call the batcher would refuse is refused now, not after
        # tokenizing (its size is a lower bound, so nothing it could run is refused).
        width = self._tokenizer.tokens_at_least(texts, prompt) // len(texts)
        self._backend.admit(self._model, len(texts), max(1, width))
        batch = await asyncio.to_thread(self._tokenize, texts, prompt, truncate, names)
        key = "sentence_embedding_normalized" if normalize else "sentence_embedding"
        groups = [np.array(g) for g in length_groups(batch.token_counts.tolist(), max_rows=EMBED_GROUP_MAX_ROWS)]
        outputs = await asyncio.gather(
            *(
                self._backend.infer(
                    self._model,
                    {
                        "input_ids": batch.input_ids[g, : batch.token_counts[g].max()],
                        "attention_mask": batch.attention_mask[g, : batch.token_counts[g].max()],
                    },
                )
                for g in groups
            )
        )
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        for g, out in zip(groups, outputs, strict=True):
            vectors[g] = out[key]
        finite_output(f"the embeddings of model '{self._model}'", vectors)
        return Embeddings(vectors, batch.token_counts, batch.truncated)
