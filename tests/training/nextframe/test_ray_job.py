"""Frame-model training on Ray Train: 2 data-parallel workers, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.nextframe.datasets import write_dataset
from training.nextframe.model import CONTEXT, FrameModelConfig
from training.nextframe.ray_job import train_frame_model_on_ray
from training.nextframe.train import FrameTrainingConfig

pytestmark = pytest.mark.integration


def test_two_workers_train_checkpoint_and_resume(tmp_path: Path) -> None:
    write_dataset("pendulum", tmp_path / "data", videos=12, frames=8, seed=0, progress=False)
    config = FrameModelConfig(base_channels=8, depth=2)
    model, metrics = train_frame_model_on_ray(tmp_path / "data", config, FrameTrainingConfig(steps=12, batch=4), tmp_path / "runs",
                                              num_workers=2, checkpoint_every=6)  # fmt: skip
    assert metrics["step"] == 12 and metrics["start_step"] == 0
    assert model(torch.rand(1, CONTEXT, 64, 64)).shape == (1, 1, 64, 64)
    # the same --out with more steps resumes from the last checkpoint instead of starting over
    _, resumed = train_frame_model_on_ray(tmp_path / "data", config, FrameTrainingConfig(steps=18, batch=4), tmp_path / "runs",
                                          num_workers=2, checkpoint_every=6)  # fmt: skip
    assert resumed["step"] == 18 and resumed["start_step"] == 12
