"""The Ray Serve backend against a real local head, through its public interface: calls whose
arrays are larger than gRPC's default 4 MB message reach the replica and come back whole (the
backend sends arrays by value over the replica's gRPC port)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from services.model_repository import ModelRepository
from tests.services.sae.fixtures import TEST_SAE_LARGE
from tests.serving import REPO_ROOT, delete_serve_apps

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
