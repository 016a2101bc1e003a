"""Next-frame prediction (`facet.v1.NextFrame`): simulate physics videos, predict and roll out
next frames, and estimate a video's physical constant.

After Winterbottom et al. (2024), "The Power of Next-Frame Prediction for Learning Physical
Laws": a U-Net trained only to predict the next frame of simulated physics videos, and a linear
probe on its frozen activations that reads off the simulation's physical constant. Frames are
greyscale uint8 [64, 64]; a model predicts from the last 5 frames it is given (its context).
Limits named below are keys of the service's `[nextframe]` config section.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np

from sdk import _arguments as check
from sdk._call import Call, Service
from sdk._proto.facet.v1 import common_pb2, nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import finite_float, tensor_from_numpy, tensor_to_numpy
from sdk._transport import AsyncTransport, SyncTransport, docstrings_from

# Every next-frame RPC computes from its request alone (Simulate is seeded): all are retried on
# UNAVAILABLE (sdk._retry); the Rollout stream only until its first frame arrives.
SERVICE = Service(
    "nextframe",
    nextframe_pb2_grpc.NextFrameStub,
    idempotent=frozenset({"ListModels", "Simulate", "PredictNext", "Rollout", "EstimateConstant"}),
)

# -- results ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FrameModel:
    """A next-frame model: which dataset it learned and what its probe estimates.

    Attributes:
        id: what predict_next, rollout and estimate_constant take as `model`.
        dataset: the simulator it was trained on, e.g. "pendulum".
        constant: what estimate_constant returns, e.g. "gravity".
        units: the constant's units, e.g. "m/s²".
        constant_range: (low, high), in those units: the range the model saw in training.
        metrics: measured at build time: next-frame loss, copy-last-frame loss, probe losses
            (trained model and random-init control) and their ratio.
    """

    id: str
    dataset: str
    constant: str
    units: str
    constant_range: tuple[float, float]
    metrics: dict[str, float]


@dataclasses.dataclass(frozen=True)
class ConstantEstimate:
    """The probe's estimate of a video's physical constant, with whether to trust it. Prints as
    "gravity ≈ 9.81 m/s²", followed by a warning in brackets when `trustworthy` is False.

    Attributes:
        value: the estimate, in `units` (always finite).
        constant: what it estimates, e.g. "gravity".
        units: e.g. "m/s²".
        trained_range: (low, high), in `units`: the constant's range over the videos the probe
            was fitted on (recorded in the model's metadata at build time).
        in_trained_range: whether `value` lies in `trained_range`; outside it the probe
            extrapolates.
        ood_score: how unlike the training videos the input is (dimensionless): the
            Mahalanobis distance of the frozen model's probe features of the input from those
            of the training videos, as an RMS per feature. Videos like the training ones score
            below 1; blank frames or another dataset's videos scored 10 or more in the builds
            tried. None for models built before the score.
        ood_threshold: the model's threshold for `ood_score`, set at build time (3 × the 99th
            percentile of the scores of held-out videos of the training distribution); None
            with `ood_score`.
        out_of_distribution: `ood_score > ood_threshold`: the input does not look like what the
            model was trained on, and `value` means little (False when there is no score).
    """

    value: float
    constant: str
    units: str
    trained_range: tuple[float, float] = (float("-inf"), float("inf"))
    in_trained_range: bool = True
    ood_score: float | None = None
    ood_threshold: float | None = None
    out_of_distribution: bool = False

    @property
    def trustworthy(self) -> bool:
        """In the trained range and not out of distribution."""
        return self.in_trained_range and not self.out_of_distribution

    def __str__(self) -> str:
        text = f"{self.constant} ≈ {self.value:.4g} {self.units}"
        warnings = []
        if not self.in_trained_range:
            warnings.append(f"outside the trained range {self.trained_range[0]:g}..{self.trained_range[1]:g}")
        if self.out_of_distribution:
            warnings.append(f"input unlike the training videos: score {self.ood_score:.3g} > {self.ood_threshold:.3g}")
        return text + (f" ({'; '.join(warnings)})" if warnings else "")


# -- requests and responses ---------------------------------------------------------------------


def frames_tensor(frames: np.ndarray) -> common_pb2.Tensor:
    """uint8 frames [t, h, w] as a Tensor. Raises InvalidArgument for any other dtype or rank."""
    return tensor_from_numpy(check.uint8_array(frames, "frames", ndim=3, shape="[t, 64, 64]"))


def _frames_of_reply(tensor: common_pb2.Tensor, what: str, ndim: int) -> np.ndarray:
    """A reply's uint8 frames, checked (a wrong dtype or rank is the server's fault: the transport
    turns this ValueError into ProtocolError)."""
    array = tensor_to_numpy(tensor, what)
    if array.dtype != np.uint8 or array.ndim != ndim:
        raise ValueError(f"{what} is {array.dtype} {list(array.shape)}, not uint8 with {ndim} dimensions")
    return array


def _frame(r: nextframe_pb2.PredictNextResponse | nextframe_pb2.RolloutFrame) -> np.ndarray:
    return _frames_of_reply(r.frame, "frame", 2)


def _list_frame_models_call() -> Call[list[FrameModel]]:
    def parse(r: nextframe_pb2.ListFrameModelsResponse) -> list[FrameModel]:
        return [
            FrameModel(m.id, m.dataset, m.constant, m.units, (m.constant_low, m.constant_high), dict(m.metrics))
            for m in r.models
        ]

    return Call(SERVICE, "ListModels", nextframe_pb2.ListFrameModelsRequest(), parse)


def _simulate_call(dataset: str, constant: float, frames: int, seed: int) -> Call[np.ndarray]:
    request = nextframe_pb2.SimulateRequest(
        dataset=check.text(dataset, "dataset"),
        constant=check.number(constant, "constant", float32=True),
        frames=check.integer(frames, "frames"),
        seed=check.integer(seed, "seed", high=check.INT64_MAX),
    )
    return Call(SERVICE, "Simulate", request, lambda r: _frames_of_reply(r.frames, "frames", 3))


def _predict_next_call(model: str, frames: np.ndarray) -> Call[np.ndarray]:
    return Call(
        SERVICE, "PredictNext", nextframe_pb2.PredictNextRequest(model=check.text(model, "model"), frames=frames_tensor(frames)), _frame
    )


def _rollout_call(model: str, frames: np.ndarray, horizon: int) -> Call[np.ndarray]:
    request = nextframe_pb2.RolloutRequest(
        model=check.text(model, "model"), frames=frames_tensor(frames), horizon=check.integer(horizon, "horizon")
    )
    return Call(SERVICE, "Rollout", request, _frame)



def _constant_estimate(r: nextframe_pb2.EstimateConstantResponse) -> ConstantEstimate:
    scored = r.HasField("ood_score") and r.HasField("ood_threshold")
    return ConstantEstimate(
        finite_float(r.value, "value"), r.constant, r.units, (finite_float(r.trained_low, "trained_low"), finite_float(r.trained_high, "trained_high")),
        r.in_trained_range, finite_float(r.ood_score, "ood_score") if scored else None,
        finite_float(r.ood_threshold, "ood_threshold") if scored else None, r.out_of_distribution,
    )  # fmt: skip


def _estimate_constant_call(model: str, frames: np.ndarray) -> Call[ConstantEstimate]:
    request = nextframe_pb2.EstimateConstantRequest(model=check.text(model, "model"), frames=frames_tensor(frames))
    return Call(SERVICE, "EstimateConstant", request, _constant_estimate)


# -- methods ------------------------------------------------------------------------------------


class NextFrameMethods(SyncTransport):
    """The next-frame methods of `sdk.Client`."""

    _service = SERVICE

    def list_frame_models(self, *, timeout_s: float | None = None) -> list[FrameModel]:
        """The frame models the service holds (one per dataset) and what their probes estimate.

        Args:
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The models, by id.
        Raises:
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_list_frame_models_call(), timeout_s)

    def simulate(
        self, dataset: str, *, constant: float, frames: int = 40, seed: int = 0, timeout_s: float | None = None
    ) -> np.ndarray:
        """Render one video of a dataset's simulator, as the models were trained on.

        Args:
            dataset: a simulator, e.g. "pendulum" (see `FrameModel.dataset`).
            constant: the physical constant, within the dataset's range (`FrameModel.constant_range`,
                in `FrameModel.units`).
            frames: 1 to the service's `nextframe.max_simulate_frames`.
            seed: the random initial state, 0..2**63-1; the same seed gives the same video.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            uint8 array [frames, 64, 64].
        Raises:
            InvalidArgument: constant outside the dataset's range or not finite, frames out of
                range, a negative seed, an empty dataset name; the message names the argument
                and its range.
            NotFound: an unknown dataset; the message lists the datasets.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> clip = client.simulate("pendulum", constant=9.81, frames=40, seed=1)
        """
        return self._run(_simulate_call(dataset, constant, frames, seed), timeout_s)

    def predict_next(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """The frame after the given ones.

        Args:
            model: a `FrameModel.id`.
            frames: uint8 array [t, 64, 64], 5 <= t <= the service's `nextframe.max_frames`
                (config key); the last 5 are the context.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            uint8 array [64, 64].
        Raises:
            InvalidArgument: frames not a uint8 array [t, h, w] (before sending); a frame size
                other than 64x64, t out of range, an empty model id.
            NotFound: no model of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.
        """
        return self._run(_predict_next_call(model, frames), timeout_s)

    def rollout(
        self, model: str, frames: np.ndarray, *, horizon: int, timeout_s: float | None = None
    ) -> Iterator[np.ndarray]:
        """Autoregressive rollout, streamed: each predicted frame becomes part of the next context.

        Stop iterating (break, or `close()` the generator; `aclose()` on AsyncClient) to cancel
        the call: the server stops producing frames too.

        Args:
            model: a `FrameModel.id`.
            frames: uint8 array [t, 64, 64], 5 <= t <= the service's `nextframe.max_frames`
                (config key); the last 5 are the first context.
            horizon: frames to produce, 1 to the service's `nextframe.max_horizon`.
            timeout_s: deadline of the whole stream in seconds; None takes the client's `timeout_s`.
        Yields:
            uint8 arrays [64, 64], horizon of them, as the server produces them.
        Raises:
            InvalidArgument: frames not a uint8 array [t, h, w] (on the first iteration, before
                sending); a frame size other than 64x64, t or horizon out of range.
            NotFound: no model of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> for frame in client.rollout(model, clip[:5], horizon=30): ...
        """
        yield from self._stream(_rollout_call(model, frames, horizon), timeout_s)

    def estimate_constant(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> ConstantEstimate:
        """The linear probe's estimate of a video's physical constant, read off the frozen frame
        model's activations averaged over 5-frame windows of the video.

        Args:
            model: a `FrameModel.id`; its dataset should be the video's.
            frames: uint8 array [t, 64, 64], 5 <= t <= the service's `nextframe.max_frames`.
            timeout_s: deadline of the call in seconds; None takes the client's `timeout_s`.
        Returns:
            The estimate with the constant's name and units, and whether to trust it:
            `in_trained_range`, `ood_score` / `out_of_distribution` (see `ConstantEstimate`).
        Raises:
            InvalidArgument: frames not a uint8 array [t, h, w] (before sending); a frame size
                other than 64x64, t out of range.
            NotFound: no model of that id.
            FacetError: as every call: Unavailable, DeadlineExceeded, Unauthenticated.

        Example:
            >>> estimate = client.estimate_constant("nextframe-pendulum", clip)
            >>> print(estimate)                # gravity ≈ 9.6 m/s²
            >>> estimate.trustworthy           # False for blank frames: out of distribution
        """
        return self._run(_estimate_constant_call(model, frames), timeout_s)


@docstrings_from(NextFrameMethods)
class AsyncNextFrameMethods(AsyncTransport):
    """The next-frame methods of `sdk.AsyncClient`: those of `sdk.Client`, awaitable."""

    _service = SERVICE

    async def list_frame_models(self, *, timeout_s: float | None = None) -> list[FrameModel]:
        return await self._run(_list_frame_models_call(), timeout_s)

    async def simulate(
        self, dataset: str, *, constant: float, frames: int = 40, seed: int = 0, timeout_s: float | None = None
    ) -> np.ndarray:
        return await self._run(_simulate_call(dataset, constant, frames, seed), timeout_s)

    async def predict_next(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        return await self._run(_predict_next_call(model, frames), timeout_s)

    async def rollout(
        self, model: str, frames: np.ndarray, *, horizon: int, timeout_s: float | None = None
    ) -> AsyncIterator[np.ndarray]:
        # aclosing: when the consumer stops, the inner stream is closed (and cancelled) at once
        async with contextlib.aclosing(self._stream(_rollout_call(model, frames, horizon), timeout_s)) as stream:
            async for frame in stream:
                yield frame

    async def estimate_constant(
        self, model: str, frames: np.ndarray, *, timeout_s: float | None = None
    ) -> ConstantEstimate:
        return await self._run(_estimate_constant_call(model, frames), timeout_s)


def save_gif(frames: np.ndarray, path: str | Path, fps: int = 15) -> Path:
    """Write frames as an animated GIF, or as a PNG strip (frames side by side) when `path` ends in .png.

    Needs Pillow (`pip install pillow`), which the SDK itself does not depend on.

    Args:
        frames: uint8 array [t, h, w] (or a list of [h, w] frames), t >= 1; other dtypes are cast to uint8.
        path: where to write; the suffix picks the format.
        fps: GIF frames per second.
    Returns:
        `path`, as a Path.
    Raises:
        ImportError: Pillow is not installed.
        ValueError: frames is not [t, h, w] with t >= 1.

    Example:
        >>> sdk.save_gif(client.simulate("pendulum", constant=9.81), "pendulum.gif")
    """
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
