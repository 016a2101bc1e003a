"""The tiny test cross-encoder, built once per session by `build_test_model` (the rerank fixtures'
`rerank_repository`): registered with its tokenizer, CrossEncoder directory and calibration; ranks
real held-out pairs; loads with sentence-transformers; its calibration (logit shift and temperature) lowers ECE on held-out pairs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from services.backends.onnx_session import create_session
from services.model_repository import ModelRepository, ModelVersion
from services.rerank.catalog import File, Kind, Prop, Tensor
from services.rerank.config import RerankConfig
from training.rerank.build import build_test_model, tiny_options
from training.rerank.calibration import expected_calibration_error, sigmoid
from training.rerank.data import quora_pairs, rarb_groups
from training.rerank.export import tokenize_pairs

# The first test here builds the tiny model when no session fixture has (about 2 CPU-minutes of
# training; several wall-clock minutes on a busy 2-core machine), past the suite's 300 s default.
pytestmark = pytest.mark.timeout(900)

RERANKER = RerankConfig().model  # the rerank fixtures register the test model under the served default's name


@pytest.fixture(scope="module")
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModelVersion:
    """The session's test reranker (`rerank_repository`, the rerank fixtures') where the registry
    serves rerank; else built here the same way (FACET_TEST_RERANK_REPOSITORY reuses a build)."""
    try:
        repository: ModelRepository = request.getfixturevalue("rerank_repository")
    except pytest.FixtureLookupError:
        reuse = os.environ.get("FACET_TEST_RERANK_REPOSITORY")
        repository = ModelRepository(Path(reuse) if reuse else tmp_path_factory.mktemp("rerank-models"))
        if not repository.has(RERANKER):
            build_test_model(repository, tmp_path_factory.mktemp("rerank-work"), name=RERANKER)
    return repository.get(RERANKER)


def onnx_logits(entry: ModelVersion, pairs: list[tuple[str, str]], batch: int = 32) -> np.ndarray:
    """The registered ONNX model's logits through its stored tokenizer, as the service computes them."""
    session = create_session(entry.model_file, providers="cpu")
    parts = []
    for start in range(0, len(pairs), batch):
        out = session.run([Tensor.LOGITS], tokenize_pairs(entry.file(File.TOKENIZER), pairs[start : start + batch]))[0]
        assert out.dtype == np.float32 and out.shape == (len(pairs[start : start + batch]), 1)
        parts.append(out[:, 0])
    return np.concatenate(parts)


