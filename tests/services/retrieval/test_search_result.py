"""What `search` returns: a list of hits that also says which reranker ordered them
(`SearchResult.reranker`), through a real retrieval server whose model repository holds the
real embedding model and the tiny cross-encoders trained by `training.rerank.build`."""

from __future__ import annotations

import asyncio
import copy
import pickle
import uuid
from collections.abc import Iterator

import pytest

import sdk
from tests.services.rerank.fixtures import RERANKER, SECOND_RERANKER
from tests.services.retrieval.fixtures import new_collection
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration

DOCUMENTS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Bananas are yellow when they are ripe.",
    "Paris has many museums, such as the Louvre.",
    "Mount Everest is the highest mountain on Earth.",
]
QUERY = "Where is the Eiffel Tower?"


@pytest.fixture(scope="module")
def client(search_rerank_server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(search_rerank_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def notes(client: sdk.Client) -> str:
    return new_collection(client, DOCUMENTS)


def test_a_reranked_search_names_the_reranker_that_ordered_its_hits(client: sdk.Client, notes: str) -> None:
    default = client.search(notes, QUERY, top_k=3, rerank=True)
    assert default.reranker == RERANKER  # reranker=None: the service's default (rerank.model)
    named = client.search(notes, QUERY, top_k=3, rerank=True, reranker=SECOND_RERANKER)
    assert named.reranker == SECOND_RERANKER
    assert all(h.rerank_probability is not None for h in (*default, *named))


def test_a_plain_search_has_no_reranker(client: sdk.Client, notes: str) -> None:
    assert client.search(notes, QUERY, top_k=2).reranker is None


def test_the_result_is_still_a_list_of_hits(client: sdk.Client, notes: str) -> None:
    hits = client.search(notes, QUERY, top_k=3, rerank=True)
    ids = [h.id for h in hits]
    assert isinstance(hits, list) and isinstance(hits, sdk.SearchResult) and len(hits) == 3
    assert all(isinstance(h, sdk.Hit) for h in hits)
    assert hits == list(hits) and hits[0].id == ids[0] and [h.id for h in hits[1:]] == ids[1:]
    assert client.search(notes, QUERY, top_k=3, filter={"lang": "nowhere"}) == []
    # copies and pickles (e.g. to a worker process) keep the reranker
    for twin in (copy.copy(hits), copy.deepcopy(hits), pickle.loads(pickle.dumps(hits))):
        assert twin.reranker == RERANKER and [h.id for h in twin] == ids


def test_the_async_client_returns_the_same(search_rerank_server: ServerProcess, notes: str) -> None:
    async def main() -> tuple[sdk.SearchResult, sdk.SearchResult]:
        async with sdk.AsyncClient(search_rerank_server.address) as c:
            return (
                await c.search(notes, QUERY, top_k=2, rerank=True, reranker=SECOND_RERANKER),
                await c.search(notes, QUERY, top_k=2),
            )

    reranked, plain = asyncio.run(main())
    assert reranked.reranker == SECOND_RERANKER and len(reranked) == 2
    assert plain.reranker is None and len(plain) == 2


def test_metadata_integers_come_back_as_int(client: sdk.Client) -> None:
    name = f"m-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    metadata = {"year": 2024, "big": 2**53, "neg": -7, "ratio": 0.25, "tags": [1, 2.5, {"n": 3}], "ok": True, "none": None}
    client.upsert(name, ids=["a"], texts=["The Eiffel Tower is in Paris."], metadata=[metadata])
    [stored] = client.get(name, ["a"])
    [hit] = client.search(name, QUERY, top_k=1, rerank=True)
    for got in (stored.metadata, hit.metadata):
        assert got == metadata
        assert [type(got[k]) for k in metadata] == [int, int, int, float, list, bool, type(None)]
        assert [type(v) for v in got["tags"]] == [int, float, dict] and type(got["tags"][2]["n"]) is int
