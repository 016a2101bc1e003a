"""The NextFrame service over real gRPC with models built by the project's build, on every
backend (ONNX Runtime, Triton, Ray Serve)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch

import sdk
from sdk._proto.facet.v1 import common_pb2, nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import tensor_from_numpy
from services.model_repository import ModelRepository
from services.nextframe.catalog import File, Prop
from services.nextframe.simulators import DATASETS, simulate
from tests.services.nextframe.fixtures import BROKEN_MODEL
from tests.serving import ServerProcess
from training.nextframe.model import FrameModelConfig, FrameUNet
from training.nextframe.probe import FittedProbe, video_features

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


def _metric_sum(metrics_port: int, pattern: str) -> float:
    """The sum of the samples of the service's /metrics whose line matches `pattern` (a regex up to the value)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(float(m) for m in re.findall(pattern + r" ([0-9.e+]+)", text))


def _rollout_messages(metrics_port: int) -> float:
    return _metric_sum(metrics_port, r'facet_stream_messages_total\{method="[^"]*Rollout"\}')


def _rollouts_cancelled(metrics_port: int) -> float:
    return _metric_sum(metrics_port, r'facet_requests_total\{code="CANCELLED",method="[^"]*Rollout"\}')


def test_a_cancelled_rollout_stops_on_the_server(client: sdk.Client, nextframe_server: ServerProcess) -> None:
    """Synchronised on the server's own record that the call ended (its CANCELLED count), not on a sleep."""
    port = nextframe_server.metrics_port
    assert port
    clip = client.simulate("pendulum", constant=5.0, frames=5, seed=3)
    before, cancelled = _rollout_messages(port), _rollouts_cancelled(port)
    stream = client.rollout(MODEL, clip, horizon=256)
    next(stream)
    next(stream)
    stream.close()  # cancels the call
    deadline = time.monotonic() + 60
    while _rollouts_cancelled(port) == cancelled:  # the handler has ended: it can produce no more
        assert time.monotonic() < deadline, "the server never recorded the cancelled Rollout"
        time.sleep(0.05)  # poll interval, not synchronisation
    # the second message can be delivered as the cancel lands, before the server counts it
    assert 1 <= _rollout_messages(port) - before < 256


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


# -- EstimateConstant: the value against PyTorch, and whether to trust it (issue #12, items 7 and 25)


def _pytorch_probe(repository: ModelRepository, model: str, clip: np.ndarray) -> tuple[float, float]:
    """The registered PyTorch checkpoint and probe on `clip`: (constant, ood_score)."""
    entry = repository.get(model)
    frame_model = FrameUNet(FrameModelConfig(**entry.properties["model"]))
    frame_model.load_state_dict(torch.load(entry.path / entry.metadata["files"][File.WEIGHTS], weights_only=True))
    probe = repository.get(entry.properties[Prop.PROBE_MODEL])
    fitted = FittedProbe.load(probe.path / probe.metadata["files"][File.PROBE_WEIGHTS])
    constant, score = fitted.predict(video_features(frame_model, clip[None], int(entry.properties[Prop.WINDOWS_PER_VIDEO])))
    return float(constant[0]), float(score[0])


@pytest.mark.parametrize("dataset", ["pendulum", "moon_orbit", "colliding_blocks"])
def test_estimate_constant_is_the_pytorch_probe_on_the_same_frames(client: sdk.Client, nextframe_repository: ModelRepository, dataset: str) -> None:
    """The value and ood_score the service answers (through this backend) against the registered
    PyTorch checkpoint and probe run here on the same frames: simulated videos and noise agree to
    1e-3. Blank frames are ill-conditioned (GroupNorm of a constant image divides float32
    rounding by √eps, and the probe weighs features by 1 / their training std: ONNX and PyTorch
    part by a few %), so for them only the verdict is compared: both far out of distribution."""
    spec = DATASETS[dataset]
    model = f"nextframe-{dataset}"
    clips = {
        "simulated": client.simulate(dataset, constant=(spec.low + spec.high) / 2, frames=17, seed=21),
        "simulated, short": client.simulate(dataset, constant=spec.low, frames=5, seed=22),
        "noise": np.random.default_rng(0).integers(0, 256, (6, 64, 64)).astype(np.uint8),
    }
    for what, clip in clips.items():
        estimate = client.estimate_constant(model, clip)
        constant, score = _pytorch_probe(nextframe_repository, model, clip)
        assert estimate.value == pytest.approx(constant, rel=1e-3, abs=1e-3 * (spec.high - spec.low)), what
        assert estimate.ood_score == pytest.approx(score, rel=1e-3, abs=1e-4), what
    blank = client.estimate_constant(model, np.zeros((9, 64, 64), np.uint8))
    _, score = _pytorch_probe(nextframe_repository, model, np.zeros((9, 64, 64), np.uint8))
    assert blank.ood_threshold is not None and blank.out_of_distribution and score > 3 * blank.ood_threshold


