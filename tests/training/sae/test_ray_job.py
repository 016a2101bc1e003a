"""The SAE family trains data-parallel on a real local Ray (Ray Train TorchTrainer, 2 workers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.sae.config import SaeConfig
from training.sae.train import TrainingConfig, train_family

pytestmark = pytest.mark.integration


def test_two_workers_take_the_same_steps_as_one_process(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("sae_train_tests", Path(__file__).parent / "test_train.py")
    assert spec and spec.loader
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    cache = helpers._write_cache(tmp_path / "cache", rows=4096)

    import ray

    from training.sae.ray_job import train_family_on_ray

    configs = [SaeConfig("topk", 16, width, k=3, dead_after_tokens=10**9) for width in (32, 64)]
    training = TrainingConfig(tokens=256 * 40, batch_tokens=256, lr=3e-3, lr_warmup_steps=5, checkpoint_every_steps=20)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        state, metrics = train_family_on_ray(tmp_path / "cache", configs, training, tmp_path / "ray", num_workers=2)
    finally:
        ray.shutdown()
    assert state.step == 40 and metrics["step"] == 40
    assert 0 < metrics["d64_fvu"] < 1
    single, _ = train_family(cache, configs, training, progress=False)
    for ours, reference in zip(state.saes, single, strict=True):
        torch.testing.assert_close(ours.W_dec, reference.W_dec, rtol=1e-3, atol=1e-4)
