"""The paraphraser's two ONNX graphs as a step model: the `StepModel` that
`services.paraphrase.decoding` decodes with, over the backend interface (so on every backend).

`start` runs the encoder (`<name>-encoder`) once on the source and repeats its cross-attention
keys/values for every hypothesis row; `step` runs one decoder step (`<name>`, kind
"paraphraser") for every row of the call with its own KV cache; `select` keeps, drops or
duplicates rows (a beam's reorder). The graphs and their tensors are those of
`services.paraphrase.catalog`.

Batching across calls — what it is and what it is not. Each `step` is one `Backend.infer` call
of the decoder-step model, and every backend puts its requests through a dynamic batcher
(Facet's own for ONNX Runtime, Triton's, Ray Serve's `@serve.batch`): the steps of concurrent
calls that are waiting at the same moment run as one batch, whatever position each call has
reached (its cache and source are right-padded to the batch's longest and masked out). So a
call that starts while others are decoding joins their next batch at its first step, and a call
that finishes leaves the batch after its last step: batching at step granularity, across
requests ("continuous batching" in the sense of Orca, Yu et al. OSDI 2022, §3.1 iteration-level
scheduling). It is not vLLM's PagedAttention: each call keeps its own cache in this process and
sends it with every step (no cache lives in the engine, no paging, no prefix sharing), so a step
costs the transfer of its rows' caches; and the batcher joins only steps whose padded size stays
within `services.backends.padding.MAX_PADDING_RATIO` of the real size (steps at very different
cache lengths run in separate groups of the same batch), and only up to
`batching.max_batch_size` rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from prometheus_client import Counter

from services.backends.base import Backend, ModelMetadata
from services.paraphrase.catalog import Prop, Tensor, encoder_name
from services.runtime.metrics import METRICS
from services.runtime.outputs import finite_output

DECODER_STEPS = Counter(
    "facet_paraphrase_decoder_steps",
    "Decoder steps a paraphraser was sent (one per generated token of a call, whatever its rows), by model",
    ["model"],
    registry=METRICS.registry,
)
DECODER_ROWS = Counter(
    "facet_paraphrase_decoder_rows",
    "Hypothesis rows decoder steps were sent for (a step of a 4-beam call counts 4), by model",
    ["model"],
    registry=METRICS.registry,
)


@dataclasses.dataclass
class DecodeState:
    """The hypotheses of one call (opaque to the decoding strategies); `step` appends to its cache in place.

    Attributes:
        cross_keys, cross_values: float32 [rows, L, H, S, K], the encoder's cross-attention
            keys/values of the source, one copy per row.
        attention_mask: int64 [rows, S], the source's mask.
        past_keys, past_values: float32 [rows, L, H, t, K], the self-attention cache of the t
            tokens fed so far ([CLS] first); t = 0 before the first step.
    """

    cross_keys: np.ndarray
    cross_values: np.ndarray
    attention_mask: np.ndarray
    past_keys: np.ndarray
    past_values: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.attention_mask.shape[0])

    @property
    def length(self) -> int:
        """Tokens fed so far (the cache's length t)."""
        return int(self.past_keys.shape[3])


class BackendStepModel:
    """A paraphraser's encoder and decoder step on a backend, as `decoding.StepModel`.

    Args:
        backend: the inference backend with both models loaded (`<name>` and `<name>-encoder`).
        metadata: the decoder step's repository metadata (`Prop.*` properties).
        max_length: most tokens a hypothesis may generate ([SEP] excluded): at most the
            model's `Prop.MAX_LENGTH`.
    Raises:
        KeyError: the metadata lacks a `Prop` the step needs (an export that is not a paraphraser's).
    """

    def __init__(self, backend: Backend, metadata: ModelMetadata, max_length: int) -> None:
        p = metadata.properties
        special = p[Prop.SPECIAL_IDS]
        self._backend = backend
        self.name = metadata.name
        self.encoder = str(p.get(Prop.ENCODER_MODEL) or encoder_name(metadata.name))
        self.vocab_size = int(p[Prop.VOCAB_SIZE])
        self.bos_id = int(special["bos"])
        self.eos_id = int(special["eos"])
        self.pad_id = int(special["pad"])
        self.unk_id = int(special["unk"])
        self.max_length = int(max_length)
        self._cache_shape = (int(p[Prop.LAYERS]), int(p[Prop.HEADS]), int(p[Prop.HEAD_DIM]))
        self._steps = DECODER_STEPS.labels(metadata.name)
        self._rows = DECODER_ROWS.labels(metadata.name)

    async def start(self, source_ids: Sequence[int], rows: int) -> DecodeState:
        """Encode the source once and set up `rows` empty hypotheses.

        Args:
            source_ids: the source's token ids without [CLS]/[SEP] (at most the model's max_length).
            rows: hypotheses to decode side by side (>= 1).
        Returns:
            DecodeState: every row with the source's cross keys/values and an empty cache.
        Raises:
            ResourceExhausted, DeadlineExceeded, Unavailable: the backend refused or lost the call.
            InternalError: the encoder returned a non-finite value.
        """
        ids = np.array([[self.bos_id, *source_ids, self.eos_id]], dtype=np.int64)
        mask = np.ones_like(ids)
        out = await self._backend.infer(self.encoder, {Tensor.INPUT_IDS: ids, Tensor.ATTENTION_MASK: mask})
        keys = finite_output(f"the encoder of paraphraser '{self.name}'", np.asarray(out[Tensor.CROSS_KEYS], dtype=np.float32))
        values = finite_output(f"the encoder of paraphraser '{self.name}'", np.asarray(out[Tensor.CROSS_VALUES], dtype=np.float32))
        source = ids.shape[1]  # a backend pads nothing for a lone row, but cut to be sure
        layers, heads, head_dim = self._cache_shape
        empty = np.zeros((rows, layers, heads, 0, head_dim), dtype=np.float32)
        return DecodeState(
            cross_keys=np.repeat(keys[:, :, :, :source], rows, axis=0),
            cross_values=np.repeat(values[:, :, :, :source], rows, axis=0),
            attention_mask=np.repeat(mask, rows, axis=0),
            past_keys=empty,
            past_values=empty.copy(),
        )

    async def step(self, state: DecodeState, tokens: np.ndarray) -> np.ndarray:
        """Feed one token per row and get the next token's distribution.

        The first step (an empty cache) sends one all-zero cache slot masked out by `past_mask`
        (no zero-length axis reaches the engine); the row's cache kept afterwards is the real
        slots only: `present[..., :t, :]` and the new slot `present[..., -1:, :]` (the batcher
        right-pads other calls' longer caches between them).

        Args:
            state: the call's hypotheses (t tokens fed so far).
            tokens: int64 [rows], the token each row appends ([CLS] at the first step).
        Returns:
            log_probs float32 [rows, V]: log-softmax of the next token's logits; `state` now
            holds t + 1 tokens.
        Raises:
            ValueError: tokens is not one per row.
            ResourceExhausted, DeadlineExceeded, Unavailable: the backend refused or lost the call.
            InternalError: the decoder returned a non-finite log-probability.
        """
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        rows, t = state.rows, state.length
        if len(tokens) != rows:
            raise ValueError(f"step got {len(tokens)} tokens for {rows} rows")
        if t == 0:
            past_keys = np.zeros((*state.past_keys.shape[:3], 1, state.past_keys.shape[4]), dtype=np.float32)
            past_values, past_mask = past_keys, np.zeros((rows, 1), dtype=np.int64)
        else:
            past_keys, past_values, past_mask = state.past_keys, state.past_values, np.ones((rows, t), dtype=np.int64)
        inputs = {
            Tensor.INPUT_IDS: tokens[:, None],
            Tensor.POSITION_IDS: np.full((rows, 1), t, dtype=np.int64),
            Tensor.PAST_KEYS: past_keys,
            Tensor.PAST_VALUES: past_values,
            Tensor.PAST_MASK: past_mask,
            Tensor.CROSS_KEYS: state.cross_keys,
            Tensor.CROSS_VALUES: state.cross_values,
            Tensor.ATTENTION_MASK: state.attention_mask,
        }
        self._steps.inc()
        self._rows.inc(rows)
        out = await self._backend.infer(self.name, inputs)
        log_probs = np.asarray(out[Tensor.LOG_PROBS], dtype=np.float32)[:, : self.vocab_size]
        finite_output(f"the log-probabilities of paraphraser '{self.name}'", log_probs)
        present_keys, present_values = np.asarray(out[Tensor.PRESENT_KEYS]), np.asarray(out[Tensor.PRESENT_VALUES])
        keys = np.concatenate([present_keys[:, :, :, :t], present_keys[:, :, :, -1:]], axis=3)
        values = np.concatenate([present_values[:, :, :, :t], present_values[:, :, :, -1:]], axis=3)
        state.past_keys = keys.astype(np.float32, copy=False)
        state.past_values = values.astype(np.float32, copy=False)
        return log_probs

    def select(self, state: DecodeState, rows: np.ndarray) -> DecodeState:
        """Keep, drop or duplicate rows: the new state's row i is `state`'s row `rows[i]`.

        Args:
            state: the call's hypotheses.
            rows: int [k], row indices into `state` (repeats allowed), k >= 1.
        Returns:
            DecodeState with k rows.
        """
        index = np.asarray(rows, dtype=np.int64).reshape(-1)
        return DecodeState(
            cross_keys=state.cross_keys[index],
            cross_values=state.cross_values[index],
            attention_mask=state.attention_mask[index],
            past_keys=state.past_keys[index],
            past_values=state.past_values[index],
        )