def test_out_of_range_and_out_of_distribution_estimates_say_so(client: sdk.Client, nextframe_repository: ModelRepository) -> None:
    probe = nextframe_repository.get(nextframe_repository.get(MODEL).properties[Prop.PROBE_MODEL]).properties
    trained = (probe[Prop.TRAINED_LOW], probe[Prop.TRAINED_HIGH])
    blank = client.estimate_constant(MODEL, np.zeros((20, 64, 64), np.uint8))  # the input
    assert blank.out_of_distribution and not blank.trustworthy
    assert blank.ood_threshold == pytest.approx(probe[Prop.OOD_THRESHOLD])
    assert blank.ood_score is not None and blank.ood_score > 3 * blank.ood_threshold
    assert "unlike the training videos" in str(blank)
    others = [client.simulate(d, constant=DATASETS[d].low, frames=20, seed=4) for d in ("moon_orbit", "colliding_blocks", "roller_coaster")]
    white = np.full((8, 64, 64), 255, np.uint8)
    for clip in [*others, white]:
        assert client.estimate_constant(MODEL, clip).out_of_distribution
    for seed in (31, 32, 33):  # videos like the training ones, the model never saw
        clip = client.simulate("pendulum", constant=float(np.mean(trained)), frames=10, seed=seed)
        estimate = client.estimate_constant(MODEL, clip)
        assert not estimate.out_of_distribution and estimate.ood_score is not None and estimate.ood_score < estimate.ood_threshold
    for video in [np.zeros((20, 64, 64), np.uint8), white, *others, clip]:
        estimate = client.estimate_constant(MODEL, video)
        assert estimate.trained_range == pytest.approx(trained)
        low, high = np.float32(trained[0]), np.float32(trained[1])
        assert estimate.in_trained_range == bool(low <= np.float32(estimate.value) <= high)
        assert ("outside the trained range" in str(estimate)) == (not estimate.in_trained_range)


# -- bad input: never INTERNAL, always the field and its range (issue #12, items 4, 5 and 9)


def _tensor(dtype: int, shape: list[int], data: bytes = b"") -> common_pb2.Tensor:
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


def _bad_frames() -> list[tuple[common_pb2.Tensor, str]]:
    """Frames a client can send that are wrong, with what the message must say."""
    u8 = common_pb2.DATA_TYPE_UINT8
    good = np.zeros((6, 64, 64), np.uint8)
    return [
        (_t(np.full((6, 64, 64), np.nan, np.float32)), "finite"),
        (_t(np.full((6, 64, 64), np.inf, np.float32)), "finite"),
        (_t(np.full((6, 64, 64), -np.inf, np.float32)), "finite"),
        (_t(np.full((6, 64, 64), 3e38, np.float32)), "uint8"),
        (_t(good.astype(np.float16)), "uint8"),
        (_t(good.astype(np.int64)), "uint8"),
        (_t(good.astype(bool)), "uint8"),
        (_t(good.astype(np.int32) - 1), "uint8"),
        (_t(good[:, :, 0]), "uint8 [t, 64, 64]"),
        (_t(good[..., None]), "uint8 [t, 64, 64]"),
        (_t(good[0]), "uint8 [t, 64, 64]"),
        (_t(np.zeros((6, 65, 64), np.uint8)), "uint8 [t, 64, 64]"),
        (_t(np.zeros((0, 64, 64), np.uint8)), "0 frames"),
        (_t(good[:1]), "1 frames"),
        (_t(np.zeros((65, 64, 64), np.uint8)), "65 frames"),
        (_tensor(u8, [2**40, 64, 64]), "bytes"),
        (_tensor(u8, [6, 64, 64], b"\0" * 10), "bytes"),
        (_tensor(u8, [-6, 64, 64]), "negative dimension"),
        (_tensor(0, [6, 64, 64], bytes(6 * 64 * 64)), "dtype"),
        (_tensor(99, [6, 64, 64], bytes(6 * 64 * 64)), "dtype"),
        (common_pb2.Tensor(), "frames are missing"),
    ]


