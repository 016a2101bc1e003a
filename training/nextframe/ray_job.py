"""Train a next-frame model data-parallel on Ray Train (`TorchTrainer`), locally or on a cluster.

    python -m training.nextframe.ray_job --data data/pendulum --out runs/pendulum --steps 2000 --workers 2

The same command runs on a laptop (a local Ray is started) and through
`ray job submit --working-dir . -- python -m training.nextframe.ray_job ...` (RAY_ADDRESS points
`ray.init()` at the cluster). Each worker draws its own windows (seed + rank) and gradients are
averaged by DistributedDataParallel; rank 0 reports a checkpoint every `--checkpoint-every`
steps, and a run started again with the same --out resumes from the latest.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.nextframe.datasets import VideoDataset
from training.nextframe.model import FrameModelConfig, FrameUNet
from training.nextframe.train import FrameTrainingConfig, batch_of, loss_fn, windows

RUN_NAME = "frame-model"
CHECKPOINT_FILE = "frame_model.pt"


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank = context.get_world_rank()
    training = FrameTrainingConfig(**loop_config["training"])
    config = FrameModelConfig(**loop_config["model"])
    data = VideoDataset(loop_config["data_dir"], "train")
    picks = windows(data.frames)
    torch.manual_seed(training.seed)  # same initial weights on every worker
    model = FrameUNet(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    start_step = step
    net = model
    model_ddp = ray.train.torch.prepare_model(model)  # DDP: gradients averaged across workers
    rng = np.random.default_rng([training.seed, rank, step])
    every = int(loop_config["checkpoint_every"])
    while step < training.steps:
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / 50)
            group["lr"] = training.lr * warm * 0.5 * (1 + math.cos(math.pi * step / training.steps))
        x, y = batch_of(data.frames, picks[rng.integers(len(picks), size=training.batch)])
        loss = loss_fn(model_ddp(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        metrics = {"step": step, "loss": loss.item(), "start_step": start_step}
        if step % every == 0 or step == training.steps:
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                "config": config.to_dict()}, Path(tmp) / CHECKPOINT_FILE)  # fmt: skip
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)


def train_frame_model_on_ray(
    data_dir: Path, config: FrameModelConfig, training: FrameTrainingConfig, output_dir: Path, *, num_workers: int = 2, checkpoint_every: int = 100
) -> tuple[FrameUNet, dict[str, Any]]:
    """Fit on Ray Train, resuming from the latest checkpoint under `output_dir`; returns the model
    (from the final checkpoint) and the last reported metrics. Uses the running Ray if there is
    one, else starts one for this call."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={
                "data_dir": str(Path(data_dir).resolve()),
                "model": config.to_dict(),
                "training": dataclasses.asdict(training),
                "checkpoint_every": checkpoint_every,
            },
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False, resources_per_worker={"CPU": 1}),
            run_config=RunConfig(name=RUN_NAME, storage_path=str(output_dir.resolve()), checkpoint_config=CheckpointConfig(num_to_keep=2)),
        )
        result = trainer.fit()
    finally:
        if started_here:
            ray.shutdown()
    if result.error is not None:
        raise RuntimeError(f"frame-model training failed on Ray: {result.error}")
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = torch.load(Path(directory) / CHECKPOINT_FILE, weights_only=False)
    model = FrameUNet(FrameModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval(), dict(result.metrics or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.nextframe.ray_job", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset from `facet data simulate`")
    parser.add_argument("--out", type=Path, required=True, help="Ray run storage (checkpoints)")
    parser.add_argument("--steps", type=int, default=FrameTrainingConfig.steps)
    parser.add_argument("--batch", type=int, default=FrameTrainingConfig.batch, help="per worker")
    parser.add_argument("--lr", type=float, default=FrameTrainingConfig.lr)
    parser.add_argument("--base-channels", type=int, default=FrameModelConfig.base_channels)
    parser.add_argument("--depth", type=int, default=FrameModelConfig.depth)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    args = parser.parse_args(argv)
    config = FrameModelConfig(base_channels=args.base_channels, depth=args.depth)
    training = FrameTrainingConfig(steps=args.steps, batch=args.batch, lr=args.lr)
    _, metrics = train_frame_model_on_ray(args.data, config, training, args.out, num_workers=args.workers, checkpoint_every=args.checkpoint_every)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
