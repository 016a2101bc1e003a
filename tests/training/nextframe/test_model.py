"""The next-frame U-Net: it learns next-frame prediction on real simulated videos, rolls out,
and exposes pooled intermediate activations for the probes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.nextframe.datasets import VideoDataset, write_dataset
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, rollout, to_unit
from training.nextframe.train import FrameTrainingConfig, evaluate, train_frame_model, windows

TINY = FrameModelConfig(base_channels=8, depth=2)


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pendulum")
    write_dataset("pendulum", out, videos=40, frames=16, seed=0, progress=False)
    return out


def test_shapes_and_probe_features() -> None:
    model = FrameUNet(TINY)
    x = torch.rand(3, CONTEXT, 64, 64)
    assert model(x).shape == (3, 1, 64, 64)
    feats = model.probe_features(x)
    # stem 8 + down 16, 32 + merged 16, 8 channels, each pooled to 4x4
    assert feats.shape == (3, (8 + 16 + 32 + 16 + 8) * 16)
    video = rollout(model, x, horizon=7)
    assert video.shape == (3, 7, 64, 64) and video.min() >= 0 and video.max() <= 1
    with pytest.raises(ValueError):
        FrameModelConfig(depth=0)
    assert FrameUNet(FrameModelConfig(base_channels=12, depth=1))(x).shape == (3, 1, 64, 64)  # any width


def test_windows_cover_every_start() -> None:
    w = windows(np.zeros((2, 8, 64, 64), np.uint8))
    assert len(w) == 2 * (8 - CONTEXT) and w[:, 1].max() == 8 - CONTEXT - 1
    with pytest.raises(ValueError, match="at least 6 frames"):
        windows(np.zeros((2, 5, 64, 64), np.uint8))


def test_training_beats_copying_the_last_frame(pendulum: Path) -> None:
    train, val = VideoDataset(pendulum, "train"), VideoDataset(pendulum, "val")
    model = train_frame_model(train, TINY, FrameTrainingConfig(steps=150, batch=16), progress=False)
    scores = evaluate(model, val)
    assert scores["loss"] < 0.7 * scores["copy_last_loss"]
    # a rollout from real context stays close to the truth for the first frames
    clip = to_unit(torch.from_numpy(val.frames[:1]))
    predicted = rollout(model, clip[:, :CONTEXT], horizon=3)
    truth = clip[:, CONTEXT : CONTEXT + 3]
    copy_last = clip[:, CONTEXT - 1 : CONTEXT].expand_as(truth)
    assert float(((predicted - truth) ** 2).mean()) < float(((copy_last - truth) ** 2).mean())