def _bad_requests() -> list[tuple[Any, Any, grpc.StatusCode, str]]:
    good = _t(np.zeros((6, 64, 64), np.uint8))
    S, P, R, E = nextframe_pb2.SimulateRequest, nextframe_pb2.PredictNextRequest, nextframe_pb2.RolloutRequest, nextframe_pb2.EstimateConstantRequest
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases: list[tuple[Any, Any, grpc.StatusCode, str]] = [
        ("Simulate", S(dataset="pendulum", constant=5, frames=5, seed=-1), invalid, "seed must be 0..2**63-1"),
        ("Simulate", S(dataset="pendulum", constant=5, frames=5, seed=-(2**63)), invalid, "seed"),
        ("Simulate", S(dataset="pendulum", frames=5), invalid, "constant is required"),
        ("Simulate", S(dataset="pendulum", constant=0, frames=5), invalid, "constant must be the gravity in [1.0, 20.0]"),
        ("Simulate", S(dataset="pendulum", constant=-1e38, frames=5), invalid, "[1.0, 20.0]"),
        ("Simulate", S(dataset="pendulum", constant=3.4e38, frames=5), invalid, "[1.0, 20.0]"),
        ("Simulate", S(dataset="pendulum", constant=float("inf"), frames=5), invalid, "constant"),
        ("Simulate", S(dataset="pendulum", constant=float("-inf"), frames=5), invalid, "constant"),
        ("Simulate", S(dataset="pendulum", constant=float("nan"), frames=5), invalid, "constant"),
        ("Simulate", S(dataset="moon_orbit", constant=0.0, frames=5), invalid, "[0.05, 0.6]"),
        ("Simulate", S(dataset="pendulum", constant=5), invalid, "frames must be 1..256"),
        ("Simulate", S(dataset="pendulum", constant=5, frames=-1), invalid, "frames must be 1..256"),
        ("Simulate", S(dataset="pendulum", constant=5, frames=2**31 - 1), invalid, "frames must be 1..256"),
        ("Simulate", S(dataset="pendulum", constant=5, frames=-(2**31)), invalid, "frames must be 1..256"),
        ("Simulate", S(constant=5, frames=5), invalid, "dataset is empty"),
        ("Simulate", S(dataset="Pendulum", constant=5, frames=5), not_found, "unknown dataset"),
        ("Simulate", S(dataset="重力" * 5000, constant=5, frames=5), not_found, "unknown dataset"),
        ("Rollout", R(model=MODEL, frames=good, horizon=-1), invalid, "horizon must be 1..256"),
        ("Rollout", R(model=MODEL, frames=good), invalid, "horizon must be 1..256"),
        ("Rollout", R(model=MODEL, frames=good, horizon=2**31 - 1), invalid, "horizon must be 1..256"),
        ("Rollout", R(model=MODEL, frames=good, horizon=-(2**31)), invalid, "horizon must be 1..256"),
    ]
    for method, request in (("PredictNext", P), ("Rollout", R), ("EstimateConstant", E)):
        extra = {"horizon": 3} if method == "Rollout" else {}
        cases += [
            (method, request(model="", frames=good, **extra), invalid, "model is empty"),
            (method, request(model="nextframe-" + "x" * 10000, frames=good, **extra), not_found, "not served"),
            (method, request(model="nextframe-pendulum-probe", frames=good, **extra), not_found, "not served"),
        ]
        cases += [(method, request(model=MODEL, frames=frames, **extra), invalid, message) for frames, message in _bad_frames()]
    return cases


