"""Family training from an activation cache: one pass trains every width; resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.sae.activations import MANIFEST_FILE, ActivationCache, Manifest
from training.sae.config import SaeConfig
from training.sae.train import TrainingConfig, train_family

D_IN = 16


def _write_cache(directory: Path, rows: int = 8192, seed: int = 0) -> ActivationCache:
    """A cache of synthetic sparse activations (each row: 3 of 48 directions, plus an offset)."""
    g = np.random.default_rng(seed)
    directions = g.standard_normal((48, D_IN))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    codes = np.zeros((rows, 48))
    for r in range(rows):
        codes[r, g.choice(48, 3, replace=False)] = g.uniform(0.5, 2.5, 3)
    data = (codes @ directions + 2.0).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "shard-00000.npy", data[: rows // 2])
    np.save(directory / "shard-00001.npy", data[rows // 2 :])
    manifest = Manifest("synthetic", 1, D_IN, "synthetic", 2, rows, ["shard-00000.npy", "shard-00001.npy"])
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict()))
    return ActivationCache(directory)


def _family() -> list[SaeConfig]:
    return [SaeConfig("topk", D_IN, width, k=3) for width in (32, 64)]


def test_one_pass_trains_every_width(tmp_path: Path) -> None:
    cache = _write_cache(tmp_path / "cache")
    training = TrainingConfig(tokens=256 * 400, batch_tokens=256, lr=3e-3, lr_warmup_steps=20, eval_fraction=0.1)
    saes, metrics = train_family(cache, _family(), training, progress=False)
    assert [s.config.d_sae for s in saes] == [32, 64]
    for m in metrics:
        assert m.fvu < 0.3 and m.l0 <= 3.0
    assert metrics[1].fvu <= metrics[0].fvu * 1.1  # wider is at least about as good


def test_resume_from_a_checkpoint_gives_the_same_weights(tmp_path: Path) -> None:
    cache = _write_cache(tmp_path / "cache")
    training = TrainingConfig(tokens=256 * 60, batch_tokens=256, lr=3e-3, lr_warmup_steps=5, checkpoint_every_steps=30)
    straight, _ = train_family(cache, _family(), training, checkpoint_dir=tmp_path / "a", progress=False)
    train_family(cache, _family(), training, checkpoint_dir=tmp_path / "b", progress=False, stop_at_step=37)
    resumed, _ = train_family(cache, _family(), training, checkpoint_dir=tmp_path / "b", progress=False)
    for a, b in zip(straight, resumed, strict=True):
        torch.testing.assert_close(a.W_dec, b.W_dec)
        torch.testing.assert_close(a.W_enc, b.W_enc)


def test_a_checkpoint_of_other_saes_is_refused(tmp_path: Path) -> None:
    cache = _write_cache(tmp_path / "cache", rows=2048)
    training = TrainingConfig(tokens=512, batch_tokens=256)
    train_family(cache, _family(), training, checkpoint_dir=tmp_path / "ck", progress=False)
    with pytest.raises(ValueError, match="other SAEs"):
        train_family(cache, [SaeConfig("relu", D_IN, 32, l1_coefficient=1.0)], training, checkpoint_dir=tmp_path / "ck")
