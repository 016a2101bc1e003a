"""Train a cross-encoder data-parallel on Ray Train (`TorchTrainer`), locally or on a cluster, then
calibrate, export and register it like `facet rerank build`.

    python -m training.rerank.ray_job --out runs/rerank --steps 240 --workers 2 [--no-rarb] [build options]

The same command runs on a laptop (a local Ray is started) and through
`ray job submit --working-dir . -- python -m training.rerank.ray_job ...` (RAY_ADDRESS points
`ray.init()` at the cluster). The driver builds the training groups (mining the hard negatives
once) and ships them to the workers in the loop config; each worker draws its own groups per step
(`GroupSampler.batch(step, batch, rank)`) and DistributedDataParallel averages the gradients, so a
step sees `workers x batch_groups` groups. Rank 0 reports a checkpoint (model, optimiser, step)
every `--checkpoint-every` steps; a run started again with the same --out resumes from the latest.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.device import ray_use_gpu
from training.options import option, repository_root
from training.ray_train import fit_on_ray, report, restore_checkpoint, run_build_job, worker_device, worker_rank
from training.rerank.build import BuildOptions, build_cross_encoder, record_test_evaluation
from training.rerank.data import Group
from training.rerank.model import CrossEncoderConfig, load_tokenizer, new_cross_encoder
from training.rerank.train import GroupSampler, TrainingConfig, make_optimizer, mixture_weights, train_step

if TYPE_CHECKING:
    from services.model_repository import ModelVersion

RUN_NAME = "cross-encoder"
CHECKPOINT_FILE = "cross_encoder.pt"


def _load_state(directory: Path) -> dict[str, Any]:
    """A checkpoint's model and optimiser states, step and configs, on the CPU."""
    state: dict[str, Any] = torch.load(directory / CHECKPOINT_FILE, weights_only=False, map_location="cpu")
    return state


def _groups_to_plain(sources: dict[str, list[Group]]) -> dict[str, list[dict[str, Any]]]:
    return {name: [dataclasses.asdict(g) for g in groups] for name, groups in sources.items()}


def _groups_from_plain(sources: dict[str, list[dict[str, Any]]]) -> dict[str, list[Group]]:
    return {
        name: [Group(g["query"], tuple(g["candidates"]), int(g["label"]), g["source"]) for g in groups]
        for name, groups in sources.items()
    }


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DistributedDataParallel on the worker's device."""
    import ray.train.torch

    rank, _ = worker_rank()
    device = worker_device()
    training = TrainingConfig(**loop_config["training"])
    config = CrossEncoderConfig(**loop_config["model"])
    sources = _groups_from_plain(loop_config["sources"])
    sampler = GroupSampler(sources, mixture_weights(sources, training.general_share), seed=training.seed)
    tokenizer = load_tokenizer(config.max_length)
    model = new_cross_encoder(config, seed=training.seed)  # same initial weights on every worker
    state = restore_checkpoint(_load_state)
    if state is not None:
        model.load_state_dict(state["model"])
    step = int(state["step"]) if state is not None else 0
    start_step = step
    optimizer = make_optimizer(model, training)  # freezes the word embeddings before DDP sees the parameters
    model_ddp = ray.train.torch.prepare_model(model)  # to the worker's device; DDP: gradients averaged across workers
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    torch.manual_seed(training.seed * 1000 + rank * 100_003 + step)  # dropout: its own stream per worker, resumable
    every = int(loop_config["checkpoint_every"])

    def save(directory: Path) -> None:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "config": config.to_dict()},
                   directory / CHECKPOINT_FILE)  # fmt: skip

    model.train()
    while step < training.steps:
        groups = sampler.batch(step, training.batch_groups, rank)
        loss = train_step(
            model,
            optimizer,
            tokenizer,
            groups,
            step,
            training,
            training.train_max_length or config.max_length,
            model_forward=model_ddp,
            device=device,
        )
        step += 1
        if step % every == 0 or step == training.steps:
            report({"step": step, "loss": loss, "start_step": start_step}, save=save)


