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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.device import ray_use_gpu
from training.nextframe.datasets import VideoDataset
from training.nextframe.model import FrameModelConfig, FrameUNet
from training.nextframe.train import FrameTrainingConfig, batch_of, loss_fn, windows
from training.options import add_options, option, parse_options
from training.ray_train import fit_on_ray, report, restore_checkpoint, worker_device, worker_rank

RUN_NAME = "frame-model"
CHECKPOINT_FILE = "frame_model.pt"


def _load_state(directory: Path) -> dict[str, Any]:
    """A checkpoint's model and optimiser states, step and model config, on the CPU."""
    state: dict[str, Any] = torch.load(directory / CHECKPOINT_FILE, weights_only=False, map_location="cpu")
    return state


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DistributedDataParallel on the worker's device."""
    import ray.train.torch

    rank, _ = worker_rank()
    device = worker_device()
    training = FrameTrainingConfig(**loop_config["training"])
    config = FrameModelConfig(**loop_config["model"])
    data = VideoDataset(loop_config["data_dir"], "train")
    picks = windows(data.frames)
    torch.manual_seed(training.seed)  # same initial weights on every worker
    model = FrameUNet(config)
    state = restore_checkpoint(_load_state)
    if state is not None:
        model.load_state_dict(state["model"])
    step = int(state["step"]) if state is not None else 0
    start_step = step
    net = model
    model_ddp = ray.train.torch.prepare_model(model)  # to the worker's device; DDP: gradients averaged across workers
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])  # onto the parameters' device
    rng = np.random.default_rng([training.seed, rank, step])
    every = int(loop_config["checkpoint_every"])

    def save(directory: Path) -> None:
        torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "config": config.to_dict()},
                   directory / CHECKPOINT_FILE)  # fmt: skip

    while step < training.steps:
        for group in optimizer.param_groups:
            warm = min(1.0, (step + 1) / 50)
            group["lr"] = training.lr * warm * 0.5 * (1 + math.cos(math.pi * step / training.steps))
        x, y = batch_of(data.frames, picks[rng.integers(len(picks), size=training.batch)])
        loss = loss_fn(model_ddp(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % every == 0 or step == training.steps:
            report({"step": step, "loss": loss.item(), "start_step": start_step}, save=save)


def train_frame_model_on_ray(
    data_dir: Path,
    config: FrameModelConfig,
    training: FrameTrainingConfig,
    output_dir: Path,
    *,
    num_workers: int = 2,
    checkpoint_every: int = 100,
    use_gpu: bool | None = False,
) -> tuple[FrameUNet, dict[str, Any]]:
    """Fit on Ray Train, resuming from the latest checkpoint under `output_dir`.

    Args:
        data_dir: a dataset from `facet data simulate` (its train split), readable by every worker.
        config: the model.
        training: steps, per-worker batch, learning rate, seed.
        output_dir: Ray Train's run storage, under `output_dir/frame-model`.
        num_workers: data-parallel workers; each draws its own windows (seed + rank).
        checkpoint_every: steps between checkpoints (and the last step).
        use_gpu: a GPU per worker; None: when the cluster has them (see `fit_on_ray`).
    Returns:
        the model of the final checkpoint (on the CPU, in eval mode) and the last reported metrics.
    Raises:
        RuntimeError: the training failed on Ray.
    Uses the running Ray if there is one, else starts one for this call.
    """
    loop_config = {
        "data_dir": str(Path(data_dir).resolve()),
        "model": config.to_dict(),
        "training": dataclasses.asdict(training),
        "checkpoint_every": checkpoint_every,
    }
    state, metrics = fit_on_ray(train_loop_per_worker, loop_config, output_dir, run_name=RUN_NAME, load=_load_state,
                                num_workers=num_workers, use_gpu=use_gpu, what="frame-model training")  # fmt: skip
    model = FrameUNet(FrameModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.eval(), metrics


@dataclasses.dataclass(frozen=True)
class RayJobOptions:
    """`facet nextframe train`: which dataset, where the run lives, how long, on how many workers."""

    data: Path = option(help="a dataset from `facet data simulate`")
    out: Path = option(help="Ray run storage (checkpoints)")
    steps: int = option(FrameTrainingConfig.steps)
    batch: int = option(FrameTrainingConfig.batch, help="per worker")
    lr: float = option(FrameTrainingConfig.lr)
    base_channels: int = option(FrameModelConfig.base_channels)
    depth: int = option(FrameModelConfig.depth)
    workers: int = option(2)
    checkpoint_every: int = option(100)
    device: str = option("auto", help="the workers' device: auto (GPUs when the Ray cluster has one per worker), cpu or cuda")

    def __post_init__(self) -> None:
        ray_use_gpu(self.device)


def main(argv: list[str] | None = None) -> int:
    """`facet nextframe train`: train a frame model on Ray Train and print the final metrics."""
    parser = argparse.ArgumentParser(prog="facet nextframe train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, RayJobOptions)
    options, _ = parse_options(parser, RayJobOptions, argv)
    config = FrameModelConfig(base_channels=options.base_channels, depth=options.depth)
    training = FrameTrainingConfig(steps=options.steps, batch=options.batch, lr=options.lr)
    _, metrics = train_frame_model_on_ray(options.data, config, training, options.out, num_workers=options.workers,
                                          checkpoint_every=options.checkpoint_every, use_gpu=ray_use_gpu(options.device))  # fmt: skip
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
