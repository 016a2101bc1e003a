"""Ray Serve deployments through deployment handles.

The service joins the Ray cluster at `ray.address` as a driver; each model it loads is a Serve
application (`services.backends.ray_serve_app.OnnxModel`, batching with `@serve.batch`) that it deploys when
missing or older than the repository's newest version (`ray.deploy_models`), then calls through
a handle (by value, over the replica's gRPC port). Model metadata comes from the model repository,
as with the other backends. Readiness is the application's Serve status.

Concurrent calls for a model are merged before they leave the process, by the same dynamic
batcher (and `batching` knobs) as the in-process backend, one batch in flight per replica: each
handle call costs Ray a few milliseconds of CPU, which a batch pays once. The handle's router runs
on the service's own event loop (no hop to Ray's router thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np

from services.backends.base import Backend, ModelMetadata, newest_version
from services.backends.batching import DynamicBatcher
from services.backends.ray_auth import opt_in_token_auth
from services.backends.ray_serve_app import ERROR_KEY
from services.model_repository import ModelRepository, ModelVersion
from services.runtime.config import FacetConfig
from services.runtime.errors import EngineLost, InternalError, InvalidArgument, NotFound, ResourceExhausted, Unavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

# Serve health-checks replicas every 10 s: its status changes no faster than that
STATUS_INTERVAL_S = 5.0
# A status call not answered by then means the cluster is unreachable (a dead head's status
# call may never return: it is awaited once, never stacked up on worker threads)
STATUS_TIMEOUT_S = 10.0
# How often a call waiting on a replica checks whether its application went away: requests
# pending on a deleted application's handle never fail by themselves (they wait for replicas).
AWAY_CHECK_S = 1.0
# between attempts to join a cluster that is not up yet
CONNECT_RETRY_S = 1.0


def _in_daemon_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """`call()` on a daemon thread of its own, as a future of the running loop. Not the loop's
    executor: a call that never returns (Serve's status on a dead head) would hold its thread,
    and asyncio.run waits for the executor's threads before the process may exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody awaits it
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="ray-serve-status", daemon=True).start()
    return future


