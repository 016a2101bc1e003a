"""The NextFrame gRPC servicer: frame validation, simulation, and the frame models, their probe
features and probes through the backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from sdk._proto.facet.v1 import common_pb2, nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import tensor_from_numpy, tensor_to_numpy
from services.backends import create_backend
from services.model_repository import ModelRepository, ModelVersion
from services.nextframe.catalog import Kind, Prop
from services.nextframe.config import NextFrameConfig
from services.nextframe.simulators import DATASETS, SIZE, simulate
from services.runtime.config import FacetConfig
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound
from services.runtime.server import FacetService

log = logging.getLogger(__name__)

CONTEXT = 5


def _frames(tensor: common_pb2.Tensor, low: int, high: int) -> np.ndarray:
    if not tensor.ByteSize():
        raise InvalidArgument(f"frames are missing; send uint8 [t, {SIZE}, {SIZE}] with {low} <= t <= {high}")
    frames = tensor_to_numpy(tensor, "frames")
    if frames.dtype != np.uint8 or frames.ndim != 3 or frames.shape[1:] != (SIZE, SIZE):
        raise InvalidArgument(f"frames must be uint8 [t, {SIZE}, {SIZE}], got {frames.dtype} {list(frames.shape)}")
    if not low <= len(frames) <= high:
        raise InvalidArgument(f"{len(frames)} frames sent; send {low}..{high} (the last {CONTEXT} are the context)")
    return frames


def _context(frames: np.ndarray) -> np.ndarray:
    return (frames[-CONTEXT:].astype(np.float32) / 255.0)[None]


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    return (np.clip(frame, 0, 1) * 255).round().astype(np.uint8)


class NextFrameService(nextframe_pb2_grpc.NextFrameServicer, FacetService):
    name = "nextframe"

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._limits = config.section(NextFrameConfig)
        self._backend = create_backend(config)
        self._models: dict[str, ModelVersion] = {}

    def register(self, server: grpc.aio.Server) -> None:
        nextframe_pb2_grpc.add_NextFrameServicer_to_server(self, server)

    async def start(self) -> None:
        repository = ModelRepository(self._config.model_repository)
        models = {n: repository.get(n) for n in repository.models()}
        self._models = {n: e for n, e in models.items() if e.kind == Kind.FRAME_MODEL}
        if not self._models:
            raise FailedPrecondition(f"the model repository {repository.root} holds no frame models; build them with `python -m training.nextframe.build`")
        props = [entry.properties for entry in self._models.values()]
        await self._backend.load_all([*self._models, *(p[Prop.FEATURES_MODEL] for p in props), *(p[Prop.PROBE_MODEL] for p in props)])
        log.info("serving %d frame models: %s", len(self._models), ", ".join(self._models))

    async def healthy(self) -> bool:
        return await self._backend.serving()

    async def stop(self) -> None:
        await self._backend.close()

    def _model(self, name: str) -> ModelVersion:
        if not name:
            raise InvalidArgument("model is empty; name one of ListModels' ids")
        if name not in self._models:
            raise NotFound(f"frame model '{name}' is not served (have: {', '.join(sorted(self._models))})")
        return self._models[name]

    async def _next(self, model: str, context: np.ndarray) -> np.ndarray:
        return (await self._backend.infer(model, {"context": context}))["next_frame"][0, 0]

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> nextframe_pb2.ListFrameModelsResponse:
        models = []
        for name, entry in sorted(self._models.items()):
            p = entry.properties
            models.append(nextframe_pb2.FrameModel(
                id=name, dataset=p[Prop.DATASET], constant=p[Prop.CONSTANT], units=p[Prop.UNITS], constant_low=p[Prop.LOW],
                constant_high=p[Prop.HIGH], metrics={k: float(v) for k, v in p.get(Prop.METRICS, {}).items()}, version=entry.version))  # fmt: skip
        datasets = [nextframe_pb2.DatasetInfo(name=d.name, constant=d.constant, units=d.units, low=d.low, high=d.high) for d in DATASETS.values()]
        return nextframe_pb2.ListFrameModelsResponse(models=models, datasets=datasets)

    async def Simulate(self, request: nextframe_pb2.SimulateRequest, context: grpc.aio.ServicerContext) -> nextframe_pb2.SimulateResponse:
        spec = DATASETS.get(request.dataset)
        if spec is None:
            raise NotFound(f"unknown dataset {request.dataset!r}; available: {', '.join(DATASETS)}")
        if not np.isfinite(request.constant) or not spec.low <= request.constant <= spec.high:
            raise InvalidArgument(f"{spec.constant} must be in [{spec.low}, {spec.high}] {spec.units} for {spec.name}, got {request.constant}")
        if not 1 <= request.frames <= self._limits.max_simulate_frames:
            raise InvalidArgument(f"frames must be 1..{self._limits.max_simulate_frames}, got {request.frames}")
        videos = await asyncio.get_running_loop().run_in_executor(
            None, simulate, request.dataset, np.array([request.constant]), request.frames, request.seed
        )
        return nextframe_pb2.SimulateResponse(frames=tensor_from_numpy(videos.frames[0]), constant=float(videos.constants[0]))

    async def PredictNext(self, request: nextframe_pb2.PredictNextRequest, context: grpc.aio.ServicerContext) -> nextframe_pb2.PredictNextResponse:
        self._model(request.model)
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames)
        return nextframe_pb2.PredictNextResponse(frame=tensor_from_numpy(_to_uint8(await self._next(request.model, _context(frames)))))

    async def Rollout(self, request: nextframe_pb2.RolloutRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[nextframe_pb2.RolloutFrame]:
        self._model(request.model)
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames)
        if not 1 <= request.horizon <= self._limits.max_horizon:
            raise InvalidArgument(f"horizon must be 1..{self._limits.max_horizon}, got {request.horizon}")
        window = _context(frames)
        for step in range(1, request.horizon + 1):
            nxt = np.clip(await self._next(request.model, window), 0, 1)  # a cancelled call stops here
            window = np.concatenate([window[:, 1:], nxt[None, None]], 1)
            yield nextframe_pb2.RolloutFrame(step=step, frame=tensor_from_numpy(_to_uint8(nxt)))

    async def EstimateConstant(
        self, request: nextframe_pb2.EstimateConstantRequest, context: grpc.aio.ServicerContext
    ) -> nextframe_pb2.EstimateConstantResponse:
        entry = self._model(request.model)
        p = entry.properties
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames).astype(np.float32) / 255.0
        starts = np.unique(np.linspace(0, len(frames) - CONTEXT, int(p[Prop.WINDOWS_PER_VIDEO])).round().astype(int))
        windows = np.stack([frames[s : s + CONTEXT] for s in starts])
        features = (await self._backend.infer(p[Prop.FEATURES_MODEL], {"context": windows}))["features"].mean(0, keepdims=True)
        value = (await self._backend.infer(p[Prop.PROBE_MODEL], {"features": features.astype(np.float32)}))["constant"]
        return nextframe_pb2.EstimateConstantResponse(value=float(np.asarray(value).reshape(-1)[0]), constant=p[Prop.CONSTANT], units=p[Prop.UNITS])
