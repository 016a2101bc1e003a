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
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch

from training.device import ray_use_gpu
from training.options import add_options, option, parse_options
from training.ray_train import fit_on_ray, report, restore_checkpoint, worker_device, worker_rank
from training.sae.activations import ActivationCache
from training.sae.config import ARCHITECTURES, SaeConfig
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
    rank, world = worker_rank()
    device = worker_device()
    training = TrainingConfig(**loop_config["training"])
    configs = [SaeConfig.from_dict(c) for c in loop_config["configs"]]
    cache = ActivationCache(loop_config["cache_dir"])
    data = cache.all()
    train_rows, _ = split_cache(cache, training.eval_fraction)
    train, held_out = data[:train_rows], data[train_rows:]
    scale = input_scale(train)  # as train_family: train at mean norm √d_in, fold the scale back at the end
    train = train.to(device) * scale

    restored = restore_checkpoint(lambda directory: load_checkpoint(directory, training, device))
    # a fresh family has the same seed, so the same start, on every worker
    state = restored if restored is not None else new_family(configs, training, mean=train.mean(0), device=device)
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
                held = held_out if len(held_out) else train[: training.batch_tokens].cpu() / scale
                for sae in state.saes:
                    unscaled = copy.deepcopy(sae).cpu()
                    unscaled.fold_input_scale(scale)
                    m = evaluate(unscaled, held.split(training.batch_tokens)).to_dict()
                    metrics.update({f"d{sae.config.d_sae}_{k}": v for k, v in m.items()})
            report(metrics, save=lambda directory: save_checkpoint(state, directory))


def train_family_on_ray(
    cache_dir: Path,
    configs: list[SaeConfig],
    training: TrainingConfig,
    output_dir: Path,
    *,
    num_workers: int = 2,
    use_gpu: bool | None = False,
) -> tuple[FamilyState, dict[str, Any]]:
    """Fit on Ray Train; resume from the latest checkpoint under `output_dir` if there is one.

    Args:
        cache_dir: an activation cache (`facet sae cache`), readable by every worker.
        configs: the family, one SAE per width.
        training: steps, batch and learning rate; `batch_tokens` is the global batch.
        output_dir: Ray Train's run storage (checkpoints), under `output_dir/sae-family`.
        num_workers: data-parallel workers.
        use_gpu: a GPU per worker; None: when the cluster has them (see `fit_on_ray`).
    Returns:
        the trained family (on the CPU, taking unscaled activations) and the final reported metrics.
    Raises:
        RuntimeError: the training failed on Ray.
    Uses the running Ray if there is one, else starts one for this call.
    """
    state, metrics = fit_on_ray(
        train_loop_per_worker,
        {"cache_dir": str(Path(cache_dir).resolve()), "configs": [c.to_dict() for c in configs], "training": dataclasses.asdict(training)},
        output_dir,
        run_name=RUN_NAME,
        load=lambda directory: load_checkpoint(directory, training),
        num_workers=num_workers,
        use_gpu=use_gpu,
        what="SAE training",
    )
    if state is None:
        raise RuntimeError(f"SAE training on Ray left no {RUN_NAME} checkpoint under {output_dir}")
    cache = ActivationCache(cache_dir)
    train_rows, _ = split_cache(cache, training.eval_fraction)
    scale = input_scale(cache.all()[:train_rows])
    for sae in state.saes:
        sae.fold_input_scale(scale)
    return state, metrics


@dataclasses.dataclass(frozen=True)
class RayJobOptions:
    """`facet sae train`: what to train, from which cache, on how many workers."""

    cache: Path = option(help="activation cache directory")
    out: Path = option(help="Ray run storage (checkpoints, results)")
    widths: tuple[int, ...] = option(help="comma-separated d_sae values, e.g. 2304,4608")
    tokens: int = option(help="activations each SAE sees")
    arch: str = option("batchtopk", choices=ARCHITECTURES)
    k: int = option(32, help="topk, batchtopk: active latents per token")
    l1: float = option(0.0, help="relu: L1 coefficient")
    batch_tokens: int = option(1024)
    lr: float = option(1e-3)
    workers: int = option(2)
    device: str = option("auto", help="the workers' device: auto (GPUs when the Ray cluster has one per worker), cpu or cuda")

    def __post_init__(self) -> None:
        ray_use_gpu(self.device)


def main(argv: list[str] | None = None) -> int:
    """`facet sae train`: train a family from a cache on Ray Train and print the final metrics."""
    parser = argparse.ArgumentParser(prog="facet sae train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, RayJobOptions)
    options, _ = parse_options(parser, RayJobOptions, argv)
    cache = ActivationCache(options.cache)
    configs = [
        SaeConfig(options.arch, cache.manifest.d_model, w, k=options.k if "topk" in options.arch else 0, l1_coefficient=options.l1,
                  l0_coefficient=options.l1)
        for w in options.widths
    ]  # fmt: skip
    training = TrainingConfig(tokens=options.tokens, batch_tokens=options.batch_tokens, lr=options.lr)
    _, metrics = train_family_on_ray(options.cache, configs, training, options.out, num_workers=options.workers,
                                     use_gpu=ray_use_gpu(options.device))  # fmt: skip
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
