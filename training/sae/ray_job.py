"""Train an SAE family data-parallel on Ray Train (`TorchTrainer`), locally or on a cluster.

    python -m training.sae.ray_job --cache DIR --out DIR --arch batchtopk --k 32 \\
        --widths 2304,4608,9216,18432 --tokens 2000000 --workers 2

The same command runs on a laptop (a local Ray is started) and through
`ray job submit --working-dir . -- python -m training.sae.ray_job ...` (RAY_ADDRESS points
`ray.init()` at the cluster). Every worker holds the whole family, trains on its own slice of
each batch and averages gradients with the others (all-reduce), so each step equals one
single-process step on the full batch. Rank 0 reports a checkpoint every
`checkpoint_every_steps`; a run started again with the same --out resumes from the latest.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from training.sae.activations import ActivationCache
from training.sae.config import SaeConfig
from training.sae.train import (
    FamilyState,
    TrainingConfig,
    evaluate,
    input_scale,
    load_checkpoint,
    new_family,
    save_checkpoint,
    split_cache,
    train_step,
    training_batches,
)

RUN_NAME = "sae-family"


def _average_gradients(world_size: int) -> Any:
    import torch.distributed as dist

    def sync(sae: torch.nn.Module) -> None:
        for param in sae.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= world_size

    return sync


def _sync_buffers(state: FamilyState, world_size: int) -> None:
    """Latents fired on any worker count as fired; BatchTopK thresholds are averaged."""
    import torch.distributed as dist

    for sae in state.saes:
        dist.all_reduce(sae.tokens_since_fired, op=dist.ReduceOp.MIN)
        dist.all_reduce(sae.threshold)
        sae.threshold /= world_size


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker."""
    import ray.train

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    training = TrainingConfig(**loop_config["training"])
    configs = [SaeConfig.from_dict(c) for c in loop_config["configs"]]
    cache = ActivationCache(loop_config["cache_dir"])
    data = cache.all()
    train_rows, _ = split_cache(cache, training.eval_fraction)
    train, held_out = data[:train_rows], data[train_rows:]
    scale = input_scale(train)  # as train_family: train at mean norm √d_in, fold the scale back at the end
    train = train * scale

    state: FamilyState | None = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory), training)
    if state is None:
        state = new_family(configs, training, mean=train.mean(0))  # same seed: same start everywhere
    batches = training_batches(train, training, start_step=state.step)
    sync = _average_gradients(world) if world > 1 else None
    while state.step < training.steps:
        batch = next(batches)
        part = batch.tensor_split(world)[rank]  # this worker's slice of the global batch
        losses = train_step(state, part, training, sync=sync)
        if world > 1:
            _sync_buffers(state, world)
        metrics = {"step": state.step, "loss_min": min(losses), "loss_max": max(losses)}
        last = state.step == training.steps
        if state.step % training.checkpoint_every_steps == 0 or last:
            if last:
                held = held_out if len(held_out) else train[: training.batch_tokens] / scale
                for sae in state.saes:
                    unscaled = copy.deepcopy(sae)
                    unscaled.fold_input_scale(scale)
                    m = evaluate(unscaled, held.split(training.batch_tokens)).to_dict()
                    metrics.update({f"d{sae.config.d_sae}_{k}": v for k, v in m.items()})
            if rank == 0:
                with tempfile.TemporaryDirectory() as tmp:
                    save_checkpoint(state, Path(tmp))
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            else:
                ray.train.report(metrics)


def train_family_on_ray(
    cache_dir: Path,
    configs: list[SaeConfig],
    training: TrainingConfig,
    output_dir: Path,
    *,
    num_workers: int = 2,
) -> tuple[FamilyState, dict[str, Any]]:
    """Fit on Ray Train; resume from the latest checkpoint under `output_dir` if there is one.
    Returns the trained family and the final reported metrics. Uses the running Ray if there is
    one, else starts one for this call."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:  # a local Ray (or the cluster RAY_ADDRESS names), shut down again below
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        return _fit(cache_dir, configs, training, output_dir, num_workers)
    finally:
        if started_here:
            ray.shutdown()


def _fit(cache_dir: Path, configs: list[SaeConfig], training: TrainingConfig, output_dir: Path, num_workers: int) -> tuple[FamilyState, dict[str, Any]]:
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    output_dir = output_dir.resolve()
    # Ray Train resumes a run from the latest checkpoint under storage_path/name by itself.
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cache_dir": str(Path(cache_dir).resolve()),
            "configs": [c.to_dict() for c in configs],
            "training": training.__dict__,
        },
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=RUN_NAME, storage_path=str(output_dir), checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"SAE training failed on Ray: {result.error}")
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = load_checkpoint(Path(directory), training)
    assert state is not None
    cache = ActivationCache(cache_dir)
    train_rows, _ = split_cache(cache, training.eval_fraction)
    scale = input_scale(cache.all()[:train_rows])
    for sae in state.saes:
        sae.fold_input_scale(scale)
    return state, dict(result.metrics or {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sae.ray_job", description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="activation cache directory")
    parser.add_argument("--out", type=Path, required=True, help="Ray run storage (checkpoints, results)")
    parser.add_argument("--arch", default="batchtopk", choices=["relu", "topk", "batchtopk", "jumprelu"])
    parser.add_argument("--widths", required=True, help="comma-separated d_sae values, e.g. 2304,4608")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--l1", type=float, default=0.0, help="relu: L1 coefficient")
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--batch-tokens", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    cache = ActivationCache(args.cache)
    configs = [
        SaeConfig(args.arch, cache.manifest.d_model, int(w), k=args.k if "topk" in args.arch else 0, l1_coefficient=args.l1,
                  l0_coefficient=args.l1)
        for w in args.widths.split(",")
    ]  # fmt: skip
    training = TrainingConfig(tokens=args.tokens, batch_tokens=args.batch_tokens, lr=args.lr)
    state, metrics = train_family_on_ray(args.cache, configs, training, args.out, num_workers=args.workers)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
