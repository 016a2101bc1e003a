"""The step model over the backend, under the decoding strategies: what a call can generate."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.backends.base import ModelMetadata
from services.paraphrase.catalog import Prop, Tensor
from services.paraphrase.decoding import DecodingOptions, generate
from services.paraphrase.generator import BackendStepModel

VOCAB, UNK = 8, 1


class _Backend:
    """Answers the decoder step with log-probabilities that put [UNK] first (the backend is not
    under test here: what the step model makes of its reply is)."""

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows, past = inputs[Tensor.PAST_KEYS].shape[0], inputs[Tensor.PAST_KEYS].shape[3]
        log_probs = np.log(np.full((rows, VOCAB), 0.05, dtype=np.float32))
        log_probs[:, UNK] = np.log(0.65)
        present = np.zeros((rows, 1, 1, past + 1, 2), dtype=np.float32)
        return {Tensor.LOG_PROBS: log_probs, Tensor.PRESENT_KEYS: present, Tensor.PRESENT_VALUES: present}


async def test_unk_is_never_generated_even_when_the_model_prefers_it() -> None:
    props = {
        Prop.SPECIAL_IDS: {"pad": 0, "unk": UNK, "bos": 2, "eos": 3},
        Prop.VOCAB_SIZE: VOCAB,
        Prop.LAYERS: 1,
        Prop.HEADS: 1,
        Prop.HEAD_DIM: 2,
        Prop.ENCODER_MODEL: "p-encoder",
    }
    step_model = BackendStepModel(_Backend(), ModelMetadata(name="p", version=1, kind="paraphraser", properties=props, files={}), 5)  # type: ignore[arg-type]
    step_model.start = _start  # type: ignore[method-assign]  # no encoder here: the decoder step is what is tested
    for options in (DecodingOptions(strategy="greedy"), DecodingOptions(strategy="beam", beam_width=3), DecodingOptions(strategy="sample", n=4, seed=0)):
        for hypothesis in await generate(step_model, [5, 6], options):
            assert UNK not in hypothesis.token_ids  # [UNK] decodes to no text: a paraphrase would silently lose a word


async def _start(source_ids, rows):  # type: ignore[no-untyped-def]
    return _state(rows)


def _state(rows: int = 1):  # type: ignore[no-untyped-def]
    from services.paraphrase.generator import DecodeState

    empty = np.zeros((rows, 1, 1, 0, 2), dtype=np.float32)
    cross = np.zeros((rows, 1, 1, 3, 2), dtype=np.float32)
    return DecodeState(cross_keys=cross, cross_values=cross, attention_mask=np.ones((rows, 3), np.int64), past_keys=empty, past_values=empty.copy())
