"""Request building and response parsing for the NextFrame service, shared by Client and AsyncClient."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from sdk._call import Call
from sdk._errors import InvalidArgument
from sdk._proto.facet.v1 import common_pb2, nextframe_pb2
from sdk._tensors import tensor_from_numpy, tensor_to_numpy

SERVICE = "nextframe"


@dataclasses.dataclass(frozen=True)
class FrameModel:
    """A next-frame model: which dataset it learned and what its probe estimates."""

    id: str
    dataset: str
    constant: str
    units: str
    constant_range: tuple[float, float]
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ConstantEstimate:
    value: float
    constant: str  # e.g. "gravity"
    units: str

    def __str__(self) -> str:
        return f"{self.constant} ≈ {self.value:.4g} {self.units}"


def frames_tensor(frames: np.ndarray) -> common_pb2.Tensor:
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise InvalidArgument(f"frames must be a uint8 array [t, 64, 64], got {array.dtype} {list(array.shape)}")
    return tensor_from_numpy(np.ascontiguousarray(array))


def list_frame_models() -> Call[list[FrameModel]]:
    def parse(r: nextframe_pb2.ListFrameModelsResponse) -> list[FrameModel]:
        return [FrameModel(m.id, m.dataset, m.constant, m.units, (m.constant_low, m.constant_high), dict(m.metrics)) for m in r.models]

    return Call(SERVICE, "ListModels", nextframe_pb2.ListFrameModelsRequest(), parse)


def simulate(dataset: str, constant: float, frames: int, seed: int) -> Call[np.ndarray]:
    request = nextframe_pb2.SimulateRequest(dataset=dataset, constant=constant, frames=frames, seed=seed)
    return Call(SERVICE, "Simulate", request, lambda r: tensor_to_numpy(r.frames, "frames"))


def predict_next(model: str, frames: np.ndarray) -> Call[np.ndarray]:
    request = nextframe_pb2.PredictNextRequest(model=model, frames=frames_tensor(frames))
    return Call(SERVICE, "PredictNext", request, lambda r: tensor_to_numpy(r.frame, "frame"))


def rollout_request(model: str, frames: np.ndarray, horizon: int) -> nextframe_pb2.RolloutRequest:
    return nextframe_pb2.RolloutRequest(model=model, frames=frames_tensor(frames), horizon=horizon)


def estimate_constant(model: str, frames: np.ndarray) -> Call[ConstantEstimate]:
    request = nextframe_pb2.EstimateConstantRequest(model=model, frames=frames_tensor(frames))
    return Call(SERVICE, "EstimateConstant", request, lambda r: ConstantEstimate(r.value, r.constant, r.units))


def save_gif(frames: np.ndarray, path: str | Path, fps: int = 15) -> Path:
    """Write frames uint8 [t, h, w] as an animated GIF, or as a PNG strip when `path` ends in .png."""
    try:
        from PIL import Image
    except ImportError as exc:  # the SDK itself needs only grpcio, protobuf and numpy
        raise ImportError("save_gif needs Pillow: pip install pillow") from exc
    array = np.asarray(frames)
    if array.ndim != 3 or len(array) == 0:
        raise ValueError(f"frames must be [t, h, w] with t >= 1, got {list(array.shape)}")
    array = array.astype(np.uint8)
    path = Path(path)
    if path.suffix.lower() == ".png":
        Image.fromarray(np.concatenate(list(array), axis=1)).save(path)
    else:
        images = [Image.fromarray(f) for f in array]
        images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path
