"""Cross-encoder training on Ray Train: 2 data-parallel workers, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.rerank.data import Group, quora_pairs
from training.rerank.model import CrossEncoderConfig, encode_pairs, load_tokenizer
from training.rerank.ray_job import train_cross_encoder_on_ray
from training.rerank.train import GENERAL, TrainingConfig

pytestmark = pytest.mark.integration


def test_two_workers_train_checkpoint_and_resume(tmp_path: Path, rarb_data: Path) -> None:
    pairs = quora_pairs(rarb_data.parent, "test")[:24]
    # real pairs, each group: the duplicate and two other questions of the sample
    groups = [Group(q, (p, pairs[(i + 5) % 24][1], pairs[(i + 11) % 24][1]), 0, "quora") for i, (q, p) in enumerate(pairs)]
    config = CrossEncoderConfig(layers=1, max_length=32)
    model, metrics = train_cross_encoder_on_ray({GENERAL: groups}, config, TrainingConfig(steps=4, batch_groups=2), tmp_path / "runs",
                                                num_workers=2, checkpoint_every=2)  # fmt: skip
    assert metrics["step"] == 4 and metrics["start_step"] == 0
    tokenizer = load_tokenizer(32)
    with torch.no_grad():
        logits = model(**encode_pairs(tokenizer, ["where is paris?"], ["in france."], 32)).logits
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()
    # the same output directory with more steps resumes from the last checkpoint instead of starting over
    _, resumed = train_cross_encoder_on_ray({GENERAL: groups}, config, TrainingConfig(steps=6, batch_groups=2), tmp_path / "runs",
                                            num_workers=2, checkpoint_every=2)  # fmt: skip
    assert resumed["step"] == 6 and resumed["start_step"] == 4
