"""Data-parallel training on Ray Train (`TorchTrainer`), the part every capability's ray job shares.

The driver side, `fit_on_ray`: uses the running Ray, or starts a local one for the call (or joins
the cluster RAY_ADDRESS names, as under `ray job submit`); runs `train_loop_per_worker` on
`num_workers` workers (one CPU each, and one GPU each with `use_gpu`); keeps the run under
`output_dir/run_name`, where Ray Train finds the latest checkpoint and resumes from it when the same
run is started again; and loads the final checkpoint with the caller's `load`.

The worker side, inside `train_loop_per_worker`: `worker_rank`, `worker_device`,
`restore_checkpoint` (the run's latest checkpoint, when resuming) and `report` (metrics, and a
checkpoint that rank 0 writes).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
CHECKPOINTS_KEPT = 2


def fit_on_ray(
    train_loop_per_worker: Callable[[dict[str, Any]], None],
    loop_config: dict[str, Any],
    output_dir: Path,
    *,
    run_name: str,
    load: Callable[[Path], T],
    num_workers: int = 2,
    use_gpu: bool | None = False,
    what: str = "training",
) -> tuple[T, dict[str, Any]]:
    """Run `train_loop_per_worker(loop_config)` on Ray Train and load its final checkpoint.

    Args:
        train_loop_per_worker: the function each worker runs (picklable: a module-level function).
        loop_config: its argument (plain data: it travels to the workers).
        output_dir: Ray Train's storage; the run lives in `output_dir/run_name` and resumes from
            the latest checkpoint there.
        run_name: the run's name under `output_dir`.
        load: reads the final checkpoint's directory into what this returns.
        num_workers: data-parallel workers, one CPU each.
        use_gpu: one GPU per worker as well (`worker_device` is then that GPU); None: when the
            Ray cluster has a GPU for every worker.
        what: names the training in the error message.
    Returns:
        `load`'s result on the final checkpoint, and the last metrics reported.
    Raises:
        RuntimeError: the training failed on a worker (the worker's error in the message), or
            `use_gpu` asks for more GPUs than the cluster has.
    """
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started_here = not ray.is_initialized()
    if started_here:  # a local Ray (or the cluster RAY_ADDRESS names), shut down again below
        ray.init(include_dashboard=False, log_to_driver=False)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if use_gpu is None:
            use_gpu = gpus >= num_workers > 0
        elif use_gpu and gpus < num_workers:
            raise RuntimeError(f"{what}: {num_workers} GPU workers asked for, but the Ray cluster has {gpus} GPUs; use device cpu or auto")
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=loop_config,
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name=run_name, storage_path=str(Path(output_dir).resolve()), checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT)),
        )
        from ray.train import TrainingFailedError

        try:
            result = trainer.fit()
        except TrainingFailedError as exc:  # Ray Train v2 raises a worker's failure rather than returning it
            raise RuntimeError(f"{what} failed on Ray: {exc}") from exc
        if result.error is not None:
            raise RuntimeError(f"{what} failed on Ray: {result.error}")
        if result.checkpoint is None:
            raise RuntimeError(f"{what} on Ray reported no checkpoint")
        with result.checkpoint.as_directory() as directory:
            loaded = load(Path(directory))
    finally:
        if started_here:
            ray.shutdown()
    return loaded, dict(result.metrics or {})


def worker_rank() -> tuple[int, int]:
    """(this worker's rank, the number of workers), inside `train_loop_per_worker`."""
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


def worker_device() -> torch.device:
    """The device this worker trains on: its GPU under `use_gpu`, else the CPU."""
    import ray.train.torch

    device: torch.device = ray.train.torch.get_device()
    return device


def restore_checkpoint(load: Callable[[Path], T]) -> T | None:
    """`load` on the run's latest checkpoint directory, or None when the run starts afresh."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load(Path(directory))


def report(metrics: dict[str, Any], save: Callable[[Path], object] | None = None) -> None:
    """Report this step's metrics; with `save`, rank 0 also writes a checkpoint with it (into a
    temporary directory that Ray Train copies into the run's storage). Every worker calls it at
    the same steps."""
    import ray.train

    if save is not None and worker_rank()[0] == 0:
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(metrics)


def run_build_job(
    argv: list[str] | None,
    prog: str,
    description: str | None,
    job_options: type,
    build_options: type,
    repository_root: Callable[[Any], Path],
    build_on_ray: Callable[[Path, Any, Any, Path], tuple[Any, dict[str, Any]]],
    describe: Callable[[Any, dict[str, Any]], dict[str, Any]],
) -> int:
    """The `main` of a capability's `ray_job` that trains on Ray Train and registers a model:
    parse its job options and its build options (`training.options` dataclasses), run
    `build_on_ray(repository_root(build), build, job, work_dir)` (the build's `--work-dir`, else a
    temporary one), print the registered version and `describe(entry, metrics)` as JSON.

    Returns:
        0 when registered; 1 after printing the reason when the data is missing, the training
        failed on Ray (RuntimeError) or a value was refused (ValueError).
    """
    import argparse
    import json
    import logging
    import sys
    import tempfile

    from training.options import add_options, parse_options

    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, job_options)
    add_options(parser, build_options)
    job: Any
    build: Any
    job, _ = parse_options(parser, job_options, argv)
    build, _ = parse_options(parser, build_options, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = repository_root(build)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            entry, metrics = build_on_ray(root, build, job, build.work_dir or Path(tmp))
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.name} v{entry.version} at {entry.path}")
    print(json.dumps(describe(entry, metrics), indent=2, default=str))
    return 0