def held_out_pairs(data_dir: Path, count: int) -> list[tuple[str, str, str]]:
    """(query, its duplicate, an unrelated question) from Quora's test split (never trained on)."""
    test = quora_pairs(data_dir, "test")
    return [(test[i][0], test[i][1], test[(i + len(test) // 2) % len(test)][1]) for i in range(0, 40 * count, 40)]


def test_registered_as_a_cross_encoder_with_its_files(tiny: ModelVersion) -> None:
    from tokenizers import Tokenizer

    assert tiny.kind == Kind.CROSS_ENCODER
    assert [(t.name, t.dtype) for t in tiny.inputs] == [
        (Tensor.INPUT_IDS, "int64"),
        (Tensor.ATTENTION_MASK, "int64"),
        (Tensor.TOKEN_TYPE_IDS, "int64"),
    ]
    assert [(t.name, t.dtype, t.shape) for t in tiny.outputs] == [(Tensor.LOGITS, "float32", (1,))]
    props = tiny.properties
    assert props[Prop.MAX_SEQ_LENGTH] == 128 and props[Prop.TEMPERATURE] > 0
    assert props[Prop.CALIBRATION]["temperature"] == props[Prop.TEMPERATURE] and props[Prop.CALIBRATION]["bins"] == 15
    assert {row["name"] for row in props[Prop.TRAINING_DATA]} == {"quora+mrpc (mined negatives)"}
    assert all(row["split"] == "train" for row in props[Prop.TRAINING_DATA])
    encoding = Tokenizer.from_file(str(tiny.file(File.TOKENIZER))).encode("where is paris?", "in france.")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens.count("[SEP]") == 2 and encoding.type_ids[-1] == 1
    assert (tiny.file(File.CROSS_ENCODER) / "config.json").is_file()


def test_ranks_the_duplicate_above_an_unrelated_question(tiny: ModelVersion, rarb_data: Path) -> None:
    triples = held_out_pairs(rarb_data.parent, 12)
    logits = onnx_logits(tiny, [(q, d) for q, pos, neg in triples for d in (pos, neg)]).reshape(-1, 2)
    wins = int((logits[:, 0] > logits[:, 1]).sum())
    assert wins >= 11, f"the duplicate ranked first in {wins} of 12 held-out Quora pairs"


def test_onnx_matches_pytorch_and_cross_encoder_predict(tiny: ModelVersion, rarb_data: Path) -> None:
    from sentence_transformers import CrossEncoder
    from transformers import BertForSequenceClassification

    triples = held_out_pairs(rarb_data.parent, 8)
    dev = rarb_groups(rarb_data.parent, "dev", per_file=2, seed=7)
    pairs = [(q, d) for q, pos, neg in triples for d in (pos, neg)] + [
        p for groups in dev.values() for g in groups for p in g.pairs()
    ]
    ours = onnx_logits(tiny, pairs)
    directory = tiny.file(File.CROSS_ENCODER)
    model = BertForSequenceClassification.from_pretrained(str(directory), local_files_only=True).eval()
    feed = tokenize_pairs(tiny.file(File.TOKENIZER), pairs)
    with torch.no_grad():
        reference = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits[:, 0].numpy()
    assert np.max(np.abs(ours - reference)) <= 1e-4
    cross_encoder = CrossEncoder(str(directory), device="cpu", local_files_only=True)
    assert isinstance(cross_encoder.activation_fn, torch.nn.Identity) and cross_encoder.max_length == 128
    predicted = np.asarray(cross_encoder.predict(pairs, show_progress_bar=False))
    assert np.max(np.abs(ours - predicted)) <= 1e-4
    parity = tiny.metadata["parity"]
    assert parity["passed"] and parity["max_abs_diff_torch"] <= 1e-4 and parity["max_abs_diff_cross_encoder"] <= 1e-4


def test_calibration_lowers_ece_on_held_out_dev_pairs(tiny: ModelVersion, rarb_data: Path) -> None:
    options = tiny_options()
    fitted_on = rarb_groups(rarb_data.parent, "dev", max_candidates=options.calibration_candidates, per_file=options.calibration_rows,
                            seed=options.seed + 1)  # the build's calibration sample  # fmt: skip
    used = {g.query for groups in fitted_on.values() for g in groups}
    held = rarb_groups(rarb_data.parent, "dev", max_candidates=options.calibration_candidates, per_file=30, seed=11)
    groups = [g for file_groups in held.values() for g in file_groups if g.query not in used]
    pairs = [p for g in groups for p in g.pairs()]
    labels = np.array([int(i == g.label) for g in groups for i in range(len(g.candidates))])
    logits = onnx_logits(tiny, pairs).astype(np.float64)
    temperature = float(tiny.properties[Prop.TEMPERATURE])
    # the served logits carry the calibration's shift (folded into the head); as trained they were logit + shift
    shift = float(tiny.properties[Prop.CALIBRATION]["logit_shift"])
    before = expected_calibration_error(sigmoid(logits + shift), labels)
    after = expected_calibration_error(sigmoid(logits / temperature), labels)
    assert after < before, f"ECE {before:.3f} as trained, {after:.3f} shifted by {shift:.2f} at T={temperature:.3f} on {len(pairs)} held-out pairs"


def test_rarb_evaluation_reports_both_settings_per_file(tiny: ModelVersion, rarb_data: Path) -> None:
    from training.rerank.build import evaluate_rarb

    result = evaluate_rarb(tiny, rarb_data.parent, rows_per_file=3, progress=False)
    assert result["split"] == "test" and len(result["accuracy"]) == 6
    for scores in result["accuracy"].values():
        assert scores["rows"] == 3 and {scores["without_instruction"], scores["with_instruction"]} <= {0.0, 1 / 3, 2 / 3, 1.0}
    assert result["ece"]["pairs"] > 36 and 0.0 <= result["ece"]["ece_calibrated"] <= 1.0
