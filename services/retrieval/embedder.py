"""Text → embeddings: validation, tokenization, and the embedding model through a backend."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np

from services.backends.base import Backend, ModelMetadata
from services.backends.padding import length_groups
from services.retrieval.catalog import File, Kind, Prop
from services.retrieval.config import RetrievalConfig
from services.retrieval.tokenization import TextTokenizer
from services.runtime.errors import FailedPrecondition, InvalidArgument


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
        self._tokenizer = TextTokenizer(self.metadata.files[File.TOKENIZER], int(self.metadata.properties[Prop.MAX_SEQ_LENGTH]))
        return self.metadata

    @property
    def dimension(self) -> int:
        assert self.metadata is not None, "load() first"
        return int(self.metadata.properties[Prop.DIMENSION])

    def validate(self, texts: list[str], what: str = "texts", prompt: str = "") -> None:
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
                    f"{what}[{i}] has {len(text)} characters (with the prompt {len(prompt) + len(text)}); the limit is {limit}"
                )

    async def embed(self, texts: list[str], *, normalize: bool = True, truncate: bool = True, prompt: str = "") -> Embeddings:
        """Embed `texts` (with `prompt` prepended). Raises InvalidArgument for bad input."""
        self.validate(texts, prompt=prompt)
        assert self._tokenizer is not None, "load() first"
        batch = self._tokenizer([prompt + t for t in texts] if prompt else texts, truncate=truncate)
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
        return Embeddings(vectors, batch.token_counts, batch.truncated)
