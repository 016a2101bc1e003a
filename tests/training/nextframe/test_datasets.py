"""Physics video datasets on disk: splits, manifest, reproducibility, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.nextframe.datasets import DatasetManifest, VideoDataset, split_counts, write_dataset


def test_splits_are_8_1_1() -> None:
    assert split_counts(1000) == {"train": 800, "val": 100, "test": 100}
    assert split_counts(20) == {"train": 16, "val": 2, "test": 2}
    assert split_counts(2) == {"train": 2, "val": 0, "test": 0}


def test_a_dataset_is_written_in_shards_and_reproduced_by_its_seed(tmp_path: Path) -> None:
    m = write_dataset("pendulum", tmp_path / "a", videos=20, frames=6, seed=3, shard_videos=7, progress=False)
    assert m.videos == {"train": 16, "val": 2, "test": 2} and len(m.shards["train"]) == 3
    assert DatasetManifest.read(tmp_path / "a") == m
    train, test = VideoDataset(tmp_path / "a", "train"), VideoDataset(tmp_path / "a", "test")
    assert train.frames.shape == (16, 6, 64, 64) and train.frames.dtype == np.uint8 and len(test) == 2
    assert ((train.constants >= 1.0) & (train.constants <= 20.0)).all()
    assert not set(train.constants) & set(test.constants)  # splits share no video
    write_dataset("pendulum", tmp_path / "b", videos=20, frames=6, seed=3, shard_videos=7, progress=False)
    np.testing.assert_array_equal(VideoDataset(tmp_path / "b", "train").frames, train.frames)
    with pytest.raises(KeyError, match="no split"):
        VideoDataset(tmp_path / "a", "holdout")


def test_the_cli_simulates_every_dataset(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "data", "simulate", "all", "--videos", "3", "--frames", "4", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["bouncing_balls_2d", "bouncing_balls_3d", "colliding_blocks", "moon_orbit", "pendulum", "roller_coaster"]
    )
    assert "pendulum: {'train': 1, 'val': 1, 'test': 1} videos of 4 frames" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "deploy.cli", "data", "simulate", "teleport", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown dataset 'teleport'" in bad.stderr
