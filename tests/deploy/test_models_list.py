"""`facet models list` on a real model repository (the embedding model and the tiny cross-encoders
the test session builds with Facet's own export and training code): every kind's parity check is
shown from the figures its facet.json records, and the columns line up whatever the kind's name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.cli import _parity_text
from services.model_repository import Key, ModelRepository
from tests.services.rerank.fixtures import RERANKER, SECOND_RERANKER
from tests.services.retrieval.fixtures import EMBEDDING_MODEL


@pytest.fixture()
def repository(model_repository: ModelRepository, rerank_repository: ModelRepository, tmp_path: Path) -> ModelRepository:
    """The session's builds linked into one repository (nothing copied or rebuilt)."""
    for source in (model_repository, rerank_repository):
        for name in source.models():
            (tmp_path / name).symlink_to(source.root / name, target_is_directory=True)
    return ModelRepository(tmp_path)


def test_models_list_shows_each_kinds_parity_in_aligned_columns(repository: ModelRepository) -> None:
    env = {**os.environ, "FACET_MODEL_REPOSITORY": str(repository.root)}
    done = subprocess.run([sys.executable, "-m", "deploy.cli", "models", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()[1:]
    assert len(rows) == len(repository.models()) >= 3
    kind_at, parity_at, source_at = header.index("kind"), header.index("parity"), header.index("source")
    cells = {}
    for row in rows:
        name = row.split()[0]
        entry = repository.get(name)
        assert row[kind_at:parity_at].rstrip() == entry.kind, row  # "cross-encoder" whole, in its column
        assert row[parity_at - 1] == " " and row[source_at - 1] == " ", row
        assert row[source_at:] == entry.metadata[Key.SOURCE], row
        cells[name] = row[parity_at:source_at].strip()
    for name in (RERANKER, SECOND_RERANKER):
        parity = repository.get(name).metadata[Key.PARITY]
        assert parity["passed"] is True
        assert cells[name].split()[0] == "ok"
        assert f"abs_diff_torch≤{parity['max_abs_diff_torch']:.1e}" in cells[name].split()
        assert f"abs_diff_cross_encoder≤{parity['max_abs_diff_cross_encoder']:.1e}" in cells[name].split()
    min_cosine = repository.get(EMBEDDING_MODEL).metadata[Key.PARITY]["min_cosine"]
    assert cells[EMBEDDING_MODEL] == f"ok cosine≥{min_cosine:.7f}"


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        # the record shapes of the SAE and next-frame exports (training/sae/export.py, training/nextframe)
        ({"max_relative_error": 2.1e-07, "active_flip_share": 0.0, "rows": 64}, "relative_error≤2.1e-07"),
        (
            {"features_max_relative_error": 1.9e-06, "frame_max_abs_error": 1.5e-07, "probe_max_abs_error": 0.0},
            "features_relative_error≤1.9e-06 frame_abs_error≤1.5e-07 probe_abs_error≤0.0e+00",
        ),
        ({"passed": False, "min_cosine": 0.5, "mean_cosine": 0.9, "sentences": 300}, "FAILED cosine≥0.5000000"),
        ({"passed": True, "threshold": 1e-4, "pairs": 48}, "ok"),
        # the paraphrase export's: a bound over a table of figures, a table of counts, a length that is no bound
        (
            {"passed": True, "decode_length": 20, "max_abs_diff": {"log_probs": 4.8e-06, "padded_batch": 0.0}, "greedy": {"match_rate": 1.0}},
            "ok abs_diff_log_probs≤4.8e-06 abs_diff_padded_batch≤0.0e+00",
        ),
        ({}, "-"),
    ],
)
def test_the_parity_cell_reads_any_kinds_record(record: dict[str, object], shown: str) -> None:
    assert _parity_text(record) == shown
