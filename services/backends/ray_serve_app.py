"""Ray Serve: each model of the repository as a Serve application with one deployment,
`OnnxModel`, which runs the ONNX file with ONNX Runtime and batches concurrent calls with
`@serve.batch`. Services call it through a deployment handle (`services.backends.ray_serve`).

The Ray cluster is local (`ray start --head`, which `facet up --backend ray` runs) or the one at
RAY_ADDRESS; the model repository must be readable at the same path from the Serve replicas
(one machine, or a shared volume on a cluster).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from services.backends.padding import run_together

# Services send arrays to replicas by value over gRPC, whole batches at a time: gRPC's default 4 MB
# would refuse a batch of long texts' activations. Ray reads this when ray.serve is first imported,
# on the calling side here and in the replicas through their runtime_env (see `deploy`).
REPLICA_MAX_MESSAGE_BYTES = 1 << 30
os.environ.setdefault("RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", str(REPLICA_MAX_MESSAGE_BYTES))

from ray import serve  # noqa: E402
from ray.serve.config import RequestRouterConfig  # noqa: E402

# Ray Serve 2.60 builds every RequestRouterConfig (each deployment's options, each status it
# parses) by registering the request router's module with cloudpickle for pickling by value,
# dumping the class and unregistering it: global state, so two threads doing it at once break
# each other ("Can't pickle <function RequestRouter.on_replica_actor_died>: it's not the same
# object", "... is not registered for pickle by value"). A service loads its models side by side
# (deploying one while polling another's status), so it did, now and then, and failed to start.
# One lock around that step makes it safe (tests/services/backends/test_ray_serve_app.py).
_ROUTER_SERIALIZATION = threading.Lock()
_serialize_request_router_cls = RequestRouterConfig._serialize_request_router_cls


def _serialize_request_router_cls_locked(self: RequestRouterConfig) -> None:
    with _ROUTER_SERIALIZATION:
        _serialize_request_router_cls(self)


RequestRouterConfig._serialize_request_router_cls = _serialize_request_router_cls_locked  # type: ignore[method-assign]

if TYPE_CHECKING:
    from services.model_repository import ModelVersion
    from services.runtime.config import RayConfig


ERROR_KEY = "__facet_error__"


@serve.deployment
class OnnxModel:
    """One ONNX model; `infer` takes and returns named arrays with the batch on axis 0."""

    def __init__(self, model_file: str, version: int, session_options: dict[str, Any], max_batch_size: int, batch_wait_timeout_s: float) -> None:
        from services.backends.onnx_session import create_session

        self.session = create_session(model_file, **session_options)
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


def deploy(entry: ModelVersion, config: RayConfig, session_options: dict[str, Any]) -> None:
    """Run (or update) the model's Serve application; it starts in the background (see `running`)."""
    options = OnnxModel.options(  # type: ignore[attr-defined]
        name=entry.name,
        num_replicas=config.num_replicas,
        max_ongoing_requests=config.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": config.replica_num_cpus,
            # the batch handler awaits ONNX Runtime in a thread already: run it on the replica's
            # own loop rather than hop to a second one per call
            "runtime_env": {"env_vars": {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
                                         # idle replicas export metrics every 100 ms by default
                                         "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
                                         "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(REPLICA_MAX_MESSAGE_BYTES)}},
        },
        logging_config={"enable_access_log": False},  # a log line per call costs more than the call
    )
    app = options.bind(str(entry.model_file.resolve()), entry.version, session_options, config.max_batch_size, config.batch_wait_timeout_s)
    # not serve.run, which waits for RUNNING: a service deploys all its models, then waits for them
    target = serve.RunTarget(app, name=app_name(entry.name), route_prefix=None)
    serve.run_many([target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)


def running(model: str) -> bool:
    return model in running_models()


def running_models() -> set[str]:
    """The models whose Serve application is RUNNING (one status call for all)."""
    prefix = app_name("")
    return {name[len(prefix) :] for name, app in serve.status().applications.items()
            if name.startswith(prefix) and str(app.status).endswith("RUNNING")}  # fmt: skip
