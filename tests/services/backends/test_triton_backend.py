"""The Triton backend against a real tritonserver process: the same results as ONNX Runtime
in-process, readiness that follows Triton's, UNAVAILABLE while Triton is away, and recovery by
itself when it returns."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sdk
from services.model_repository import ModelRepository
from tests.serving import LocalTriton, ServerProcess, free_port

pytestmark = pytest.mark.integration
MODEL = "nextframe-pendulum"


@pytest.fixture
def pendulum_repository(nextframe_repository: ModelRepository, tmp_path: Path) -> ModelRepository:
    """The pendulum's three models only: each test starts its own Triton, which loads them all."""
    repository = ModelRepository(tmp_path / "models")
    for name in (MODEL, f"{MODEL}-features", f"{MODEL}-probe"):
        shutil.copytree(nextframe_repository.root / name, repository.root / name)
    return repository


@pytest.fixture
def own_triton(pendulum_repository: ModelRepository, tmp_path: Path) -> Iterator[LocalTriton]:
    """A Triton server this test may stop and restart."""
    triton = LocalTriton(pendulum_repository, tmp_path / "triton")
    triton.server.start()
    yield triton
    triton.server.stop()


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.NextFrame"), timeout=2)
        return int(reply.status)


def _wait_health(address: str, status: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _health(address) == status:
            return True
        time.sleep(0.2)
    return False


def test_triton_serves_the_models_as_onnxruntime_does(own_triton: LocalTriton, pendulum_repository: ModelRepository, tmp_path: Path) -> None:
    server = ServerProcess(pendulum_repository.root, tmp_path / "data", own_triton.env, service="nextframe").start(timeout_s=240)
    try:
        with sdk.Client(nextframe=server.address) as client:
            clip = client.simulate("pendulum", constant=5.0, frames=12, seed=2)
            nxt = client.predict_next(MODEL, clip[:7])
            session = ort.InferenceSession(str(pendulum_repository.get(MODEL).model_file), providers=["CPUExecutionProvider"])
            expected = session.run(None, {"context": (clip[2:7].astype(np.float32) / 255)[None]})[0][0, 0]
            assert np.abs(nxt.astype(int) - (np.clip(expected, 0, 1) * 255).round().astype(int)).max() <= 1
            estimate = client.estimate_constant(MODEL, clip)  # features model + probe (a per-row scalar output)
            assert estimate.constant == "gravity" and np.isfinite(estimate.value)
            assert len(list(client.rollout(MODEL, clip[:5], horizon=6))) == 6
    finally:
        server.terminate()


def test_triton_going_away_gives_unavailable_and_the_service_recovers(
    own_triton: LocalTriton, pendulum_repository: ModelRepository, tmp_path: Path
) -> None:
    server = ServerProcess(pendulum_repository.root, tmp_path / "data", own_triton.env, service="nextframe").start(timeout_s=240)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    try:
        with sdk.Client(nextframe=server.address, timeout_s=20) as client:
            clip = client.simulate("pendulum", constant=5.0, frames=8, seed=2)
            client.predict_next(MODEL, clip)
            own_triton.server.stop()
            with pytest.raises(sdk.Unavailable, match="Triton at 127.0.0.1:"):
                client.predict_next(MODEL, clip)
            assert _wait_health(server.address, not_serving, 10), server.log()
            own_triton.server.start()  # a fresh server: no model loaded until the service asks again
            assert _wait_health(server.address, serving, 120), server.log()
            assert client.predict_next(MODEL, clip).shape == (64, 64)
    finally:
        server.terminate()


def test_the_service_is_not_serving_until_its_models_are_ready_on_triton(pendulum_repository: ModelRepository, tmp_path: Path) -> None:
    """Started before Triton, the service answers health with NOT_SERVING and serves once its
    models are READY."""
    triton = LocalTriton(pendulum_repository, tmp_path / "triton")
    port = free_port()
    env = {**triton.env, "FACET_SERVER_PORT": str(port)}
    server = ServerProcess(pendulum_repository.root, tmp_path / "data", env, service="nextframe").start(wait=False)
    address = f"localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the port answers health once bound; the models are not there yet
            try:
                assert _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline and server.process is not None and server.process.poll() is None, server.log()
                time.sleep(0.2)
        triton.server.start()
        assert _wait_health(address, health_pb2.HealthCheckResponse.SERVING, 240), server.log()
    finally:
        server.terminate()
        triton.server.stop()
