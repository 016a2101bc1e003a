"""The NextFrame service over real gRPC with models built by the project's build, in ONNX Runtime."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

import sdk
from sdk._proto.facet.v1 import common_pb2, nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import tensor_from_numpy
from services.model_repository import ModelRepository
from services.nextframe.simulators import DATASETS, simulate
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration
MODEL = "nextframe-pendulum"


@pytest.fixture(scope="module")
def client(nextframe_server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(nextframe=nextframe_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(nextframe_server: ServerProcess) -> Iterator[nextframe_pb2_grpc.NextFrameStub]:
    with grpc.insecure_channel(nextframe_server.address) as channel:
        yield nextframe_pb2_grpc.NextFrameStub(channel)


def test_list_models_and_datasets(stub: nextframe_pb2_grpc.NextFrameStub, client: sdk.Client) -> None:
    models = {m.id: m for m in client.list_frame_models()}
    assert set(models) == {f"nextframe-{d}" for d in DATASETS}
    assert models[MODEL].constant == "gravity" and models[MODEL].constant_range == (1.0, 20.0)
    assert {"next_frame_loss", "copy_last_loss", "probe_ratio"} <= set(models[MODEL].metrics)
    reply = stub.ListModels(nextframe_pb2.ListFrameModelsRequest())
    assert len(reply.datasets) == 6


def test_simulate_matches_the_library(client: sdk.Client) -> None:
    clip = client.simulate("pendulum", constant=9.81, frames=12, seed=1)
    assert clip.shape == (12, 64, 64) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, simulate("pendulum", np.array([9.81], dtype=np.float32), 12, 1).frames[0])


def test_predict_next_and_rollout_run_the_exported_model(client: sdk.Client, nextframe_repository: ModelRepository) -> None:
    clip = client.simulate("pendulum", constant=5.0, frames=12, seed=2)
    nxt = client.predict_next(MODEL, clip[:7])
    assert nxt.shape == (64, 64) and nxt.dtype == np.uint8
    session = ort.InferenceSession(str(nextframe_repository.get(MODEL).model_file), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"context": (clip[2:7].astype(np.float32) / 255)[None]})[0][0, 0]
    assert np.abs(nxt.astype(int) - (np.clip(expected, 0, 1) * 255).round().astype(int)).max() <= 1
    frames = list(client.rollout(MODEL, clip[:7], horizon=6))
    assert len(frames) == 6 and all(f.shape == (64, 64) for f in frames)
    np.testing.assert_array_equal(frames[0], nxt)  # the first rollout step is the prediction
    assert client.estimate_constant(MODEL, clip).constant == "gravity"
    assert np.isfinite(client.estimate_constant(MODEL, clip).value)


def _rollout_messages(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    counts = [float(m) for m in re.findall(r'facet_stream_messages_total\{method="[^"]*Rollout"\} ([0-9.e+]+)', text)]
    return sum(counts)


def test_a_cancelled_rollout_stops_on_the_server(client: sdk.Client, nextframe_server: ServerProcess) -> None:
    assert nextframe_server.metrics_port
    clip = client.simulate("pendulum", constant=5.0, frames=5, seed=3)
    before = _rollout_messages(nextframe_server.metrics_port)
    stream = client.rollout(MODEL, clip, horizon=256)
    next(stream)
    next(stream)
    stream.close()  # cancels the call
    time.sleep(1.0)
    after = _rollout_messages(nextframe_server.metrics_port)
    time.sleep(1.0)
    assert _rollout_messages(nextframe_server.metrics_port) == after  # nothing more is produced
    assert after - before < 256


def _code(call, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = call(request)
        if hasattr(result, "__iter__") and not hasattr(result, "ByteSize"):
            list(result)
    return info.value.code(), info.value.details()


def _t(array: np.ndarray) -> common_pb2.Tensor:
    return tensor_from_numpy(array)


def test_bad_input_gets_clear_statuses(stub: nextframe_pb2_grpc.NextFrameStub) -> None:
    good = np.zeros((6, 64, 64), np.uint8)
    nan = np.full((6, 64, 64), np.nan, np.float32)
    cases = [
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model="nope", frames=_t(good)), grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model="", frames=_t(good)), grpc.StatusCode.INVALID_ARGUMENT, "model is empty"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model=MODEL, frames=_t(good[:4])), grpc.StatusCode.INVALID_ARGUMENT, "4 frames"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model=MODEL, frames=_t(np.zeros((6, 32, 32), np.uint8))), grpc.StatusCode.INVALID_ARGUMENT, "uint8 [t, 64, 64]"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model=MODEL, frames=_t(good.astype(np.float32))), grpc.StatusCode.INVALID_ARGUMENT, "uint8"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model=MODEL, frames=_t(nan)), grpc.StatusCode.INVALID_ARGUMENT, "finite"),
        (stub.PredictNext, nextframe_pb2.PredictNextRequest(model=MODEL), grpc.StatusCode.INVALID_ARGUMENT, "missing"),
        (stub.EstimateConstant, nextframe_pb2.EstimateConstantRequest(model=MODEL, frames=_t(np.zeros((65, 64, 64), np.uint8))), grpc.StatusCode.INVALID_ARGUMENT, "65 frames"),
        (stub.EstimateConstant, nextframe_pb2.EstimateConstantRequest(model="nope", frames=_t(good)), grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.Rollout, nextframe_pb2.RolloutRequest(model=MODEL, frames=_t(good), horizon=0), grpc.StatusCode.INVALID_ARGUMENT, "horizon"),
        (stub.Rollout, nextframe_pb2.RolloutRequest(model=MODEL, frames=_t(good), horizon=257), grpc.StatusCode.INVALID_ARGUMENT, "horizon"),
        (stub.Rollout, nextframe_pb2.RolloutRequest(model="nope", frames=_t(good), horizon=3), grpc.StatusCode.NOT_FOUND, "not served"),
        (stub.Simulate, nextframe_pb2.SimulateRequest(dataset="teleport", constant=1, frames=5), grpc.StatusCode.NOT_FOUND, "unknown dataset"),
        (stub.Simulate, nextframe_pb2.SimulateRequest(dataset="pendulum", constant=50, frames=5), grpc.StatusCode.INVALID_ARGUMENT, "[1.0, 20.0]"),
        (stub.Simulate, nextframe_pb2.SimulateRequest(dataset="pendulum", constant=float("nan"), frames=5), grpc.StatusCode.INVALID_ARGUMENT, "gravity"),
        (stub.Simulate, nextframe_pb2.SimulateRequest(dataset="pendulum", constant=5, frames=257), grpc.StatusCode.INVALID_ARGUMENT, "1..256"),
    ]  # fmt: skip
    for call, request, code, message in cases:
        got, details = _code(call, request)
        assert got == code and message in details, (request, details)


def test_sdk_save_gif_and_png_strip(client: sdk.Client, tmp_path: Path) -> None:
    clip = client.simulate("colliding_blocks", constant=1.0, frames=8, seed=0)
    gif, png = sdk.save_gif(clip, tmp_path / "clip.gif"), sdk.save_gif(clip, tmp_path / "clip.png")
    assert gif.read_bytes()[:6] in (b"GIF89a", b"GIF87a") and png.read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    assert Image.open(gif).n_frames == 8 and Image.open(png).size == (64 * 8, 64)
    with pytest.raises(sdk.InvalidArgument, match="uint8"):
        client.predict_next(MODEL, clip.astype(np.float32))
