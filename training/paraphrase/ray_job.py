"""Train a paraphraser on Ray Train (`TorchTrainer`), locally or on a cluster, then evaluate, export
and register it as `facet paraphrase build` does.

    python -m training.paraphrase.ray_job --out runs/paraphrase [--setting krl] [--steps N] [build options]
    facet train paraphrase --address http://HEAD:8265 -- --out /shared/runs/paraphrase --steps 3000

The same command runs on a laptop (a local Ray is started) and through
`ray job submit --working-dir . -- python -m training.paraphrase.ray_job ...` (RAY_ADDRESS points
`ray.init()` at the cluster). One Ray Train worker (one CPU) runs
`training.paraphrase.train.train` with the `TrainingConfig` the flags describe (every
TrainingConfig field has a flag). Each time `train` writes its resumable checkpoint (every
--eval-every steps), the worker reports a snapshot of its training directory to Ray Train as a
checkpoint; a run started again with the same --out resumes from the latest one, and a finished
run is not trained again. The job ends by decoding the test split greedily for the metrics and
exporting the model into the model repository (--repository), parity-checked, as
`facet paraphrase build` does. --out and --data must be paths the worker can read.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.options import option, repository_root
from training.paraphrase.build import BuildOptions, build_paraphraser, summary
from training.ray_train import run_build_job

if TYPE_CHECKING:
    from services.model_repository import ModelVersion
    from training.paraphrase.train import TrainingConfig, TrainResult

RUN_NAME = "paraphrase"
SNAPSHOT_DIR = "train"  # a Ray checkpoint: the training directory of `train` ...
PROGRESS_FILE = "progress.json"  # ... and the metrics reported with it
RESULT_FILE = "result.json"  # the final checkpoint: history, best validation loss, time, counts


def _snapshot(work_dir: Path, metrics: dict[str, Any], result: TrainResult | None = None) -> Any:
    """A `report` save function: copies `work_dir` (and the result's figures) into Ray's checkpoint directory."""

    def save(directory: Path) -> None:
        shutil.copytree(work_dir, directory / SNAPSHOT_DIR)
        (directory / PROGRESS_FILE).write_text(json.dumps(metrics, default=str))
        if result is not None:
            figures = {"history": result.history, "best_valid_loss": result.best_valid_loss, "time_s": result.time_s,
                       "counts": result.counts, "checkpoint": result.checkpoint.relative_to(work_dir).as_posix()}  # fmt: skip
            (directory / RESULT_FILE).write_text(json.dumps(figures, default=str))

    return save


def _restore(directory: Path, work_dir: Path) -> int:
    """Puts a checkpoint's training directory into `work_dir`; returns the step it had reached."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    shutil.copytree(directory / SNAPSHOT_DIR, work_dir)
    return int(json.loads((directory / PROGRESS_FILE).read_text()).get("step", 0))


class Interrupted(RuntimeError):
    """The worker stopped on purpose after a checkpoint (`stop_after_step`: a preemption drill)."""


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs on the Ray Train worker: `train` in a local training directory restored from the run's
    latest checkpoint, reporting a checkpoint each time `train` writes one, then the finished model."""
    from training.paraphrase.train import TrainingConfig, train
    from training.ray_train import report, restore_checkpoint

    config = TrainingConfig.from_dict(loop_config["training"])
    stop_after = loop_config.get("stop_after_step")
    with tempfile.TemporaryDirectory(prefix="facet-paraphrase-") as tmp:
        work_dir = Path(tmp) / SNAPSHOT_DIR
        start_step = restore_checkpoint(lambda directory: _restore(directory, work_dir)) or 0

        def on_checkpoint(directory: Path, metrics: dict[str, Any]) -> None:
            reported = {**metrics, "start_step": start_step}
            report(reported, save=_snapshot(directory, reported))
            if stop_after is not None and int(metrics["step"]) >= int(stop_after):
                raise Interrupted(f"stopped after the checkpoint of step {metrics['step']} (stop_after_step={stop_after})")

        result = train(config, work_dir, Path(loop_config["data_dir"]), progress=False, resume=True, on_checkpoint=on_checkpoint)
        final = {"step": config.steps, "best_valid_loss": result.best_valid_loss, "time_s": result.time_s, "start_step": start_step, "done": True}
        report(final, save=_snapshot(work_dir, final, result))


def _load_result(directory: Path, work_dir: Path) -> TrainResult:
    """The finished run of a final checkpoint, its training directory copied to `work_dir`."""
    from training.paraphrase.train import TrainResult, load_checkpoint

    _restore(directory, work_dir)
    figures = json.loads((directory / RESULT_FILE).read_text())
    checkpoint = work_dir / figures["checkpoint"]
    model, tokenizer, config = load_checkpoint(checkpoint)
    return TrainResult(model, tokenizer, config, figures["history"], float(figures["best_valid_loss"]), float(figures["time_s"]),
                       checkpoint, figures["counts"])  # fmt: skip


def train_paraphraser_on_ray(
    config: TrainingConfig, work_dir: Path, data_dir: Path, output_dir: Path, *, stop_after_step: int | None = None
) -> tuple[TrainResult, dict[str, Any]]:
    """Fit on Ray Train (one CPU worker), resuming from the latest checkpoint under `output_dir`.

    Args:
        config: the training run (`TrainingConfig`).
        work_dir: where the final training directory is copied on this machine (the returned
            `TrainResult.checkpoint` lies in it).
        data_dir: the shared benchmark data, as the worker sees it.
        output_dir: Ray Train's run storage; the run is `output_dir/paraphrase`.
        stop_after_step: stop the worker after the first checkpoint at or past this step, as a
            preempted worker would (a drill: the next call with the same `output_dir` resumes there).
    Returns:
        the `TrainResult` of the final checkpoint (model in eval mode, on the CPU) and the last
        metrics the worker reported ("step", "best_valid_loss", "time_s", "start_step": the step
        this attempt resumed from, 0 for a fresh run).
    Raises:
        RuntimeError: the training failed on Ray (the worker's error in the message).
    Uses the running Ray if there is one, else starts one for this call (or joins RAY_ADDRESS's).
    """
    from training.ray_train import fit_on_ray

    loop_config = {"training": config.to_dict(), "data_dir": str(Path(data_dir).resolve()), "stop_after_step": stop_after_step}
    return fit_on_ray(train_loop_per_worker, loop_config, output_dir, run_name=RUN_NAME,
                      load=lambda directory: _load_result(directory, Path(work_dir)),
                      num_workers=1, use_gpu=False, what="paraphraser training")  # fmt: skip


CPU_ONLY = "cpu"


@dataclasses.dataclass(frozen=True)
class RayJobOptions:
    """`facet train paraphrase`: where the Ray run lives (the model and data options are `facet paraphrase build`'s)."""

    out: Path = option(help="Ray Train run storage (checkpoints; the same --out resumes)")
    device: str = option(CPU_ONLY, choices=(CPU_ONLY,), help="the worker's device: training.paraphrase.train trains on the CPU")


def build_on_ray(repository_root: Path, build: BuildOptions, job: RayJobOptions, work_dir: Path) -> tuple[ModelVersion, dict[str, Any]]:
    """Train on Ray Train, then evaluate, export and register as `facet paraphrase build` does.

    Returns:
        the paraphraser's registered version, and the last metrics the worker reported.
    Raises:
        FileNotFoundError: the benchmark data is missing.
        RuntimeError: the training failed on Ray, or the export failed its parity check.
    """
    from services.model_repository import ModelRepository

    reported: dict[str, Any] = {}

    def fit(config: TrainingConfig, train_dir: Path, data_dir: Path, progress: bool) -> TrainResult:
        result, metrics = train_paraphraser_on_ray(config, train_dir, data_dir, job.out)
        reported.update(metrics)
        return result

    entry = build_paraphraser(ModelRepository(repository_root), work_dir, build, fit=fit)
    return entry, reported


def main(argv: list[str] | None = None) -> int:
    """`facet train paraphrase` / `python -m training.paraphrase.ray_job`: train on Ray Train, register, print the metrics."""
    return run_build_job(
        argv, "python -m training.paraphrase.ray_job", __doc__, RayJobOptions, BuildOptions, repository_root, build_on_ray,
        lambda entry, metrics: {"ray": metrics, **summary(entry)},
    )

if __name__ == "__main__":
    sys.exit(main())
