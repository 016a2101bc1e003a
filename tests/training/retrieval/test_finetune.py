"""The bi-encoder fine-tuned on the RAR-b train split (`facet retrieval finetune-rarb`): it trains
on train rows only, contrastive training lowers its loss, and the registered model is what a
retrieval service serves and `facet eval rarb-mcr --model` scores."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import sdk
from services.model_repository import ModelRepository, ModelVersion
from tests.serving import ServerProcess
from training.rerank.data import Group
from training.rerank.train import GroupSampler, TrainingConfig
from training.retrieval.finetune import (
    TRAINING_DATA_PROP,
    TRAINING_PROP,
    FinetuneOptions,
    contrastive_columns,
    finetune,
    load_bi_encoder,
    tiny_options,
    train_bi_encoder,
)
from training.retrieval.rarb import data_files, load_rows, main, split_of

TINY = "tiny-rarb-ft"


def test_training_groups_are_rarb_train_rows_only(rarb_data: Path) -> None:
    """No dev or test query (with or without its instruction) is ever a training query, every
    file's train rows are used, and some queries carry their instruction and some do not."""
    from training.retrieval.finetune import training_sources

    held_out: set[str] = set()
    train: dict[str, set[str]] = {}
    for path in data_files(rarb_data):
        for row in load_rows(path):
            variants = {row.query_text(False), row.query_text(True)}
            if split_of(row.query) == "train":
                train.setdefault(path.name, set()).update(variants)
            else:
                held_out.update(variants)
    sources = training_sources(FinetuneOptions(data=rarb_data.parent))
    assert set(sources) == set(train)
    for name, groups in sources.items():
        assert groups, name
        for group in groups:
            assert group.query not in held_out, (name, group.query[:80])
            assert group.query in train[name], (name, group.query[:80])
    queries = [g.query for groups in sources.values() for g in groups]
    bare = {row.query for path in data_files(rarb_data) for row in load_rows(path)}
    with_instruction = sum(q not in bare for q in queries)
    assert 0 < with_instruction < len(queries)


def test_the_batch_columns_align_each_query_with_its_gold() -> None:
    groups = [Group("q1", ("a", "gold1", "b"), 1, "x"), Group("q2", ("gold2", "c"), 0, "y")]
    assert contrastive_columns(groups) == (["q1", "q2"], ["gold1", "gold2"], ["a", "b", "c"])


def _loss_on(model, groups: list[Group]) -> float:  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    loss = MultipleNegativesRankingLoss(model)
    features = [{k: v for k, v in model.preprocess(texts).items() if hasattr(v, "shape")} for texts in contrastive_columns(groups)]
    with torch.no_grad():
        return float(loss(features, torch.zeros(0)))


def test_contrastive_training_lowers_the_loss_on_its_rows(rarb_data: Path) -> None:
    """A few steps on four train rows: the loss on those rows (eval mode, no dropout) falls."""
    groups = []
    for name in ("alphanli-test.csv", "physicaliqa-test.csv"):
        rows = [row for row in load_rows(rarb_data / name, limit=40) if split_of(row.query) == "train"][:2]
        groups += [Group(row.query, row.candidates, row.label, name) for row in rows]
    assert len(groups) == 4
    model = load_bi_encoder(layers=1)
    model.eval()
    before = _loss_on(model, groups)
    config = TrainingConfig(steps=6, batch_groups=4, lr=2e-4, train_max_length=64)
    losses = train_bi_encoder(model, GroupSampler({"rows": groups}, {"rows": 1.0}), config, progress=False)
    assert len(losses) == 6
    assert model.max_seq_length == 256  # the served length is restored after training at 64
    after = _loss_on(model, groups)
    assert after < before, (before, after)


@pytest.fixture(scope="module")
def finetuned(rarb_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRepository, ModelVersion, Path]:
    """The tiny fine-tune (2 layers, 4 steps of 4 rows) registered in a new repository."""
    repository = ModelRepository(tmp_path_factory.mktemp("finetune-models"))
    work = tmp_path_factory.mktemp("finetune-work")
    entry = finetune(repository, work, tiny_options(TINY, data=rarb_data.parent))
    return repository, entry, work / TINY


@pytest.fixture(scope="module")
def finetuned_address(finetuned: tuple[ModelRepository, ModelVersion, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repository, entry, _ = finetuned
    server = ServerProcess(repository.root, tmp_path_factory.mktemp("finetune-data"), {"FACET_RETRIEVAL_EMBEDDING_MODEL": entry.name})
    server.start()
    yield server.address
    with contextlib.suppress(Exception):
        server.terminate(10.0)


def test_the_registered_model_records_its_training(finetuned: tuple[ModelRepository, ModelVersion, Path]) -> None:
    _, entry, _ = finetuned
    training = entry.properties[TRAINING_PROP]
    assert (training["steps"], training["batch_groups"], training["layers"]) == (4, 4, 2)
    assert {row["split"] for row in entry.properties[TRAINING_DATA_PROP]} == {"train"}
    assert entry.metadata["parity"]["passed"]
    # read from the directory sentence-transformers 6 saved (pooling "mode", max length in the tokenizer's config)
    assert (entry.properties["pooling"], entry.properties["max_seq_length"], entry.properties["dimension"]) == ("mean", 256, 384)


def test_the_service_serves_the_finetuned_weights(finetuned: tuple[ModelRepository, ModelVersion, Path], finetuned_address: str,
                                                  rarb_data: Path) -> None:  # fmt: skip
    """Embed through the service equals sentence-transformers' encode of the fine-tuned directory,
    and differs from the same layers before fine-tuning."""
    from sentence_transformers import SentenceTransformer

    _, entry, model_dir = finetuned
    texts = [row.query for row in load_rows(rarb_data / "alphanli-test.csv", limit=4)]
    with sdk.Client(finetuned_address) as client:
        assert client.model_info().name == entry.name
        served = client.embed(texts)
    tuned = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).encode(texts, normalize_embeddings=True)
    base = load_bi_encoder(layers=2).encode(texts, normalize_embeddings=True)
    assert np.sum(served * tuned, axis=1).min() >= 0.9999
    assert np.sum(served * base, axis=1).min() < 0.9999


def test_eval_scores_the_named_model_and_refuses_another(finetuned_address: str, rarb_data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "results.json"
    argv = ["--data", str(rarb_data), "--address", finetuned_address, "--split", "test", "--limit", "3", "--json", str(out)]
    assert main([*argv, "--model", TINY]) == 0
    results = json.loads(out.read_text())
    assert results["model"]["name"] == TINY and results["split"] == "test"
    for file in results["files"]:
        mcr = file["mcr"]
        assert mcr["rows"] == 3 and mcr["reference"] is None  # the README's figures are the default model's
        for variant in ("without_instruction", "with_instruction"):
            assert 0 <= mcr[variant]["correct"] <= 3
    capsys.readouterr()
    assert main([*argv, "--model", "all-minilm-l6-v2"]) == 1
    err = capsys.readouterr().err
    assert f"serves the embedding model {TINY}" in err and "FACET_RETRIEVAL_EMBEDDING_MODEL=all-minilm-l6-v2" in err
