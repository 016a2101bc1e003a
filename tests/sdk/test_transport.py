"""The SDK's transport against a real gRPC server on loopback (port 0), sync and async: metadata,
deadlines, error mapping, one reused connection per service, and streams cancelled when the
consumer stops. The servicer is a small stand-in for the NextFrame service, no models needed."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

import sdk
from sdk._proto.facet.v1 import nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import tensor_from_numpy

HORIZON = 1000  # far more than a test consumes: a stream that ends early was cancelled


class StandInNextFrame(nextframe_pb2_grpc.NextFrameServicer):
    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []
        self.peers: list[str] = []
        self.rollout_ended = threading.Event()
        self.frames_sent = 0

    def Simulate(
        self, request: nextframe_pb2.SimulateRequest, context: grpc.ServicerContext
    ) -> nextframe_pb2.SimulateResponse:
        self.metadata.append(dict(context.invocation_metadata()))
        self.peers.append(context.peer())
        if request.dataset != "pendulum":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown dataset {request.dataset!r}")
        frames = np.full((request.frames, 64, 64), request.seed, dtype=np.uint8)
        return nextframe_pb2.SimulateResponse(frames=tensor_from_numpy(frames))

    def PredictNext(
        self, request: nextframe_pb2.PredictNextRequest, context: grpc.ServicerContext
    ) -> nextframe_pb2.PredictNextResponse:
        time.sleep(2.0)  # slower than the test's deadline
        return nextframe_pb2.PredictNextResponse()

    def Rollout(
        self, request: nextframe_pb2.RolloutRequest, context: grpc.ServicerContext
    ) -> Iterator[nextframe_pb2.RolloutFrame]:
        context.add_callback(self.rollout_ended.set)  # runs when the call ends, finished or cancelled
        for step in range(1, request.horizon + 1):
            self.frames_sent += 1
            yield nextframe_pb2.RolloutFrame(
                step=step, frame=tensor_from_numpy(np.full((64, 64), step % 256, dtype=np.uint8))
            )
            time.sleep(0.01)


@pytest.fixture
def servicer() -> StandInNextFrame:
    return StandInNextFrame()


@pytest.fixture
def address(servicer: StandInNextFrame) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    nextframe_pb2_grpc.add_NextFrameServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


CLIP = np.zeros((5, 64, 64), dtype=np.uint8)


def test_a_call_sends_the_api_key_and_parses_the_response(address: str, servicer: StandInNextFrame) -> None:
    with sdk.Client(nextframe=address, api_key="k1") as client:
        clip = client.simulate("pendulum", constant=9.81, frames=3, seed=7)
    assert clip.dtype == np.uint8 and clip.shape == (3, 64, 64) and (clip == 7).all()
    assert servicer.metadata[-1]["authorization"] == "Bearer k1"


def test_a_status_becomes_the_matching_facet_error(address: str) -> None:
    with sdk.Client(nextframe=address) as client, pytest.raises(sdk.NotFound, match="unknown dataset 'moon'"):
        client.simulate("moon", constant=1.0)


def test_the_call_deadline_is_timeout_s(address: str) -> None:
    with sdk.Client(nextframe=address, timeout_s=30) as client, pytest.raises(sdk.DeadlineExceeded):
        client.predict_next("m", CLIP, timeout_s=0.2)


def test_calls_share_one_connection_until_close(address: str, servicer: StandInNextFrame) -> None:
    client = sdk.Client(nextframe=address)
    client.simulate("pendulum", constant=1.0, frames=1)
    client.simulate("pendulum", constant=1.0, frames=1)
    client.close()
    client.simulate("pendulum", constant=1.0, frames=1)  # reopens
    client.close()
    first, second, reopened = servicer.peers
    assert first == second != reopened


def test_a_rollout_streams_and_is_cancelled_when_the_consumer_stops(address: str, servicer: StandInNextFrame) -> None:
    with sdk.Client(nextframe=address) as client:
        stream = client.rollout("m", CLIP, horizon=HORIZON)
        assert [int(next(stream)[0, 0]), int(next(stream)[0, 0])] == [1, 2]
        stream.close()  # type: ignore[attr-defined]  # annotated Iterator, a generator
        assert servicer.rollout_ended.wait(5)
    assert servicer.frames_sent < HORIZON


def test_a_rollout_checks_its_frames_before_sending(address: str, servicer: StandInNextFrame) -> None:
    with sdk.Client(nextframe=address) as client, pytest.raises(sdk.InvalidArgument, match="uint8"):
        next(client.rollout("m", CLIP.astype(np.float32), horizon=3))
    assert servicer.frames_sent == 0


async def test_the_async_client_does_the_same(address: str, servicer: StandInNextFrame) -> None:
    async with sdk.AsyncClient(nextframe=address, api_key="k2") as client:
        clip = await client.simulate("pendulum", constant=9.81, frames=2, seed=3)
        assert clip.shape == (2, 64, 64) and servicer.metadata[-1]["authorization"] == "Bearer k2"
        with pytest.raises(sdk.NotFound):
            await client.simulate("moon", constant=1.0)
        with pytest.raises(sdk.DeadlineExceeded):
            await client.predict_next("m", CLIP, timeout_s=0.2)
        async with contextlib.aclosing(client.rollout("m", CLIP, horizon=HORIZON)) as stream:  # type: ignore[type-var]
            steps = []
            async for frame in stream:
                steps.append(int(frame[0, 0]))
                if len(steps) == 2:
                    break
        assert steps == [1, 2]
        assert servicer.rollout_ended.wait(5)
    assert servicer.frames_sent < HORIZON


async def test_the_async_client_is_unavailable_when_unreachable() -> None:
    async with sdk.AsyncClient("127.0.0.1:1", timeout_s=3) as client:
        with pytest.raises(sdk.Unavailable):
            await client.list_collections()
