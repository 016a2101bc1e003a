"""Triton Inference Server through `tritonclient` (gRPC, asyncio).

Model metadata (kind, properties, tokenizer files) comes from the model repository, which the
service reads as with the in-process backend; tensors go to the Triton server at `triton.url`,
which serves the same repository (production: the onnxruntime backend on the repository's own
configs; locally: `deploy.triton`'s python-backend wrapper). Readiness is Triton's model
readiness. When Triton goes away, calls fail with UNAVAILABLE naming the server; the backend
reloads its models by itself when Triton comes back (explicit model control) or waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from services.backends.base import Backend, ModelMetadata, newest_version
from services.model_repository import ModelRepository
from services.runtime.config import FacetConfig
from services.runtime.errors import (
    DeadlineExceeded,
    FacetError,
    InternalError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger(__name__)

_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int8): "INT8",
    np.dtype(np.bool_): "BOOL",
}
_STATUS_ERRORS: dict[str, type[FacetError]] = {
    "StatusCode.INVALID_ARGUMENT": InvalidArgument,
    "StatusCode.RESOURCE_EXHAUSTED": ResourceExhausted,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
}


class _Model:
    def __init__(self, config: dict[str, Any]) -> None:
        self.name = config["name"]
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        # outputs Triton returns as [batch, 1] for a per-row scalar ([batch] in the graph)
        self.squeeze = {o["name"] for o in config["output"] if "reshape" in o and o.get("dims") == ["1"]}
        self.max_batch_size = int(config.get("max_batch_size", 0))


class TritonBackend(Backend):
    def __init__(self, config: FacetConfig) -> None:
        self._config = config.triton
        self._url = config.triton.url
        self._repository = ModelRepository(config.model_repository)
        self._client_on_loop: Any = None
        self._models: dict[str, _Model] = {}
        self._metadata: dict[str, ModelMetadata] = {}
        self._reloading: asyncio.Task[None] | None = None

    @property
    def _client(self) -> Any:
        """The gRPC client, made on first use: its channel belongs to the running event loop."""
        if self._client_on_loop is None:
            import tritonclient.grpc.aio as grpcclient

            self._client_on_loop = grpcclient.InferenceServerClient(url=self._url)
        return self._client_on_loop

    def _unavailable(self, exc: Exception) -> Unavailable:
        return Unavailable(f"Triton at {self._url} is not reachable or not ready: {_message(exc)}")

    async def load(self, model: str) -> ModelMetadata:
        if model in self._metadata:
            return self._metadata[model]
        entry = newest_version(self._repository, model)
        await self._ensure_ready(model, self._config.load_timeout_s)
        self._models[model] = _Model((await self._call(self._client.get_model_config(model, as_json=True)))["config"])
        self._metadata[model] = ModelMetadata.of(entry)
        log.info("model %s ready on Triton at %s", model, self._url)
        return self._metadata[model]

    async def _ensure_ready(self, model: str, timeout_s: float) -> None:
        """Wait until Triton reports `model` READY, asking it to load the model when configured to."""
        deadline = time.monotonic() + timeout_s
        asked = False
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if await self._client.is_model_ready(model):
                    return
                if self._config.load_models and not asked:
                    asked = True
                    await self._client.load_model(model)
                    continue
            except Exception as exc:  # noqa: BLE001 - the server is down or refused: retry until the deadline
                last = exc
                asked = False
            await asyncio.sleep(0.5)
        detail = f": {_message(last)}" if last is not None else ""
        raise Unavailable(f"model '{model}' did not become READY on Triton at {self._url} within {timeout_s:.0f} s{detail}")

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        spec = self._models.get(model)
        if spec is None:
            raise NotFound(f"model '{model}' is not loaded")
        if set(inputs) != set(spec.inputs):
            raise InvalidArgument(f"model '{model}' takes inputs {sorted(spec.inputs)}, got {sorted(inputs)}")
        rows = int(next(iter(inputs.values())).shape[0]) if spec.max_batch_size else 0
        if rows <= spec.max_batch_size:
            return await self._infer(spec, inputs)
        # more rows than Triton takes in one request: consecutive slices, sent together
        step = spec.max_batch_size
        parts = await asyncio.gather(*(self._infer(spec, {k: v[i : i + step] for k, v in inputs.items()}) for i in range(0, rows, step)))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _infer(self, spec: _Model, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.grpc import InferInput, InferRequestedOutput

        model = spec.name
        request = []
        for name in spec.inputs:
            array = np.ascontiguousarray(inputs[name])
            if array.dtype not in _DATATYPES:
                raise InvalidArgument(f"input '{name}' of model '{model}' has unsupported dtype {array.dtype}")
            tensor = InferInput(name, list(array.shape), _DATATYPES[array.dtype])
            tensor.set_data_from_numpy(array)
            request.append(tensor)
        outputs = [InferRequestedOutput(name) for name in spec.outputs]
        result = await self._call(self._client.infer(model, request, outputs=outputs, client_timeout=self._config.infer_timeout_s), model)
        arrays = {}
        for name in spec.outputs:
            array = result.as_numpy(name)
            arrays[name] = array.reshape(array.shape[:-1]) if name in spec.squeeze else array
        return arrays

    async def _call(self, awaitable: Any, model: str | None = None) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await awaitable
        except InferenceServerException as exc:
            status = str(exc.status())
            if status in _STATUS_ERRORS:
                raise _STATUS_ERRORS[status](f"Triton: {_message(exc)}") from None
            if status in ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND") or "not ready" in _message(exc):
                # the server is down, or restarted without the model: reload it in the background
                if model is not None:
                    self._schedule_reload()
                raise self._unavailable(exc) from None
            raise InternalError(f"Triton at {self._url}: {_message(exc)}") from None

    def _schedule_reload(self) -> None:
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        for model in list(self._models):
            try:
                await self._ensure_ready(model, self._config.load_timeout_s)
            except Unavailable as exc:
                log.warning("%s", exc)
                return

    async def serving(self) -> bool:
        """One repository-index call for every model (the health watch asks each second)."""
        if not self._models:
            return True
        try:
            index = await self._client.get_model_repository_index(as_json=True, client_timeout=2.0)
            ready = {m["name"] for m in index.get("models", []) if m.get("state") == "READY"}
        except Exception:  # noqa: BLE001 - unreachable means not ready
            ready = set()
        if not ready >= set(self._models):
            self._schedule_reload()
            return False
        return True

    async def ready(self, model: str) -> bool:
        if model not in self._models:
            return False
        try:
            ready = bool(await self._client.is_model_ready(model, client_timeout=2.0))
        except Exception:  # noqa: BLE001 - unreachable means not ready
            ready = False
        if not ready:
            self._schedule_reload()
        return ready

    async def close(self) -> None:
        if self._reloading is not None:
            self._reloading.cancel()
        if self._client_on_loop is not None:
            await self._client_on_loop.close()


def _message(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    return str(text).strip() or type(exc).__name__
