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
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, shown
from services.runtime.outputs import finite_output
from services.runtime.server import FacetService

log = logging.getLogger(__name__)

CONTEXT = 5
MAX_SEED = 2**63 - 1  # int64


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


def _finite(array: Any, what: str) -> np.ndarray:
    """`array` as float32 (what the reply carries), checked by the one output check of every
    service: NaN or inf (also from float32 overflow) is INTERNAL naming `what`, never OK (a NaN
    frame would otherwise be clipped and sent as a black one)."""
    return finite_output(what, np.asarray(array, dtype=np.float32))


def _in_float32(value: float, low: float, high: float) -> bool:
    """low <= value <= high as the float32 fields that carry them compare (0.6 sent as float32 is
    0.60000002, which is still 0.6)."""
    return bool(np.float32(low) <= np.float32(value) <= np.float32(high))


class NextFrameService(nextframe_pb2_grpc.NextFrameServicer, FacetService):
    name = "nextframe"

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._limits = config.section(NextFrameConfig)
        self._backend = create_backend(config)
        self._models: dict[str, ModelVersion] = {}
        self._probes: dict[str, ModelVersion] = {}  # frame model -> its probe

    def register(self, server: grpc.aio.Server) -> None:
        nextframe_pb2_grpc.add_NextFrameServicer_to_server(self, server)

    async def start(self) -> None:
        repository = ModelRepository(self._config.model_repository)
        models = {n: repository.get(n) for n in repository.models()}
        self._models = {n: e for n, e in models.items() if e.kind == Kind.FRAME_MODEL}
        if not self._models:
            raise FailedPrecondition(f"the model repository {repository.root} holds no frame models; build them with `python -m training.nextframe.build`")
        props = [entry.properties for entry in self._models.values()]
        missing = sorted({p[k] for p in props for k in (Prop.FEATURES_MODEL, Prop.PROBE_MODEL)} - set(models))
        if missing:
            raise FailedPrecondition(f"the model repository {repository.root} lacks {', '.join(missing)}, which its frame models name; rebuild them")
        self._probes = {name: models[entry.properties[Prop.PROBE_MODEL]] for name, entry in self._models.items()}
        for name, probe in self._probes.items():
            if not _has_ood_score(probe):
                log.warning("%s was built without the out-of-distribution score: EstimateConstant sends none (rebuild it to get one)", name)
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
            raise NotFound(f"frame model '{shown(name)}' is not served (have: {', '.join(sorted(self._models))})")
        return self._models[name]

    async def _next(self, model: str, context: np.ndarray) -> np.ndarray:
        """The model's next frame, float32 [64, 64] in [0, 1] (clipped), after checking it is finite."""
        frame = (await self._backend.infer(model, {"context": context}))["next_frame"][0, 0]
        return np.clip(_finite(frame, f"the next frame of model {model!r}"), 0, 1)

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> nextframe_pb2.ListFrameModelsResponse:
        models = []
        for name, entry in sorted(self._models.items()):
            p = entry.properties
            models.append(nextframe_pb2.FrameModel(
                id=name, dataset=p[Prop.DATASET], constant=p[Prop.CONSTANT], units=p[Prop.UNITS], constant_low=p[Prop.LOW],
                constant_high=p[Prop.HIGH], metrics=_finite_metrics(name, p.get(Prop.METRICS, {})), version=entry.version))  # fmt: skip
        datasets = [nextframe_pb2.DatasetInfo(name=d.name, constant=d.constant, units=d.units, low=d.low, high=d.high) for d in DATASETS.values()]
        return nextframe_pb2.ListFrameModelsResponse(models=models, datasets=datasets)

    async def Simulate(self, request: nextframe_pb2.SimulateRequest, context: grpc.aio.ServicerContext) -> nextframe_pb2.SimulateResponse:
        if not request.dataset:
            raise InvalidArgument(f"dataset is empty; name one of {', '.join(DATASETS)}")
        spec = DATASETS.get(request.dataset)
        if spec is None:
            raise NotFound(f"unknown dataset '{shown(request.dataset)}'; available: {', '.join(DATASETS)}")
        wanted = f"{spec.constant} in [{spec.low}, {spec.high}] {spec.units} for {spec.name}"
        if not request.HasField("constant"):
            raise InvalidArgument(f"constant is required (0 is a value, not a default): send the {wanted}")
        if not np.isfinite(request.constant) or not _in_float32(request.constant, spec.low, spec.high):
            raise InvalidArgument(f"constant must be the {wanted}, got {request.constant}")
        if not 1 <= request.frames <= self._limits.max_simulate_frames:
            raise InvalidArgument(f"frames must be 1..{self._limits.max_simulate_frames} (nextframe.max_simulate_frames), got {request.frames}")
        if not 0 <= request.seed <= MAX_SEED:
            raise InvalidArgument(f"seed must be 0..2**63-1, got {request.seed}")
        constant = float(np.clip(request.constant, spec.low, spec.high))  # float32 rounding past an end
        videos = await asyncio.get_running_loop().run_in_executor(
            None, simulate, request.dataset, np.array([constant]), request.frames, request.seed
        )
        stored = float(_finite(videos.constants[0], f"the simulated {spec.constant} of {spec.name}"))
        return nextframe_pb2.SimulateResponse(frames=tensor_from_numpy(videos.frames[0]), constant=stored)

    async def PredictNext(self, request: nextframe_pb2.PredictNextRequest, context: grpc.aio.ServicerContext) -> nextframe_pb2.PredictNextResponse:
        self._model(request.model)
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames)
        return nextframe_pb2.PredictNextResponse(frame=tensor_from_numpy(_to_uint8(await self._next(request.model, _context(frames)))))

    async def Rollout(self, request: nextframe_pb2.RolloutRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[nextframe_pb2.RolloutFrame]:
        self._model(request.model)
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames)
        if not 1 <= request.horizon <= self._limits.max_horizon:
            raise InvalidArgument(f"horizon must be 1..{self._limits.max_horizon} (nextframe.max_horizon), got {request.horizon}")
        window = _context(frames)
        for step in range(1, request.horizon + 1):
            nxt = await self._next(request.model, window)  # a cancelled call stops here
            window = np.concatenate([window[:, 1:], nxt[None, None]], 1)
            yield nextframe_pb2.RolloutFrame(step=step, frame=tensor_from_numpy(_to_uint8(nxt)))

    async def EstimateConstant(
        self, request: nextframe_pb2.EstimateConstantRequest, context: grpc.aio.ServicerContext
    ) -> nextframe_pb2.EstimateConstantResponse:
        entry = self._model(request.model)
        p = entry.properties
        probe = self._probes[request.model]
        frames = _frames(request.frames, CONTEXT, self._limits.max_frames).astype(np.float32) / 255.0
        starts = np.unique(np.linspace(0, len(frames) - CONTEXT, int(p[Prop.WINDOWS_PER_VIDEO])).round().astype(int))
        windows = np.stack([frames[s : s + CONTEXT] for s in starts])
        features = _finite((await self._backend.infer(p[Prop.FEATURES_MODEL], {"context": windows}))["features"], f"the probe features of {request.model!r}")
        outputs = await self._backend.infer(probe.name, {"features": features.mean(0, keepdims=True)})
        value = float(_finite(outputs["constant"], f"the {p[Prop.CONSTANT]} estimate of {request.model!r}").reshape(-1)[0])
        q = probe.properties
        low, high = float(q.get(Prop.TRAINED_LOW, p[Prop.LOW])), float(q.get(Prop.TRAINED_HIGH, p[Prop.HIGH]))
        reply = nextframe_pb2.EstimateConstantResponse(
            value=value, constant=p[Prop.CONSTANT], units=p[Prop.UNITS], trained_low=low, trained_high=high, in_trained_range=_in_float32(value, low, high)
        )  # fmt: skip
        if _has_ood_score(probe):
            reply.ood_score = float(_finite(outputs["ood_score"], f"the ood_score of {request.model!r}").reshape(-1)[0])
            reply.ood_threshold = float(q[Prop.OOD_THRESHOLD])
            reply.out_of_distribution = reply.ood_score > reply.ood_threshold
        return reply


def _has_ood_score(probe: ModelVersion) -> bool:
    """Whether the probe model computes "ood_score" and has its threshold (models built before
    the score have neither)."""
    return Prop.OOD_THRESHOLD in probe.properties and any(o.name == "ood_score" for o in probe.outputs)


def _finite_metrics(model: str, metrics: dict[str, Any]) -> dict[str, float]:
    """The build metrics that are finite numbers; the others are left out (and logged): no reply
    carries NaN or inf."""
    kept = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and np.isfinite(v)}
    if len(kept) != len(metrics):
        log.warning("%s: build metrics left out of ListModels (not finite numbers): %s", model, sorted(set(metrics) - set(kept)))
    return kept
