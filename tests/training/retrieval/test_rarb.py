"""RAR-b MCR evaluation through the SDK: the acceptance numbers on αNLI and PIQA against a real
retrieval server, the TempReason shuffle, the full setting and its metrics."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

import sdk
from training.retrieval.rarb import (
    McrRow,
    evaluate_file,
    full_collection_name,
    load_rows,
    main,
    ndcg_at_k,
    recall_at_k,
    reference_accuracy,
    shuffle_candidates,
)

pytestmark = pytest.mark.integration

ACCURACY_TOLERANCE = 0.005
# A file whose reference accuracy the data folder's README records (measured there with
# sentence-transformers); the figures themselves are read from it, never from the code under test.
# One file: a second one (physicaliqa, also recorded) took another 83 s of CI and checks the same
# path; `facet eval rarb-mcr` runs them all.
ACCEPTANCE_FILES = ("alphanli-test.csv",)


@pytest.fixture(scope="module")
def client(retrieval_address: str) -> Iterator[sdk.Client]:
    with sdk.Client(retrieval_address) as c:
        yield c


# -- acceptance: the service reproduces sentence-transformers' RAR-b numbers -------------------


# On the in-process backend only: a minute per file per backend, and what it adds on the others is
# already checked there — every backend's embeddings equal sentence-transformers'
# (tests/services/retrieval) and the evaluation runs through every backend (the full setting below).
@pytest.mark.timeout(900)
@pytest.mark.parametrize("retrieval_server", ["onnxruntime"], indirect=True)
@pytest.mark.parametrize("file", ACCEPTANCE_FILES)
def test_mcr_accuracy_matches_reference(client: sdk.Client, rarb_data: Path, file: str) -> None:
    references = reference_accuracy(rarb_data)
    assert file in references, f"{rarb_data / 'README.md'} records no reference figures for {file}"
    expected_without, expected_with = references[file]
    result = evaluate_file(client, rarb_data / file, progress=False).mcr
    assert result.reference == (expected_without, expected_with)
    assert result.rows == len(load_rows(rarb_data / file))
    assert abs(result.without_instruction.accuracy - expected_without) <= ACCURACY_TOLERANCE, result
    assert abs(result.with_instruction.accuracy - expected_with) <= ACCURACY_TOLERANCE, result


def test_reference_figures_are_read_from_the_data_readme(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text(
        "Intro. Reference figures measured with X (fp32, CPU), MCR accuracy without / with instruction: "
        "αNLI 0.1234 / 0.5678; PIQA 0.9 / 0.8.\n\nMore text 0.5 / 0.5.\n",
        encoding="utf-8",
    )
    assert reference_accuracy(tmp_path) == {"alphanli-test.csv": (0.1234, 0.5678), "physicaliqa-test.csv": (0.9, 0.8)}
    assert reference_accuracy(tmp_path / "missing") == {}


# -- TempReason shuffle (no server) ------------------------------------------------------------


def test_tempreason_shuffle_is_seeded_and_keeps_the_gold(rarb_data: Path) -> None:
    rows = load_rows(rarb_data / "tempreason-l3-pure-test.csv", limit=500)
    assert all(row.label == 0 for row in rows)  # the trap the shuffle removes

    first = shuffle_candidates(rows, seed=7)
    assert first == shuffle_candidates(rows, seed=7)
    assert first != shuffle_candidates(rows, seed=8)
    for before, after in zip(rows, first, strict=True):
        assert after.gold == before.gold
        assert sorted(after.candidates) == sorted(before.candidates)
    moved = sum(row.label != 0 for row in first) / len(first)
    assert moved >= 0.5, f"only {moved:.0%} of golds left index 0"


def test_shuffle_label_follows_a_duplicated_gold() -> None:
    row = McrRow("Given the following question, retrieve the correct answer.", "q?", ("a", "a", "b", "c"), 0)
    for seed in range(20):
        (shuffled,) = shuffle_candidates([row], seed)
        assert shuffled.gold == "a" and shuffled.query == "q?"


# -- full setting ------------------------------------------------------------------------------


def test_full_setting_on_a_small_sample(client: sdk.Client, rarb_data: Path) -> None:
    path = rarb_data / "winogrande-test.csv"
    name = full_collection_name(path)
    client.create_collection(name)  # left over from an aborted run: replaced, then removed
    result = evaluate_file(client, path, limit=50, full=True, progress=False)
    full = result.full
    assert full is not None and full.rows == 50 and full.collection == name
    assert 0 < full.corpus_documents <= 100
    for score in (full.without_instruction, full.with_instruction):
        assert score.queries == 50
        assert 0.0 <= score.ndcg_at_10 <= score.recall_at_10 <= 1.0
    assert name not in {c.name for c in client.list_collections()}


def test_full_collection_name_is_valid() -> None:
    assert full_collection_name(Path("tempreason-l2-pure-test.csv")) == "rarb-full-tempreason-l2-pure-test"
    assert full_collection_name(Path("a b.c.csv")) == "rarb-full-a-b-c"
    assert len(full_collection_name(Path("x" * 300 + ".csv"))) == 128


# -- metrics -----------------------------------------------------------------------------------


def test_ndcg_and_recall_with_one_relevant_document() -> None:
    assert ndcg_at_k(1) == 1.0
    assert ndcg_at_k(3) == 0.5
    assert ndcg_at_k(10) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(None) == 0.0 and ndcg_at_k(11) == 0.0
    assert recall_at_k(1) == recall_at_k(10) == 1.0
    assert recall_at_k(None) == recall_at_k(11) == 0.0


# -- command errors ----------------------------------------------------------------------------


def _args(data: Path, address: str) -> list[str]:
    return ["--data", str(data), "--address", address, "--limit", "5"]


def test_missing_data_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(tmp_path / "nope", "localhost:1")) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unreachable_service_exits_1(rarb_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_args(rarb_data, "localhost:1")) == 1
    assert "facet up" in capsys.readouterr().err


def test_bad_option_exits_2_with_the_command_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--limit", "many"])
    assert exit_info.value.code == 2
    assert "facet eval rarb-mcr: error: argument --limit" in capsys.readouterr().err
