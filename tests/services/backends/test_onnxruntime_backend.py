"""The ONNX Runtime backend on the real embedding model."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.backends.onnxruntime import OnnxRuntimeBackend
from services.model_repository import Key, ModelRepository, TensorSpec
from services.retrieval.tokenization import TextTokenizer
from services.runtime.config import FacetConfig, replace
from services.runtime.errors import InvalidArgument, NotFound

MODEL = "all-minilm-l6-v2"
TEXTS = ["A short one.", "A much longer sentence, with several clauses, that pads the others.", "Mid length text here."]


def _inputs(model_repository: ModelRepository, texts: list[str]) -> dict[str, np.ndarray]:
    tokenizer = TextTokenizer(model_repository.get(MODEL).file("tokenizer"), 256)
    batch = tokenizer(texts)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}


@pytest.mark.parametrize("batching", [True, False])
async def test_concurrent_single_requests_equal_one_batch(model_repository: ModelRepository, batching: bool) -> None:
    config = replace(FacetConfig(model_repository=model_repository.root), batching={"enabled": batching})
    backend = OnnxRuntimeBackend(config)
    meta = await backend.load(MODEL)
    assert (meta.kind, meta.properties["dimension"]) == ("embedding", 384)
    assert await backend.ready(MODEL)
    together = await backend.infer(MODEL, _inputs(model_repository, TEXTS))
    alone = await asyncio.gather(*(backend.infer(MODEL, _inputs(model_repository, [t])) for t in TEXTS))
    stacked = np.concatenate([a["sentence_embedding_normalized"] for a in alone])
    # padding inside the batcher must not change any request's embedding
    np.testing.assert_allclose(stacked, together["sentence_embedding_normalized"], atol=1e-5)
    await backend.close()


async def test_unknown_model_and_wrong_inputs(model_repository: ModelRepository) -> None:
    backend = OnnxRuntimeBackend(FacetConfig(model_repository=model_repository.root))
    with pytest.raises(NotFound, match="facet models build"):
        await backend.load("no-such-model")
    await backend.load(MODEL)
    with pytest.raises(InvalidArgument, match="takes inputs"):
        await backend.infer(MODEL, {"input_ids": np.ones((1, 3), np.int64)})
    with pytest.raises(NotFound):
        await backend.infer("other", {})
    await backend.close()


async def test_warm_up_calibrates_admission_before_the_first_call(model_repository: ModelRepository) -> None:
    """The warm-up runs teach the batcher's cost estimate, so the first calls are already
    admitted against their deadlines: 256 rows of 256 tokens cannot run in 1 ms."""
    from services.backends import deadline
    from services.runtime.errors import DeadlineExceeded

    backend = OnnxRuntimeBackend(FacetConfig(model_repository=model_repository.root))
    await backend.load(MODEL)

    async def admit(remaining_s: float | None) -> None:
        deadline.enter_call(remaining_s)
        backend.admit(MODEL, rows=256, row_width=256)

    with pytest.raises(DeadlineExceeded, match="batching.deadline_admission"):
        await asyncio.ensure_future(admit(0.001))
    await asyncio.ensure_future(admit(None))  # no deadline: nothing to refuse
    backend.admit(MODEL, rows=256, row_width=256)  # outside any call: likewise
    await backend.close()


async def test_warm_up_teaches_the_cost_model_two_widths(model_repository: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taught one width only, the cost model charges a batch's fixed overhead per cell and
    overestimates long batches several times (refusing long calls that would finish): the warm-up
    measures the model at two sequence lengths, so the first fit separates overhead from per-cell cost."""
    from services.backends.batching import DynamicBatcher
    from services.backends.padding import width

    seen: list[tuple[int, int]] = []
    observe = DynamicBatcher.observe

    def spy(self: DynamicBatcher, inputs: dict[str, np.ndarray], seconds: float) -> None:
        seen.append((len(next(iter(inputs.values()))), width(list(inputs.values()))))
        observe(self, inputs, seconds)

    monkeypatch.setattr(DynamicBatcher, "observe", spy)
    backend = OnnxRuntimeBackend(FacetConfig(model_repository=model_repository.root))
    await backend.load(MODEL)
    assert len(seen) == 2 and len({w for _, w in seen}) == 2, seen  # two widths measured, each after its allocating run
    await backend.close()


def _positions_model(path: Path, positions: int) -> Path:
    """ids int64 [batch, seq] -> ids + a learned position table at 0..seq-1, float32 [batch, seq, 2]:
    like every Transformer with learned positions, it cannot run a sequence longer than `positions`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(positions * 2, dtype=np.float32).reshape(positions, 2), "table")
    nodes = [
        helper.make_node("Shape", ["ids"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
        helper.make_node("Range", ["zero", "seq", "one"], ["index"]),
        helper.make_node("Gather", ["table", "index"], ["position"], axis=0),
        helper.make_node("Cast", ["ids"], ["ids_float"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["ids_float", "two"], ["column"]),
        helper.make_node("Add", ["column", "position"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "positions",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 2])],
        initializer=[table, *(numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1)))]
        + [numpy_helper.from_array(np.array([2], np.int64), "two")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


async def test_warm_up_stays_within_a_models_max_sequence_length(tmp_path: Path) -> None:
    """A model that declares `max_sequence_length` (the paraphraser's encoder: 32 learned positions)
    loads: warm-up shapes stay within it; without the declaration the 64-token warm-up fails."""
    repository = ModelRepository(tmp_path / "models")
    model_file = _positions_model(tmp_path / "positions.onnx", 24)
    spec = {Key.INPUTS: [TensorSpec("ids", "int64", (-1,)).to_dict()], Key.OUTPUTS: [TensorSpec("out", "float32", (-1, 2)).to_dict()]}
    repository.register("bounded", model_file, {Key.KIND: "test", Key.MAX_SEQUENCE_LENGTH: 24, **spec})
    repository.register("unbounded", model_file, {Key.KIND: "test", **spec})
    backend = OnnxRuntimeBackend(replace(FacetConfig(model_repository=repository.root), batching={"enabled": False}))
    try:
        await backend.load("bounded")
        assert (await backend.infer("bounded", {"ids": np.ones((1, 24), np.int64)}))["out"].shape == (1, 24, 2)
        assert await backend.ready("bounded")
        with pytest.raises(Exception, match="(?i)broadcast|shape|dimension"):
            await backend.load("unbounded")
    finally:
        await backend.close()
