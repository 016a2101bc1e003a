"""The ray backend when its cluster stops answering (its head was killed): every model is away
at once, so calls get UNAVAILABLE (which the SDK retries) instead of waiting for their deadline;
a status call that never returns is awaited once, not stacked up on worker threads; and past
`ray.cluster_lost_timeout_s` the backend raises EngineLost, which stops the service so that its
supervisor starts it again (a Ray driver cannot join a new head). The Serve status call is
replaced by one that hangs: what is tested is the backend's logic above it (the real head's
loss, end to end, is `python load/faults_ray_head.py`: over a minute here)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from services.backends import ray_serve, ray_serve_app
from services.backends.ray_serve import RayServeBackend
from services.runtime.config import FacetConfig, RayConfig
from services.runtime.errors import EngineLost, Unavailable


async def test_an_unreachable_cluster_makes_calls_unavailable_then_stops_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    answered = threading.Event()
    calls = []

    def hangs() -> set[str]:
        calls.append(1)
        answered.wait(30)  # a dead head's status call
        return set()

    monkeypatch.setattr(ray_serve_app, "running_models", hangs)
    monkeypatch.setattr(ray_serve, "STATUS_INTERVAL_S", 0.0)
    monkeypatch.setattr(ray_serve, "STATUS_TIMEOUT_S", 0.2)
    backend = RayServeBackend(FacetConfig(ray=RayConfig(cluster_lost_timeout_s=1.0)))
    backend._handles["m"], backend._inputs["m"] = object(), ["x"]
    try:
        assert await backend.serving() is False
        with pytest.raises(Unavailable, match="not RUNNING"):
            await backend.infer("m", {"x": np.zeros((1, 2), np.float32)})
        with pytest.raises(EngineLost, match="ray.cluster_lost_timeout_s"):
            for _ in range(100):
                assert await backend.serving() is False
                await asyncio.sleep(0.05)
        assert len(calls) == 1, "a status call that never returned was started again"
    finally:
        answered.set()
