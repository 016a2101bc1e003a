"""The SDK's next-frame methods check what a server answers: a non-finite number or a frame of
the wrong dtype or rank is the server's fault (sdk.ProtocolError, an InternalError, with the
call's request id), never the caller's InvalidArgument. Against a real gRPC server on loopback
that answers wrong on purpose (issue #12, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import pytest

import sdk
from sdk._proto.facet.v1 import nextframe_pb2, nextframe_pb2_grpc
from sdk._tensors import tensor_from_numpy

CLIP = np.zeros((5, 64, 64), np.uint8)


class _WrongServer(nextframe_pb2_grpc.NextFrameServicer):
    """Answers OK with replies that break the contract."""

    def Simulate(self, request: Any, context: Any) -> nextframe_pb2.SimulateResponse:
        return nextframe_pb2.SimulateResponse(frames=tensor_from_numpy(np.zeros((2, 64, 64), np.float32)))

    def PredictNext(self, request: Any, context: Any) -> nextframe_pb2.PredictNextResponse:
        return nextframe_pb2.PredictNextResponse(frame=tensor_from_numpy(np.full((64, 64), np.nan, np.float32)))

    def Rollout(self, request: Any, context: Any) -> Iterator[nextframe_pb2.RolloutFrame]:
        yield nextframe_pb2.RolloutFrame(step=1, frame=tensor_from_numpy(np.zeros((1, 64, 64), np.uint8)))

    def EstimateConstant(self, request: Any, context: Any) -> nextframe_pb2.EstimateConstantResponse:
        if request.model == "inf-score":
            return nextframe_pb2.EstimateConstantResponse(value=1.0, trained_low=1, trained_high=2, ood_score=float("inf"), ood_threshold=1.0)
        return nextframe_pb2.EstimateConstantResponse(value=float("nan"), constant="gravity", units="m/s²")


@pytest.fixture(scope="module")
def wrong_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    nextframe_pb2_grpc.add_NextFrameServicer_to_server(_WrongServer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_servers_bad_reply_is_a_protocol_error_not_the_callers_invalid_argument(wrong_address: str) -> None:
    with sdk.Client(nextframe=wrong_address) as client:
        calls = [
            ("simulate", lambda: client.simulate("pendulum", constant=5.0, frames=2)),
            ("predict_next", lambda: client.predict_next("m", CLIP)),
            ("rollout", lambda: list(client.rollout("m", CLIP, horizon=1))),
            ("estimate_constant", lambda: client.estimate_constant("m", CLIP)),
            ("estimate_constant ood_score", lambda: client.estimate_constant("inf-score", CLIP)),
        ]
        for what, call in calls:
            with pytest.raises(sdk.ProtocolError) as info:
                call()
            assert isinstance(info.value, sdk.InternalError) and not isinstance(info.value, sdk.InvalidArgument), what
            assert info.value.request_id, what


async def test_the_async_client_checks_replies_too(wrong_address: str) -> None:
    async with sdk.AsyncClient(nextframe=wrong_address) as client:
        with pytest.raises(sdk.ProtocolError):
            await client.estimate_constant("m", CLIP)
