"""Phenotype training on Ray Train: on a local Ray, one worker trains both parts of a tiny model set
(the generator's two stages, then the readers) on procedural faces and reports checkpoints; a run
stopped after a checkpoint resumes there when started again with the same storage, ends with the
weights of an uninterrupted run, and the build registers the five models from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from services.model_repository import ModelRepository
from services.phenotype.catalog import COMPANION_KINDS, Kind, companion_name
from training.phenotype.build import GENERATOR_DIR, BuildOptions, build_model_set
from training.phenotype.ray_job import RUN_NAME, main, train_on_ray
from training.phenotype.train import train

pytestmark = pytest.mark.integration

OPTIONS = BuildOptions(name="ray-faces", preset="tiny", stage1_steps=60, stage2_steps=20, reader_steps=40, progress=False)


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module's runs (`fit_on_ray` uses a running Ray rather than starting its own)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_an_interrupted_run_resumes_and_the_build_registers_the_set(tmp_path: Path, local_ray: None) -> None:
    training, readers = OPTIONS.configs()
    # the worker stops after the generator's checkpoint of step 50, as a preempted worker would
    with pytest.raises(RuntimeError, match="(?s)phenotype training failed on Ray: .*stopped after the generator checkpoint of step 50"):
        train_on_ray(OPTIONS, tmp_path / "first", tmp_path / "runs", device="cpu", stop_after=("generator", 50))
    assert sorted((tmp_path / "runs" / RUN_NAME).glob("**/checkpoint_*")), "Ray Train kept no checkpoint"
    # started again with the same storage, it resumes there, not at step 0
    metrics = train_on_ray(OPTIONS, tmp_path / "second", tmp_path / "runs", device="cpu")
    assert metrics["done"] and (metrics["start_part"], metrics["start_step"]) == ("generator", 50)
    # the same weights as an uninterrupted run (one thread, as the 1-CPU worker has: sums in the same order)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        uninterrupted = train(training, tmp_path / "local", progress=False, device="cpu")
        resumed = train(training, tmp_path / "second" / GENERATOR_DIR, progress=False, device="cpu")  # finished: trains nothing
    finally:
        torch.set_num_threads(threads)
    expected = uninterrupted.generator.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in resumed.generator.state_dict().items())
    # the build finds both trainings finished and registers the five models
    repository = ModelRepository(tmp_path / "models")
    entry = build_model_set(repository, tmp_path / "second", OPTIONS.name, training, readers, progress=False, device="cpu")
    assert entry.kind == Kind.GENERATOR and entry.properties["training"]["generator"]["config"]["stage1_steps"] == 60
    assert all(repository.get(companion_name(OPTIONS.name, role)).kind == kind for role, kind in COMPANION_KINDS.items())


def test_the_command_shows_the_build_options_and_refuses_a_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(f in shown for f in ("--out", "--repository", "--work-dir", "--stage1-steps", "--reader-steps", "--preset"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "x", "--preset", "huge"])
    assert exit_info.value.code == 2 and "--preset" in capsys.readouterr().err
