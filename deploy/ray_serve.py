"""Ray Serve: each model of the repository as a Serve application with one deployment,
`OnnxModel`, which runs the ONNX file with ONNX Runtime and batches concurrent calls with
`@serve.batch`. Services call it through a deployment handle (`services.backends.ray_serve`).

The Ray cluster is local (`ray start --head`, which `facet up --backend ray` runs) or the one at
RAY_ADDRESS; the model repository must be readable at the same path from the Serve replicas
(one machine, or a shared volume on a cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve

from services.backends.padding import run_together

if TYPE_CHECKING:
    from deploy.model_repository import ModelVersion
    from services.runtime.config import RayConfig


ERROR_KEY = "__facet_error__"


@serve.deployment
class OnnxModel:
    """One ONNX model; `infer` takes and returns named arrays with the batch on axis 0."""

    def __init__(self, model_file: str, version: int, intra_op_num_threads: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.version = version
        self.infer.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.infer.set_batch_wait_timeout_s(batch_wait_timeout_s)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, Any]:
        return {"inputs": self.inputs, "outputs": self.outputs, "version": self.version}

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
    async def infer(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
        """Calls that arrive together run as one batch, padded as Facet's batcher does. A call
        the model cannot run gets {ERROR_KEY: message} (the others still run)."""
        valid = [set(feeds) == set(self.inputs) for feeds in requests]
        ran = iter(await asyncio.to_thread(run_together, self._run, self.outputs, [r for r, ok in zip(requests, valid, strict=True) if ok]))
        results: list[dict[str, Any]] = []
        for feeds, ok in zip(requests, valid, strict=True):
            outcome = next(ran) if ok else ValueError(f"inputs {sorted(self.inputs)} expected, got {sorted(feeds)}")
            results.append({ERROR_KEY: f"{type(outcome).__name__}: {outcome}"} if isinstance(outcome, Exception) else outcome)
        return results

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(self.outputs, feeds))


def app_name(model: str) -> str:
    return f"facet-{model}"


def deploy(entry: ModelVersion, config: RayConfig, intra_op_num_threads: int) -> None:
    """Run (or update) the model's Serve application and wait until it is RUNNING."""
    options = OnnxModel.options(  # type: ignore[attr-defined]
        name=entry.name,
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={"num_cpus": config.replica_num_cpus},
    )
    app = options.bind(str(entry.model_file.resolve()), entry.version, intra_op_num_threads, config.max_batch_size, config.batch_wait_timeout_s)
    serve.run(app, name=app_name(entry.name), route_prefix=None, blocking=False)


def running(model: str) -> bool:
    status = serve.status().applications.get(app_name(model))
    return status is not None and str(status.status).endswith("RUNNING")


@dataclasses.dataclass
class LocalRay:
    """`ray start --head` on this machine (what `facet up --backend ray` and the tests start);
    `stop()` runs `ray stop` for it. RAY_ADDRESS for clients is `address`."""

    port: int
    num_cpus: int = 2
    temp_dir: Path | None = None
    dashboard_port: int = 8265

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self) -> str:
        found = Path(sys.executable).with_name("ray")
        return str(found) if found.exists() else (shutil.which("ray") or "ray")

    def start(self, timeout_s: float = 120.0) -> LocalRay:
        command = [self._ray(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--num-cpus={self.num_cpus}", "--disable-usage-stats",
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]  # fmt: skip
        if self.temp_dir is not None:
            command.append(f"--temp-dir={self.temp_dir}")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return self  # `ray start` returns once the head's GCS answers

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop this head: with its own temp dir, only the processes of that session (SIGTERM,
        then SIGKILL); without, `ray stop` (every Ray process of this machine)."""
        if self.temp_dir is None:
            env = {**os.environ, "RAY_ADDRESS": self.address}
            subprocess.run([self._ray(), "stop", "--force"], capture_output=True, timeout=120, env=env, check=False)
            return
        marker = (str(self.temp_dir.resolve()).rstrip("/") + "/").encode()  # its processes name files under it
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cmdline") if _reads(p, marker)]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout_s / 2
            while pids and time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
                time.sleep(0.2)


def _reads(cmdline: Path, marker: bytes) -> bool:
    try:
        return marker in cmdline.read_bytes()
    except OSError:
        return False
