"""`facet up`: supervised service processes, restart on crash, clean stop."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sdk
from deploy.launcher import wait_serving
from services.model_repository import ModelRepository

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if needle in line:
                return seen
        if proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not printed within {timeout_s}s; output so far:\n{seen}")


def _up_env(model_repository: ModelRepository, data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "FACET_MODEL_REPOSITORY": str(model_repository.root),
        "FACET_DATA_DIR": str(data_dir),
        "FACET_RETRIEVAL_PORT": str(port),
        "FACET_SERVER_METRICS_PORT": "0",
    }


def test_up_serves_restarts_a_crashed_service_and_stops_cleanly(model_repository: ModelRepository, tmp_path: Path) -> None:
    port = _free_port()
    env = _up_env(model_repository, tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _read_until(proc, f"SERVING on localhost:{port}", 120)
        with sdk.Client(f"localhost:{port}") as client:
            assert client.embed(["hello"]).shape == (1, 384)
        [child] = _children(proc.pid)
        os.kill(child, signal.SIGKILL)
        _read_until(proc, "restarting", 10)
        time.sleep(0.5)
        assert wait_serving(f"localhost:{port}", "facet.v1.Retrieval", 60)
        [new_child] = _children(proc.pid)
        assert new_child != child
        with sdk.Client(f"localhost:{port}") as client:
            assert client.embed(["back again"]).shape == (1, 384)
        assert (tmp_path / "logs" / "retrieval.log").stat().st_size > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert _children(proc.pid) == []
        with pytest.raises(ProcessLookupError):
            os.kill(new_child, 0)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_rejects_unknown_services() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval,teleport"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "teleport" in result.stderr


def test_up_reports_a_service_that_cannot_start(model_repository: ModelRepository, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _up_env(model_repository, tmp_path, port)
        result = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert "did not become SERVING" in result.stderr and f"cannot bind 127.0.0.1:{port}" in result.stderr


def test_bad_configuration_is_one_clear_line() -> None:
    env = {**os.environ, "FACET_BATCHING_MAX_BATCH_SIZE": "zero"}
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "models", "list"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "facet: bad configuration: FACET_BATCHING_MAX_BATCH_SIZE: cannot read 'zero' as int"


def test_up_with_the_demo_exercises_the_sae_service(sae_repository: ModelRepository, tmp_path: Path) -> None:
    """`make run`'s path for the SAE service: `facet up --demo --exit-after-demo` serves the SAEs
    the repository holds (no default build when it has some) and runs the SDK demo against them."""
    port = _free_port()
    env = {**_up_env(sae_repository, tmp_path, _free_port()), "FACET_SAE_PORT": str(port)}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "sae", "--demo", "--exit-after-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"SERVING on localhost:{port}" in out and "building" not in out
    assert "SAEs:" in out and "smollm2-135m-l6-batchtopk-w256" in out
    assert "decomposes into" in out and "novel / " in out


def test_up_with_the_demo_exercises_the_nextframe_service(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`make run`'s path for next-frame: with every dataset's model in the repository nothing is
    built; the demo lists the models, streams a rollout from each and estimates its constant."""
    out = _up_nextframe_demo(nextframe_repository, tmp_path, "onnxruntime", {}).stdout
    assert "building" not in out and "gravity ≈" in out and "moon mass ≈" in out
    assert len(list((tmp_path / "facet-demo").glob("*.gif"))) == 6


@pytest.mark.parametrize("command", [["sae", "build"], ["nextframe", "build"], ["nextframe", "train"], ["train"], ["triton", "serve"], ["data", "simulate"]])
def test_forwarding_commands_take_their_own_options(command: list[str]) -> None:
    """`facet sae build --tokens ...`: options after a forwarding command reach its module."""
    result = subprocess.run([sys.executable, "-m", "deploy.cli", *command, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and "--" in result.stdout


def _up_nextframe_demo(repository: ModelRepository, tmp_path: Path, backend: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`facet up --services nextframe --backend <backend> --demo --exit-after-demo`, asserted to succeed."""
    port = _free_port()
    env = {**_up_env(repository, tmp_path, _free_port()), "FACET_NEXTFRAME_PORT": str(port), "TMPDIR": str(tmp_path), **env}
    command = [sys.executable, "-m", "deploy.cli", "up", "--services", "nextframe", "--backend", backend, "--demo", "--exit-after-demo"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"SERVING on localhost:{port}" in result.stdout
    assert result.stdout.count("rollout MSE") == 6  # the same SDK demo: a rollout from every model
    return result


def test_up_on_the_triton_backend_runs_the_demo(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --backend triton`: a real local tritonserver serves the repository, the service
    calls it, and the same SDK demo runs; Triton stops with the services."""
    triton_port = _free_port()
    result = _up_nextframe_demo(nextframe_repository, tmp_path, "triton", {"FACET_TRITON_URL": f"127.0.0.1:{triton_port}"})
    assert f"starting tritonserver for {len(nextframe_repository.models())} models on 127.0.0.1:{triton_port}" in result.stdout
    log = (tmp_path / "triton" / "tritonserver.log").read_text()
    assert "successfully loaded 'nextframe-pendulum'" in log
    with pytest.raises(OSError):  # stopped with the services
        socket.create_connection(("127.0.0.1", triton_port), timeout=1).close()


def test_up_on_the_ray_backend_runs_the_demo(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --backend ray`: a real local Ray head, every frame model deployed as a Ray Serve
    application by the service, the same SDK demo; the head stops with the services."""
    ray_port = _free_port()
    env = {"FACET_RAY_ADDRESS": f"127.0.0.1:{ray_port}", "RAY_DASHBOARD_PORT": str(_free_port())}
    result = _up_nextframe_demo(nextframe_repository, tmp_path, "ray", env)
    assert f"starting a local Ray head on 127.0.0.1:{ray_port}" in result.stdout
    with pytest.raises(OSError):  # stopped with the services
        socket.create_connection(("127.0.0.1", ray_port), timeout=1).close()
