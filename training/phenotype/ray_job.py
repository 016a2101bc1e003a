"""Train a phenotype model set on Ray Train (`TorchTrainer`), locally or on a cluster, then export
and register it as `facet phenotype build` does.

    python -m training.phenotype.ray_job --out runs/phenotype [--stage1-steps N] [build options]
    facet train phenotype --address http://HEAD:8265 -- --out /shared/runs/phenotype

The same command runs on a laptop (a local Ray is started) and through
`ray job submit --working-dir . -- python -m training.phenotype.ray_job ...` (RAY_ADDRESS points
`ray.init()` at the cluster). One Ray Train worker runs both trainings of `facet phenotype build`
in one work directory: the generator's two stages (`training.phenotype.train.train`), then the
readers (`training.phenotype.readers.train_readers`). Each time either writes its resumable
checkpoint, the worker reports a snapshot of the whole work directory to Ray Train as a
checkpoint; a run started again with the same --out resumes from the latest one, and a finished
run is not trained again. The job ends on this machine: the final snapshot becomes the build's
work directory, where `build_model_set` finds both trainings finished (they resume at their last
step, so nothing is trained twice), exports the five graphs with their parity checks, and
registers them (--repository). --out must be a path the worker can write.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.device import AUTO, ray_use_gpu
from training.options import option, repository_root
from training.phenotype.build import GENERATOR_DIR, READERS_DIR, BuildOptions, build_model_set
from training.ray_train import run_build_job

if TYPE_CHECKING:
    from services.model_repository import ModelVersion

RUN_NAME = "phenotype"
SNAPSHOT_DIR = "work"  # a Ray checkpoint: the work directory (generator/ and readers/) ...
PROGRESS_FILE = "progress.json"  # ... and the metrics reported with it


def _snapshot(work_dir: Path, metrics: dict[str, Any]) -> Any:
    """A `report` save function: copies `work_dir` into Ray's checkpoint directory."""

    def save(directory: Path) -> None:
        shutil.copytree(work_dir, directory / SNAPSHOT_DIR)
        (directory / PROGRESS_FILE).write_text(json.dumps(metrics, default=str))

    return save


def _restore(directory: Path, work_dir: Path) -> dict[str, Any]:
    """Puts a checkpoint's work directory into `work_dir`; returns the metrics reported with it."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    shutil.copytree(directory / SNAPSHOT_DIR, work_dir)
    return dict(json.loads((directory / PROGRESS_FILE).read_text()))


class Interrupted(RuntimeError):
    """The worker stopped on purpose after a checkpoint (`stop_after`: a preemption drill)."""


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on the Ray Train worker: both trainings in a work directory restored from the run's
    latest checkpoint, reporting a checkpoint each time either writes one, then a final one."""
    from training.phenotype.readers import ReadersConfig, train_readers
    from training.phenotype.train import TrainingConfig, train
    from training.ray_train import report, restore_checkpoint

    training = TrainingConfig.from_dict(loop_config["training"])
    readers = ReadersConfig.from_dict(loop_config["readers"])
    stop_after = loop_config.get("stop_after")  # (part, step): stop after that part's checkpoint at or past step
    device = loop_config["device"]
    with tempfile.TemporaryDirectory(prefix="facet-phenotype-") as tmp:
        work_dir = Path(tmp) / SNAPSHOT_DIR
        restored = restore_checkpoint(lambda directory: _restore(directory, work_dir)) or {}
        start = {"start_part": restored.get("part", ""), "start_step": int(restored.get("step", 0))}

        def on_checkpoint(part: str) -> Any:
            def reported(_: Path, metrics: dict[str, Any]) -> None:
                entry = {**{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}, "part": part, **start}
                report(entry, save=_snapshot(work_dir, entry))
                if stop_after is not None and part == stop_after[0] and int(metrics["step"]) >= int(stop_after[1]):
                    raise Interrupted(f"stopped after the {part} checkpoint of step {metrics['step']} (stop_after={stop_after})")

            return reported

        generated = train(training, work_dir / GENERATOR_DIR, progress=False, resume=True, device=device, on_checkpoint=on_checkpoint("generator"))
        read = train_readers(readers, work_dir / READERS_DIR, progress=False, resume=True, device=device, on_checkpoint=on_checkpoint("readers"))
        final = {"part": "done", "step": readers.steps, "generator_time_s": generated.time_s, "readers_time_s": read.time_s, "done": True, **start}
        report(final, save=_snapshot(work_dir, final))


def train_on_ray(
    build: BuildOptions, work_dir: Path, output_dir: Path, *, device: str = AUTO, stop_after: tuple[str, int] | None = None
) -> dict[str, Any]:
    """Fit both trainings on Ray Train (one worker), resuming from the latest checkpoint under
    `output_dir`, and put the finished work directory at `work_dir`.

    Args:
        build: the build's options (the two trainings' configs: `BuildOptions.configs`).
        work_dir: where the final work directory (`generator/`, `readers/`) is copied on this machine.
        output_dir: Ray Train's run storage; the run is `output_dir/phenotype`.
        device: the worker's device (`training.device`: auto, cpu, cuda).
        stop_after: ("generator" or "readers", step): stop the worker after that part's first
            checkpoint at or past the step, as a preempted worker would (a drill: the next call
            with the same `output_dir` resumes there).
    Returns:
        the last metrics the worker reported ("part", "step", "start_part" / "start_step": where
        this attempt resumed from, "" / 0 for a fresh run).
    Raises:
        RuntimeError: the training failed on Ray (the worker's error in the message).
    """
    from training.ray_train import fit_on_ray

    training, readers = build.configs()
    loop_config = {"training": training.to_dict(), "readers": readers.to_dict(), "device": device,
                   "stop_after": list(stop_after) if stop_after else None}  # fmt: skip
    _, metrics = fit_on_ray(train_loop_per_worker, loop_config, output_dir, run_name=RUN_NAME,
                            load=lambda directory: _restore(directory, Path(work_dir)),
                            num_workers=1, use_gpu=ray_use_gpu(device), what="phenotype training")  # fmt: skip
    return metrics


@dataclasses.dataclass(frozen=True)
class RayJobOptions:
    """`facet train phenotype`: where the Ray run lives (the model options are `facet phenotype build`'s)."""

    out: Path = option(help="Ray Train run storage (checkpoints; the same --out resumes)")


def build_on_ray(repository_root: Path, build: BuildOptions, job: RayJobOptions, work_dir: Path) -> tuple[ModelVersion, dict[str, Any]]:
    """Train on Ray Train, then export and register as `facet phenotype build` does.

    Returns:
        the generator's registered version, and the last metrics the worker reported.
    Raises:
        RuntimeError: the training failed on Ray, or the export failed its parity check.
    """
    from services.model_repository import ModelRepository

    run_dir = Path(work_dir) / build.name
    metrics = train_on_ray(build, run_dir, job.out, device=build.device)
    training, readers = build.configs()
    entry = build_model_set(ModelRepository(repository_root), run_dir, build.name, training, readers, progress=build.progress, device="cpu")
    return entry, metrics


def main(argv: list[str] | None = None) -> int:
    """`facet train phenotype` / `python -m training.phenotype.ray_job`: train on Ray Train, register, print the metrics."""
    return run_build_job(
        argv, "python -m training.phenotype.ray_job", __doc__, RayJobOptions, BuildOptions, repository_root, build_on_ray,
        lambda entry, metrics: {"ray": metrics, "training": entry.properties["training"], "metrics": entry.properties["metrics"]},
    )


if __name__ == "__main__":
    sys.exit(main())