def train_cross_encoder_on_ray(
    sources: dict[str, list[Group]],
    config: CrossEncoderConfig,
    training: TrainingConfig,
    output_dir: Path,
    *,
    num_workers: int = 2,
    checkpoint_every: int = 50,
    use_gpu: bool | None = False,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Fit on Ray Train, resuming from the latest checkpoint under `output_dir`.

    Args:
        sources: source name -> training groups (`training.rerank.build.training_sources`).
        config: layers and max length.
        training: steps, per-worker batch of groups, optimiser, seed.
        output_dir: Ray Train's run storage, under `output_dir/cross-encoder`.
        num_workers: data-parallel workers; each draws its own groups (seed, rank, step).
        checkpoint_every: steps between checkpoints (and the last step).
        use_gpu: a GPU per worker; None: when the cluster has them (see `fit_on_ray`).
    Returns:
        the model of the final checkpoint (a `BertForSequenceClassification` on the CPU, in eval
        mode) and the last reported metrics ("step", "loss", "start_step").
    Raises:
        RuntimeError: the training failed on Ray.
    Uses the running Ray if there is one, else starts one for this call.
    """
    loop_config = {
        "sources": _groups_to_plain(sources),
        "model": config.to_dict(),
        "training": training.to_dict(),
        "checkpoint_every": checkpoint_every,
    }
    state, metrics = fit_on_ray(train_loop_per_worker, loop_config, output_dir, run_name=RUN_NAME, load=_load_state,
                                num_workers=num_workers, use_gpu=use_gpu, what="cross-encoder training")  # fmt: skip
    model = new_cross_encoder(CrossEncoderConfig(**state["config"]), seed=training.seed)
    model.load_state_dict(state["model"])
    return model.eval(), metrics


@dataclasses.dataclass(frozen=True)
class RayJobOptions:
    """`facet train rerank`: where the run lives and on how many workers (the model and data options are `facet rerank build`'s)."""

    out: Path = option(help="Ray run storage (checkpoints)")
    workers: int = option(2)
    checkpoint_every: int = option(50)
    device: str = option(
        "auto", help="the workers' device: auto (GPUs when the Ray cluster has one per worker), cpu or cuda"
    )

    def __post_init__(self) -> None:
        ray_use_gpu(self.device)


def build_on_ray(
    repository_root: Path, build: BuildOptions, job: RayJobOptions, work_dir: Path
) -> tuple[ModelVersion, dict[str, Any]]:
    """Train on Ray Train, then calibrate, export and register like `facet rerank build`.

    Returns:
        the registered version and the last metrics the workers reported.
    """
    from services.model_repository import ModelRepository

    reported: dict[str, Any] = {}

    def fit(
        sources: dict[str, list[Group]], config: CrossEncoderConfig, training: TrainingConfig, progress: bool
    ) -> tuple[Any, list[float]]:
        model, metrics = train_cross_encoder_on_ray(sources, config, training, job.out, num_workers=job.workers,
                                                    checkpoint_every=job.checkpoint_every, use_gpu=ray_use_gpu(job.device))  # fmt: skip
        reported.update(metrics)
        return model, []

    repository = ModelRepository(repository_root)
    entry = build_cross_encoder(repository, work_dir, build, fit=fit)
    return record_test_evaluation(repository, entry, build), reported


def main(argv: list[str] | None = None) -> int:
    """`facet train rerank` / `python -m training.rerank.ray_job`: train on Ray Train, register, print the metrics."""
    return run_build_job(
        argv, "python -m training.rerank.ray_job", __doc__, RayJobOptions, BuildOptions, repository_root, build_on_ray,
        lambda entry, metrics: {"ray": {k: v for k, v in metrics.items() if not isinstance(v, dict)}, "calibration": entry.properties.get("calibration")},
    )

if __name__ == "__main__":
    sys.exit(main())
