"""The SDK's `get_reranker` / `list_rerankers` against a real rerank server (ONNX Runtime) on the
tiny cross-encoders trained by `training.rerank.build`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

import sdk
from services.model_repository import ModelRepository
from services.rerank.catalog import Prop
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


def _integers(value: object, path: str = "") -> dict[str, int]:
    """Every int in a JSON-like value, by its path."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int):
        return {path: value}
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return {k: v for key, item in items for k, v in _integers(item, f"{path}[{key!r}]").items()}


def test_integers_of_the_training_record_come_back_as_int(client: sdk.Client, rerank_repository: ModelRepository) -> None:
    info = client.get_reranker(RERANKER)
    properties = rerank_repository.get(RERANKER).properties
    nothing: dict[str, object] = {}
    for field, prop, absent in (
        ("training", Prop.TRAINING, nothing),
        ("training_data", Prop.TRAINING_DATA, []),
        ("metrics", Prop.METRICS, nothing),
        ("calibration", Prop.CALIBRATION, nothing),
    ):
        recorded, served = properties.get(prop, absent), getattr(info, field)
        assert served == recorded, field  # the same values (10.0 == 10) ...
        ints = _integers(served)  # ... and each recorded integer is an int, not a float:
        assert {path: ints.get(path, "not an int") for path in _integers(recorded)} == _integers(recorded), field
    assert _integers(info.training), "the test model's training record has integers (steps, seed)"
