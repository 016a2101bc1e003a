"""The SDK's `get_reranker` / `list_rerankers` against a real rerank server (ONNX Runtime) on the
tiny cross-encoders trained by `training.rerank.build`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

import sdk
from tests.services.rerank.fixtures import RERANKER
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(start_rerank_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_rerank_server()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(rerank=server.address) as c:
        yield c


def test_get_reranker_without_a_name_is_the_default_reranker(client: sdk.Client, server: ServerProcess) -> None:
    default = client.get_reranker()
    assert default.name == RERANKER and default.default
    assert default == client.get_reranker("") == client.get_reranker(RERANKER)

    async def main() -> sdk.RerankerInfo:
        async with sdk.AsyncClient(rerank=server.address) as c:
            return await c.get_reranker()

    assert asyncio.run(main()) == default