def test_no_bad_input_gets_internal_every_rpc_names_the_field(stub: nextframe_pb2_grpc.NextFrameStub) -> None:
    """The fuzzing of issue #12 item 9, kept as a test: negative, huge, NaN/inf, zero, wrong
    shapes and dtypes, unknown names, on every RPC."""
    wrong = []
    for method, request, code, message in _bad_requests():
        got, details = _code(getattr(stub, method), request)
        if got != code or message not in details or len(details) > 600:  # a 10,000-character name is cut
            wrong.append((method, str(request)[:120], got, details))
    assert not wrong, wrong


def test_zero_and_range_ends_are_values_not_defaults(client: sdk.Client, stub: nextframe_pb2_grpc.NextFrameStub) -> None:
    """constant is `optional`: 0 (a mass difference) is simulated as 0, not read as unset; the
    ends of a range are accepted even after float32 rounding (0.6 is sent as 0.60000002)."""
    reply = stub.Simulate(nextframe_pb2.SimulateRequest(dataset="colliding_blocks", constant=0.0, frames=3, seed=0))
    assert reply.constant == 0.0
    np.testing.assert_array_equal(client.simulate("colliding_blocks", constant=0.0, frames=3, seed=0), simulate("colliding_blocks", np.array([0.0]), 3, 0).frames[0])
    for dataset, spec in DATASETS.items():
        for constant in (spec.low, spec.high):
            assert client.simulate(dataset, constant=constant, frames=2, seed=0).shape == (2, 64, 64), (dataset, constant)
    assert client.simulate("pendulum", constant=5.0, frames=2, seed=2**63 - 1).shape == (2, 64, 64)


def test_the_sdk_raises_invalid_argument_naming_the_argument(client: sdk.Client) -> None:
    for kwargs, field in [({"seed": -1}, "seed"), ({"frames": 0}, "frames"), ({"frames": -5}, "frames"), ({"constant": 1e6}, "constant"),
                          ({"constant": float("nan")}, "constant")]:  # fmt: skip
        args = {"constant": 5.0, "frames": 3, "seed": 0, **kwargs}
        with pytest.raises(sdk.InvalidArgument, match=field):
            client.simulate("pendulum", **args)
    with pytest.raises(sdk.InvalidArgument, match="horizon"):
        list(client.rollout(MODEL, np.zeros((5, 64, 64), np.uint8), horizon=0))
    with pytest.raises(sdk.NotFound):
        client.estimate_constant("nextframe-nope", np.zeros((5, 64, 64), np.uint8))


# -- non-finite outputs are the server's fault: INTERNAL, never OK (issue #12, item 5)


def test_a_model_answering_nan_or_inf_is_internal_not_ok(broken_nextframe_server: ServerProcess) -> None:
    clip = np.full((6, 64, 64), 128, np.uint8)
    with grpc.insecure_channel(broken_nextframe_server.address) as channel:
        raw = nextframe_pb2_grpc.NextFrameStub(channel)
        for call, request in [
            (raw.PredictNext, nextframe_pb2.PredictNextRequest(model=BROKEN_MODEL, frames=_t(clip))),
            (raw.Rollout, nextframe_pb2.RolloutRequest(model=BROKEN_MODEL, frames=_t(clip), horizon=3)),
            (raw.EstimateConstant, nextframe_pb2.EstimateConstantRequest(model=BROKEN_MODEL, frames=_t(clip))),
        ]:
            code, details = _code(call, request)
            assert code == grpc.StatusCode.INTERNAL and "non-finite" in details, details
    with sdk.Client(nextframe=broken_nextframe_server.address) as c:
        for run in (lambda: c.predict_next(BROKEN_MODEL, clip), lambda: list(c.rollout(BROKEN_MODEL, clip, horizon=2)),
                    lambda: c.estimate_constant(BROKEN_MODEL, clip)):  # fmt: skip
            with pytest.raises(sdk.InternalError) as info:
                run()
            assert not isinstance(info.value, sdk.InvalidArgument) and info.value.request_id
    log = (broken_nextframe_server.data_dir / "server.log").read_text()
    assert f"the next frame of model '{BROKEN_MODEL}'" in log and f"the gravity estimate of '{BROKEN_MODEL}'" in log
