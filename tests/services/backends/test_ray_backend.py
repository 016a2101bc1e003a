"""The Ray Serve backend against a real local head, through its public interface: calls whose
arrays are larger than gRPC's default 4 MB message reach the replica and come back whole (the
backend sends arrays by value over the replica's gRPC port); readiness that follows the model's
Serve application, UNAVAILABLE while it is away, and recovery by itself (as with Triton)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.service_process import ServiceProcess
from sdk._proto.facet.v1 import retrieval_pb2
from services.model_repository import ModelRepository
from tests.services.retrieval.fixtures import EMBEDDING_MODEL
from tests.services.sae.fixtures import TEST_SAE_LARGE
from tests.serving import REPO_ROOT, ServerProcess, delete_serve_apps, free_port

pytestmark = pytest.mark.integration

# A driver of its own: this test process must not join the head (other tests start their own Ray).
INFER = """
import asyncio, sys
import numpy as np
from services.backends.ray_serve import RayServeBackend
from services.runtime.config import load_config

async def main(model, rows, out):
    backend = RayServeBackend(load_config())
    await backend.load(model)
    outputs = await backend.infer(model, {"x": np.load(rows)})
    np.savez(out, **outputs)
    await backend.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_a_call_over_4_mb_reaches_the_replica_and_comes_back(ray_cluster, sae_repository: ModelRepository, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    head = ray_cluster()
    entry = sae_repository.get(TEST_SAE_LARGE)
    session = ort.InferenceSession(str(entry.model_file), providers=["CPUExecutionProvider"])
    width = int(session.get_inputs()[0].shape[1])
    rows = np.random.default_rng(0).standard_normal((4096, width)).astype(np.float32)  # 9.4 MB in, 4.2 MB out
    np.save(tmp_path / "rows.npy", rows)
    env = {**os.environ, "FACET_MODEL_REPOSITORY": str(sae_repository.root), "FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": head.address,
           "FACET_BATCHING_ENABLED": "false"}  # fmt: skip  (one call as it is, not slices)
    try:
        result = subprocess.run([sys.executable, "-c", INFER, TEST_SAE_LARGE, str(tmp_path / "rows.npy"), str(tmp_path / "out.npz")],
                                env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        delete_serve_apps(head, [TEST_SAE_LARGE])
    assert result.returncode == 0, result.stderr[-3000:]
    served = np.load(tmp_path / "out.npz")
    (expected,) = session.run(None, {"x": rows})
    assert served["latents"].shape == (4096, expected.shape[1])
    np.testing.assert_allclose(served["latents"], expected, rtol=1e-4, atol=1e-4)


def _health(address: str) -> int | None:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=2)
        except grpc.RpcError:
            return None
        return int(reply.status)


def _until(condition: Callable[[], bool], timeout_s: float, what: str, server: ServiceProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s{server.log_tail(20)}")
        time.sleep(0.2)


def _embed_once(address: str) -> grpc.StatusCode:
    """One Embed attempt without retries: OK or the error's code."""
    with grpc.insecure_channel(address, options=[("grpc.enable_retries", 0)]) as channel:
        call = channel.unary_unary("/facet.v1.Retrieval/Embed", retrieval_pb2.EmbedRequest.SerializeToString, retrieval_pb2.EmbedResponse.FromString)
        try:
            call(retrieval_pb2.EmbedRequest(texts=["probe"]), timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_a_deleted_serve_application_gives_unavailable_and_the_service_recovers(ray_cluster, model_repository: ModelRepository, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A service that does not deploy (ray.deploy_models off) answers UNAVAILABLE and NOT_SERVING
    while its model's application is away and serves again when it is back; a service that
    deploys puts the application back by itself, and its calls meanwhile are OK or UNAVAILABLE."""
    head = ray_cluster()
    env = {"FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": head.address}
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    deployer = ServerProcess(model_repository.root, tmp_path / "deployer", env).start(timeout_s=300)
    user = ServerProcess(model_repository.root, tmp_path / "user", {**env, "FACET_RAY_DEPLOY_MODELS": "false"}).start(timeout_s=300)
    try:
        assert _embed_once(user.address) == grpc.StatusCode.OK
        deployer.terminate()
        delete_serve_apps(head, [EMBEDDING_MODEL])  # the model's application goes away under the service
        _until(lambda: _embed_once(user.address) == grpc.StatusCode.UNAVAILABLE, 120, "calls get UNAVAILABLE", user)
        _until(lambda: _health(user.address) == not_serving, 60, "health says NOT_SERVING", user)
        deployer = ServerProcess(model_repository.root, tmp_path / "deployer2", env).start(timeout_s=300)  # deploys it again
        _until(lambda: _health(user.address) == serving, 120, "SERVING again once the application runs", user)
        assert _embed_once(user.address) == grpc.StatusCode.OK
        assert "INTERNAL" not in user.log()

        delete_serve_apps(head, [EMBEDDING_MODEL])  # now under the service that deploys
        codes: set[grpc.StatusCode] = set()

        def call_then_health_is(status: int) -> bool:
            codes.add(_embed_once(deployer.address))
            return _health(deployer.address) == status

        _until(lambda: call_then_health_is(not_serving), 120, "NOT_SERVING", deployer)
        _until(lambda: call_then_health_is(serving), 300, "redeployed and SERVING", deployer)
        assert "deploying it again" in deployer.log()
        assert _embed_once(deployer.address) == grpc.StatusCode.OK
        assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    finally:
        user.terminate()
        deployer.terminate()
        delete_serve_apps(head, [EMBEDDING_MODEL])


def test_the_service_is_not_serving_until_its_models_run_on_ray(model_repository: ModelRepository, tmp_path: Path) -> None:
    """Started before its Ray cluster, the service answers health with NOT_SERVING, joins the
    cluster when it comes up, deploys its model and then serves."""
    from deploy.ray_cluster import LocalRay

    head = LocalRay(port=free_port(), dashboard_port=free_port(), temp_dir=Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    port = free_port()
    env = {"FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": head.address, "FACET_SERVER_PORT": str(port)}
    server = ServerProcess(model_repository.root, tmp_path / "data", env).start(wait=False)
    address = f"localhost:{port}"
    try:
        _until(lambda: _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING, 120, "health answers NOT_SERVING", server)
        assert server.alive()
        head.start()
        _until(lambda: _health(address) == health_pb2.HealthCheckResponse.SERVING, 300, "SERVING once the model runs", server)
        assert _embed_once(address) == grpc.StatusCode.OK
    finally:
        server.terminate()
        head.stop()
        shutil.rmtree(head.temp_dir or "", ignore_errors=True)
