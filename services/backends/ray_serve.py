"""Ray Serve deployments through deployment handles.

The service joins the Ray cluster at `ray.address` as a driver; each model it loads is a Serve
application (`deploy.ray_serve.OnnxModel`, batching with `@serve.batch`) that it deploys when
missing or older than the repository's newest version (`ray.deploy_models`), then calls through
a handle. Model metadata comes from the model repository, as with the other backends. Readiness is
the application's Serve status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from deploy.model_repository import ModelRepository, ModelVersion
from deploy.ray_cluster import opt_in_token_auth
from deploy.ray_serve import ERROR_KEY
from services.backends.base import Backend, ModelMetadata, newest_version
from services.runtime.config import FacetConfig
from services.runtime.errors import InternalError, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)


class RayServeBackend(Backend):
    def __init__(self, config: FacetConfig) -> None:
        self._config = config.ray
        self._threads = config.onnxruntime.intra_op_num_threads
        self._repository = ModelRepository(config.model_repository)
        self._handles: dict[str, Any] = {}
        self._inputs: dict[str, list[str]] = {}
        self._metadata: dict[str, ModelMetadata] = {}

    def _connect(self) -> None:
        opt_in_token_auth()
        import ray

        if not ray.is_initialized():
            address = self._config.address
            # a head on this machine listens on loopback (`facet up --backend ray` starts it so)
            local = address == "auto" or address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost")
            try:
                ray.init(address=address, namespace="facet", log_to_driver=False, logging_level=logging.WARNING,
                         _node_ip_address="127.0.0.1" if local else None)  # fmt: skip
            except (ConnectionError, RuntimeError) as exc:
                raise Unavailable(f"no Ray cluster at {self._config.address!r} (start one with `ray start --head`): {exc}") from None

    def _deploy_and_wait(self, entry: ModelVersion) -> None:
        from ray import serve

        from deploy.ray_serve import app_name, deploy, running

        self._connect()
        deployed = serve.status().applications.get(app_name(entry.name))
        if self._config.deploy_models and (deployed is None or not running(entry.name) or self._deployed_version(entry.name) != entry.version):
            log.info("deploying %s v%d on Ray Serve", entry.name, entry.version)
            deploy(entry, self._config, self._threads)
        deadline = time.monotonic() + self._config.load_timeout_s
        while not running(entry.name):
            if time.monotonic() > deadline:
                raise Unavailable(f"Ray Serve application {app_name(entry.name)!r} is not RUNNING after {self._config.load_timeout_s:.0f} s")
            time.sleep(0.5)

    def _deployed_version(self, model: str) -> int | None:
        from ray import serve

        from deploy.ray_serve import app_name

        try:
            return int(serve.get_app_handle(app_name(model)).describe.remote().result(timeout_s=30)["version"])
        except Exception:  # noqa: BLE001 - no such application, or not answering: redeploy
            return None

    async def load(self, model: str) -> ModelMetadata:
        if model in self._metadata:
            return self._metadata[model]
        entry = newest_version(self._repository, model)
        await asyncio.get_running_loop().run_in_executor(None, self._deploy_and_wait, entry)
        from ray import serve

        from deploy.ray_serve import app_name

        handle = serve.get_app_handle(app_name(model))
        description = await handle.describe.remote()
        self._handles[model], self._inputs[model] = handle, list(description["inputs"])
        self._metadata[model] = ModelMetadata.of(entry)
        log.info("model %s v%d ready on Ray Serve", model, entry.version)
        return self._metadata[model]

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        handle = self._handles.get(model)
        if handle is None:
            raise NotFound(f"model '{model}' is not loaded")
        if set(inputs) != set(self._inputs[model]):
            raise InvalidArgument(f"model '{model}' takes inputs {sorted(self._inputs[model])}, got {sorted(inputs)}")
        from ray.exceptions import RayActorError, RayError, RayTaskError

        try:
            result: dict[str, np.ndarray] = await handle.infer.remote({k: np.ascontiguousarray(v) for k, v in inputs.items()})
            if ERROR_KEY in result:  # the model could not run these inputs
                raise InvalidArgument(f"model '{model}' cannot run these inputs: {result[ERROR_KEY]}")
        except RayTaskError as exc:  # the model refused or failed on these inputs
            cause = exc.as_instanceof_cause()
            if isinstance(cause, ValueError):
                raise InvalidArgument(f"model '{model}': {cause}") from None
            raise InternalError(f"model '{model}' on Ray Serve failed: {cause}") from None
        except RayActorError as exc:
            raise Unavailable(f"Ray Serve replica of '{model}' is gone: {exc}") from None
        except RayError as exc:
            raise Unavailable(f"Ray Serve at {self._config.address!r} is not reachable for '{model}': {exc}") from None
        return result

    async def ready(self, model: str) -> bool:
        if model not in self._handles:
            return False
        from deploy.ray_serve import running

        try:
            return await asyncio.get_running_loop().run_in_executor(None, running, model)
        except Exception:  # noqa: BLE001 - the cluster is unreachable: not ready
            return False

    async def serving(self) -> bool:
        return all([await self.ready(model) for model in self._handles])
