"""`facet eval rarb-mcr --reranker`: MCR by a reranker through the rerank service, and the full
setting's searches reranked by the retrieval service, on real servers and the tiny test reranker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import sdk
from services.model_repository import ModelRepository
from services.rerank.catalog import File
from tests.services.rerank.fixtures import RERANKER
from tests.serving import ServerProcess
from training.retrieval.rarb import evaluate_file, load_rows, main, rows_of_split

pytestmark = pytest.mark.integration
ROWS = 40


@pytest.fixture(scope="module")
def client(search_rerank_server: ServerProcess, rerank_server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(retrieval=search_rerank_server.address, rerank=rerank_server.address) as c:
        yield c


@pytest.mark.parametrize("rerank_server", ["onnxruntime"], indirect=True)
def test_a_rerankers_mcr_accuracy_is_that_of_its_cross_encoder_directory(
    client: sdk.Client, rarb_data: Path, rerank_repository: ModelRepository
) -> None:
    from sentence_transformers import CrossEncoder

    path = rarb_data / "alphanli-test.csv"
    result = evaluate_file(client, path, limit=ROWS, split="test", rerankers=[RERANKER], progress=False)
    [reranked] = result.reranked
    assert reranked.scorer == f"reranker {RERANKER}" and reranked.rows == ROWS
    rows = rows_of_split(load_rows(path), "test")[:ROWS]
    # the same rows scored by sentence-transformers on the exported model's own directory
    model = CrossEncoder(str(rerank_repository.get(RERANKER).file(File.CROSS_ENCODER)), device="cpu")
    for with_instruction, score in ((False, reranked.without_instruction), (True, reranked.with_instruction)):
        correct = 0
        for row in rows:
            logits = model.predict([(row.query_text(with_instruction), c) for c in row.candidates], show_progress_bar=False)
            correct += int(np.argmax(logits)) == row.label
        assert abs(score.correct - correct) <= 1, (with_instruction, score, correct)  # a near-tie may flip (ONNX vs PyTorch <= 1e-4)


@pytest.mark.parametrize("rerank_server", ["onnxruntime"], indirect=True)
def test_the_full_setting_reports_before_and_after_reranking(client: sdk.Client, rarb_data: Path) -> None:
    result = evaluate_file(client, rarb_data / "winogrande-test.csv", limit=20, split="test", full=True, rerankers=[RERANKER], progress=False)
    full = result.full
    assert full is not None and list(full.reranked) == [RERANKER]
    for score in (*full.reranked[RERANKER], full.without_instruction, full.with_instruction):
        assert score.queries == 20 and 0.0 <= score.ndcg_at_10 <= score.recall_at_10 <= 1.0
    assert full.collection not in {c.name for c in client.list_collections()}


@pytest.mark.parametrize("rerank_server", ["onnxruntime"], indirect=True)
def test_an_unknown_reranker_exits_1_naming_the_served_ones(
    search_rerank_server: ServerProcess, rerank_server: ServerProcess, rarb_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", str(rarb_data), "--address", search_rerank_server.address, "--rerank-address", rerank_server.address]
    assert main([*argv, "--limit", "2", "--reranker", "no-such-reranker"]) == 1
    assert f"reranker 'no-such-reranker' is not served; available: {RERANKER}" in capsys.readouterr().err


def test_an_unknown_split_is_refused_by_the_command(rarb_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(rarb_data), "--split", "validation"])
    assert exit_info.value.code == 2 and "invalid choice: 'validation'" in capsys.readouterr().err
