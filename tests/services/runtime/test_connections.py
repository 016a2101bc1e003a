"""Connection limits every service inherits (`server.max_connection_age_s`, its grace, keepalive):
a call that never sends its request, without a deadline, is not held forever: the connection's
age ends it with UNAVAILABLE (the SDK retries idempotent calls on a new connection), and other
calls are served meanwhile. The runtime probe served in this process, over real gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from sdk._proto.facet.v1 import common_pb2
from services.runtime.config import ConfigError, FacetConfig, ServerConfig
from services.runtime.errors import EngineLost
from services.runtime.server import start_server
from tests.services.runtime.test_interceptor import REPLY, RuntimeProbe


async def _never() -> AsyncIterator[bytes]:
    await asyncio.Event().wait()  # the request never comes
    yield b""


async def test_a_call_that_never_sends_ends_at_the_connection_age_and_others_are_served() -> None:
    config = FacetConfig(server=ServerConfig(port=0, max_connection_age_s=1.0, max_connection_age_grace_s=1.0))
    running = await start_server(RuntimeProbe(), config)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as silent:
            # the same wire format as the unary call, but the request message is never sent
            held = [silent.stream_unary(REPLY)(_never()) for _ in range(4)]  # no deadline
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as other:
                reply = other.unary_unary(REPLY, common_pb2.Tensor.SerializeToString, common_pb2.Tensor.FromString)
                assert len((await reply(common_pb2.Tensor(shape=[3]), timeout=10)).data) == 3
            end = time.monotonic() + 30
            codes = set()
            for call in held:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(call, timeout=max(0.1, end - time.monotonic()))
                codes.add(info.value.code())
            assert codes == {grpc.StatusCode.UNAVAILABLE}
    finally:
        await running.server.stop(0)


@pytest.mark.parametrize(
    "key, value",
    [("keepalive_time_s", 0.0), ("keepalive_timeout_s", -1.0), ("max_connection_age_s", float("nan")),
     ("max_connection_age_s", 1e12), ("max_connection_age_grace_s", -0.5)],
)  # fmt: skip
def test_connection_settings_out_of_range_are_one_config_error_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"server.{key} must be"):
        ServerConfig(**{key: value})  # type: ignore[arg-type]


class _LosesItsEngine(RuntimeProbe):
    """The probe, whose engine is lost after its first health check (as the ray backend says
    once its cluster has not answered for ray.cluster_lost_timeout_s)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0

    async def healthy(self) -> bool:
        self.checks += 1
        if self.checks > 1:
            raise EngineLost("the Ray cluster at 'x' has not answered for 30 s")
        return True


async def test_a_lost_engine_drains_the_server_and_stops_it_with_the_error() -> None:
    """The server does not serve on with an engine it cannot reach again: it drains, closes its
    port and ends with the error, which `serve` turns into exit status 1 for the supervisor."""
    from services.runtime.server import _serve

    config = FacetConfig(server=ServerConfig(port=0, grace_period_s=1.0))
    with pytest.raises(EngineLost, match="has not answered"):
        await asyncio.wait_for(_serve(_LosesItsEngine(), config, None, []), timeout=60)