class RayServeBackend(Backend):
    def __init__(self, config: FacetConfig) -> None:
        self._config = config.ray
        self._session_options = config.onnxruntime.session_options()  # the replicas' ONNX Runtime sessions
        self._batching = config.batching
        self._repository = ModelRepository(config.model_repository)
        self._handles: dict[str, Any] = {}
        self._inputs: dict[str, list[str]] = {}
        self._metadata: dict[str, ModelMetadata] = {}
        self._batchers: dict[str, DynamicBatcher] = {}
        self._status_at, self._serving = -float("inf"), False
        self._away: set[str] = set()  # loaded models whose application was not RUNNING at the last status
        self._deploying = threading.Lock()  # models load side by side; joining and deploying go one at a time
        self._redeploying: asyncio.Task[None] | None = None
        self._status_call: asyncio.Future[set[str]] | None = None
        self._unreachable_since: float | None = None

    def _connect(self) -> None:
        opt_in_token_auth()
        import ray

        if not ray.is_initialized():
            address = self._config.address
            # a head on this machine listens on loopback (`facet up --backend ray` starts it so)
            local = address == "auto" or address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost")
            # a service may start before its cluster (as with Triton): it waits, NOT_SERVING
            deadline = time.monotonic() + self._config.load_timeout_s
            while True:
                try:
                    ray.init(address=address, namespace="facet", log_to_driver=False, logging_level=logging.WARNING,
                             _node_ip_address="127.0.0.1" if local else None)  # fmt: skip
                    return
                except (ConnectionError, RuntimeError) as exc:
                    if time.monotonic() > deadline:
                        raise Unavailable(
                            f"no Ray cluster at {self._config.address!r} within ray.load_timeout_s = {self._config.load_timeout_s:.0f} s "
                            f"(start one with `ray start --head`): {exc}"
                        ) from None
                    log.warning("waiting for the Ray cluster at %r: %s", address, exc)
                    time.sleep(CONNECT_RETRY_S)

    def _deploy_and_wait(self, entry: ModelVersion) -> None:
        from ray import serve

        from services.backends.ray_serve_app import app_name, deploy, running

        with self._deploying:
            self._connect()
            deployed = serve.status().applications.get(app_name(entry.name))
            if self._config.deploy_models and (deployed is None or not running(entry.name) or self._deployed_version(entry.name) != entry.version):
                log.info("deploying %s v%d on Ray Serve", entry.name, entry.version)
                deploy(entry, self._config, self._session_options)
        deadline = time.monotonic() + self._config.load_timeout_s
        while not running(entry.name):
            if time.monotonic() > deadline:
                raise Unavailable(f"Ray Serve application {app_name(entry.name)!r} is not RUNNING after {self._config.load_timeout_s:.0f} s")
            time.sleep(0.5)

    def _deployed_version(self, model: str) -> int | None:
        from ray import serve

        from services.backends.ray_serve_app import app_name

        try:
            return int(serve.get_app_handle(app_name(model)).describe.remote().result(timeout_s=30)["version"])
        except Exception:  # noqa: BLE001 - no such application, or not answering: redeploy
            return None

    async def load(self, model: str) -> ModelMetadata:
        if model in self._metadata:
            return self._metadata[model]
        entry = newest_version(self._repository, model)
        await asyncio.get_running_loop().run_in_executor(None, self._deploy_and_wait, entry)
        await self._open_handle(model)
        if self._batching.enabled:
            self._batchers[model] = DynamicBatcher(model, lambda inputs: self._call(model, inputs), self._batching, in_flight=self._config.num_replicas)
        self._metadata[model] = ModelMetadata.of(entry)
        log.info("model %s v%d ready on Ray Serve", model, entry.version)
        return self._metadata[model]

    async def _open_handle(self, model: str) -> None:
        from ray import serve
        from ray.serve.handle import DeploymentHandle

        from services.backends.ray_serve_app import app_name

        cached = serve.get_app_handle(app_name(model))  # resolves the ingress deployment
        # a handle of our own, not Serve's per-process cached one: that one may already be
        # initialised (`_deployed_version` called it), and _init would raise
        handle: DeploymentHandle[Any] = DeploymentHandle(cached.deployment_name, cached.app_name)
        handle._init(_run_router_in_separate_loop=False)  # route on this loop: no thread hop per call
        # arrays by value over the replica's own gRPC port rather than as Ray actor tasks
        handle = handle.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")
        description = await handle.describe.remote()
        self._handles[model], self._inputs[model] = handle, list(description["inputs"])

    def _schedule_redeploy(self) -> None:
        """Deploy again, in the background, the loaded models whose application is not RUNNING
        (deleted, or failed): the service recovers by itself, as with Triton."""
        if self._config.deploy_models and (self._redeploying is None or self._redeploying.done()):
            self._redeploying = asyncio.get_running_loop().create_task(self._redeploy())

    async def _redeploy(self) -> None:
        loop = asyncio.get_running_loop()
        for model in sorted(set(self._handles) - (await self._running() or set())):
            try:
                log.warning("model %s is not RUNNING on Ray Serve: deploying it again", model)
                # the handle routes by application name: it finds the new replicas by itself
                await loop.run_in_executor(None, self._deploy_and_wait, newest_version(self._repository, model))
            except Exception as exc:  # noqa: BLE001 - still away: the next health check tries again
                log.warning("cannot redeploy %s on Ray Serve: %s", model, exc)
                return
        self._status_at = -float("inf")  # report SERVING at the next check

    def admit(self, model: str, rows: int, row_width: int = 1) -> None:
        batcher = self._batchers.get(model)
        if batcher is not None:  # the same cost admission as in-process, before a service tokenizes
            batcher.admit(rows, row_width)

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        handle = self._handles.get(model)
        if handle is None:
            raise NotFound(f"model '{model}' is not loaded")
        if set(inputs) != set(self._inputs[model]):
            raise InvalidArgument(f"model '{model}' takes inputs {sorted(self._inputs[model])}, got {sorted(inputs)}")
        if model in self._away:
            raise self._gone(model)
        batcher = self._batchers.get(model)
        if batcher is not None:
            return await batcher.submit(inputs)
        return await self._call(model, inputs)

    def _gone(self, model: str) -> Unavailable:
        return Unavailable(f"Ray Serve application of '{model}' is not RUNNING; the service deploys it again (ray.deploy_models)")

    async def _unless_away(self, model: str, response: Any) -> dict[str, np.ndarray]:
        """The result of `response` (a Serve `DeploymentResponse`), or Unavailable as soon as the
        status check finds the model's application gone (its pending requests would wait)."""
        task = asyncio.ensure_future(response)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=AWAY_CHECK_S)
                if done:
                    result: dict[str, np.ndarray] = task.result()
                    return result
                if model in self._away:
                    raise self._gone(model)
        finally:
            if not task.done():
                task.cancel()

    async def _call(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        handle = self._handles[model]
        from ray.exceptions import RayActorError, RayError, RayTaskError
        from ray.serve.exceptions import BackPressureError, RayServeException

        try:
            result = await self._unless_away(model, handle.infer.remote({k: np.ascontiguousarray(v) for k, v in inputs.items()}))
            if ERROR_KEY in result:  # the model could not run these inputs
                raise InvalidArgument(f"model '{model}' cannot run these inputs: {result[ERROR_KEY]}")
        except RayTaskError as exc:  # the model refused or failed on these inputs
            cause = exc.as_instanceof_cause()
            if isinstance(cause, ValueError):
                raise InvalidArgument(f"model '{model}': {cause}") from None
            raise InternalError(f"model '{model}' on Ray Serve failed: {cause}") from None
        except RayActorError as exc:
            raise Unavailable(f"Ray Serve replica of '{model}' is gone: {exc}") from None
        except BackPressureError:
            raise ResourceExhausted(
                f"Ray Serve's queue for '{model}' is full (ray.max_ongoing_requests per replica): retry later or add replicas"
            ) from None
        except RayServeException as exc:  # DeploymentUnavailableError: the application is deleted or failed
            self._status_at = -float("inf")
            raise Unavailable(f"Ray Serve application of '{model}' is not available ({type(exc).__name__}); the service deploys it again") from None
        except (RayError, grpc.aio.AioRpcError) as exc:
            raise Unavailable(f"Ray Serve at {self._config.address!r} is not reachable for '{model}': {exc}") from None
        return result

    async def ready(self, model: str) -> bool:
        if model not in self._handles:
            return False
        if model in (await self._running() or set()):
            return True
        self._schedule_redeploy()
        return False

    async def serving(self) -> bool:
        """One Serve status call for every model, at most every STATUS_INTERVAL_S (the health
        watch asks each second; a status call costs the controller and this process tens of ms).
        While the cluster is unreachable every model is away: calls get UNAVAILABLE at once (the
        SDK retries them) instead of waiting for their deadline.

        Raises:
            EngineLost: the cluster unreachable for `ray.cluster_lost_timeout_s` (its head died:
                this process's Ray driver cannot join a new one), so the service restarts.
        """
        now = time.monotonic()
        if now - self._status_at >= STATUS_INTERVAL_S:
            running = await self._running()
            if running is None:
                self._unreachable_since = self._unreachable_since or now
                lost_s = time.monotonic() - self._unreachable_since
                if lost_s >= self._config.cluster_lost_timeout_s:
                    raise EngineLost(
                        f"the Ray cluster at {self._config.address!r} has not answered for {lost_s:.0f} s "
                        f"(ray.cluster_lost_timeout_s = {self._config.cluster_lost_timeout_s:.0f} s)"
                    )
            else:
                self._unreachable_since = None
            self._away = set(self._handles) - (running or set())
            self._status_at, self._serving = now, not self._away
            if not self._serving and running is not None:
                self._schedule_redeploy()
        return self._serving

    async def _running(self) -> set[str] | None:
        """The models whose Serve application is RUNNING; None while the cluster is unreachable
        (the status call failed, or has not answered within STATUS_TIMEOUT_S)."""
        from services.backends.ray_serve_app import running_models

        if self._status_call is None or self._status_call.done():
            self._status_call = _in_daemon_thread(running_models)
        try:
            return await asyncio.wait_for(asyncio.shield(self._status_call), STATUS_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - unreachable, or not answering: not ready
            return None

    async def close(self) -> None:
        if self._redeploying is not None:
            self._redeploying.cancel()
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
