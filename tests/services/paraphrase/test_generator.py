"""The step model over the backend: what it hands the decoding strategies."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from services.backends.base import ModelMetadata
from services.paraphrase.catalog import Prop, Tensor
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


async def test_unk_is_never_offered_even_when_the_model_prefers_it() -> None:
    props = {
        Prop.SPECIAL_IDS: {"pad": 0, "unk": UNK, "bos": 2, "eos": 3},
        Prop.VOCAB_SIZE: VOCAB,
        Prop.LAYERS: 1,
        Prop.HEADS: 1,
        Prop.HEAD_DIM: 2,
        Prop.ENCODER_MODEL: "p-encoder",
    }
    step_model = BackendStepModel(_Backend(), ModelMetadata(name="p", version=1, kind="paraphraser", properties=props, files={}), 5)  # type: ignore[arg-type]
    state = step_model.select(_state(), np.zeros(2, dtype=np.int64))
    log_probs = await step_model.step(state, np.full(2, 2))
    assert np.all(log_probs[:, UNK] == -np.inf)  # [UNK] decodes to no text: a paraphrase would lose a word
    assert np.allclose(log_probs[:, 4], np.log(0.05))  # the others as the model gave them


def _state():  # type: ignore[no-untyped-def]
    from services.paraphrase.generator import DecodeState

    empty = np.zeros((1, 1, 1, 0, 2), dtype=np.float32)
    cross = np.zeros((1, 1, 1, 3, 2), dtype=np.float32)
    return DecodeState(cross_keys=cross, cross_values=cross, attention_mask=np.ones((1, 3), np.int64), past_keys=empty, past_values=empty)
