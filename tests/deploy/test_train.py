"""`facet train` against a real local Ray head: the job is submitted with the checkout as its
working directory, its logs stream back, and the new model version lands in the repository,
where a service serves it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import sdk
from deploy.train import entrypoint, pinned_requirements, runtime_env, upload_excludes
from services.model_repository import ModelRepository
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration
TINY = ["--datasets", "pendulum", "--videos", "20", "--frames", "10", "--steps", "20", "--batch", "8", "--base-channels", "8",
        "--depth", "2", "--probe-steps", "50", "--random-inits", "1", "--end-to-end-steps", "10"]  # fmt: skip


def test_the_job_runs_the_build_with_the_repository_and_pinned_requirements() -> None:
    command = entrypoint("nextframe", "/srv/models dir", ["--steps", "5"])
    assert command == "python -m training.nextframe.build --repository '/srv/models dir' --steps 5"
    env = runtime_env("/srv/models", pip=True)
    assert env["env_vars"]["FACET_MODEL_REPOSITORY"] == "/srv/models" and ".venv" in env["excludes"]
    assert "torch==2.13.0" in env["pip"]["packages"] and "onnxruntime==1.31.1" in pinned_requirements()


def test_the_upload_leaves_out_every_virtualenv_in_the_checkout_whatever_its_name(tmp_path: Path) -> None:
    for name in ("venv", ".venv-infinity"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "services").mkdir()  # code: uploaded
    excludes = upload_excludes(tmp_path)
    assert "/venv" in excludes and "/.venv-infinity" in excludes and ".git" in excludes
    assert not any("services" in e for e in excludes)


def test_train_submits_a_job_and_the_new_version_is_served(ray_cluster, nextframe_repository: ModelRepository, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    head = ray_cluster()
    repository = ModelRepository(tmp_path / "models")
    for name in ("nextframe-pendulum", "nextframe-pendulum-features", "nextframe-pendulum-probe"):
        shutil.copytree(nextframe_repository.root / name, repository.root / name)  # version 1 is there already
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "train", "nextframe", "--address", head.dashboard, "--repository", str(repository.root), "--", *TINY],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "facet train: submitted facet-train-nextframe-" in result.stdout and "SUCCEEDED" in result.stdout
    assert "nextframe-pendulum v2 (frame-model)" in result.stdout  # the job's own output, streamed
    assert repository.versions("nextframe-pendulum") == [1, 2]
    server = ServerProcess(repository.root, tmp_path / "data", service="nextframe").start()
    try:
        with sdk.Client(nextframe=server.address) as client:
            assert [m.id for m in client.list_frame_models()] == ["nextframe-pendulum"]
            clip = client.simulate("pendulum", constant=5.0, frames=5, seed=3)
            served = client.predict_next("nextframe-pendulum", clip)
        v2 = ort.InferenceSession(str(repository.get("nextframe-pendulum", 2).model_file), providers=["CPUExecutionProvider"])
        expected = np.clip(v2.run(None, {"context": (clip.astype(np.float32) / 255)[None]})[0][0, 0], 0, 1) * 255
        assert np.abs(served.astype(int) - expected.round().astype(int)).max() <= 1
    finally:
        server.terminate()


def test_train_without_a_cluster_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "train", "nextframe", "--address", "http://127.0.0.1:9", "--repository", str(tmp_path), "--", "--steps", "1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("facet train: no Ray cluster at http://127.0.0.1:9")
