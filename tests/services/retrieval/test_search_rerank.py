"""Retrieve, then rerank (`search(rerank=True)`): a real retrieval server whose model repository
holds the real embedding model and the tiny cross-encoder trained by `training.rerank.build`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pytest

import sdk
from tests.services.rerank.fixtures import RERANKER
from tests.services.retrieval.fixtures import SEARCH_RERANK_MAX_REQUEST_CHARS, new_collection
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration

# RAR-b-like candidates: short sentences, some on the query's topic.
DOCUMENTS = [
    "The Eiffel Tower is in Paris, the capital of France.",
    "Bananas are yellow when they are ripe.",
    "Paris has many museums, such as the Louvre.",
    "The tower was built for the 1889 World's Fair.",
    "Mount Everest is the highest mountain on Earth.",
    "A violin has four strings.",
    "France borders Spain, Italy and Germany.",
    "Coffee is made from roasted beans.",
]
QUERY = "Where is the Eiffel Tower?"


@pytest.fixture(scope="module")
def client(search_rerank_server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(search_rerank_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def notes(client: sdk.Client) -> str:
    return new_collection(client, DOCUMENTS)


def test_the_top_k_are_the_best_candidates_by_the_rerankers_probability(client: sdk.Client, notes: str) -> None:
    plain = client.search(notes, QUERY, top_k=6)
    every = client.search(notes, QUERY, top_k=6, rerank=True, candidates=6)  # all six candidates, reranked
    assert sorted(h.id for h in every) == sorted(h.id for h in plain)
    probabilities = [h.rerank_probability for h in every]
    assert all(p is not None and 0.0 <= p <= 1.0 for p in probabilities)
    assert probabilities == sorted(probabilities, reverse=True)  # type: ignore[type-var]
    rank_of = {h.id: i for i, h in enumerate(plain)}
    assert all(h.retrieval_rank == rank_of[h.id] for h in every)
    assert all(h.score == pytest.approx(next(p.score for p in plain if p.id == h.id)) for h in every)  # score stays the search's
    best = client.search(notes, QUERY, top_k=3, rerank=True, candidates=6)
    assert [h.id for h in best] == [h.id for h in every[:3]]
    assert all(h.rerank_probability is None and h.retrieval_rank is None for h in plain)


def test_by_default_the_reranker_reads_max_top_k_100_candidates(client: sdk.Client, notes: str) -> None:
    every = client.search(notes, QUERY, top_k=len(DOCUMENTS), rerank=True, candidates=len(DOCUMENTS))
    best = client.search(notes, QUERY, top_k=1, rerank=True)  # max(1, 100) candidates: every document here
    assert best[0].id == every[0].id and best[0].retrieval_rank == every[0].retrieval_rank


def test_documents_without_text_follow_the_reranked_ones_in_search_order(client: sdk.Client) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    client.upsert(name, ids=["a", "b"], texts=DOCUMENTS[:2])
    vector = client.embed([QUERY])[0]
    client.upsert(name, ids=["vector-only"], vectors=vector[None, :])
    hits = client.search(name, QUERY, top_k=3, rerank=True)
    assert [h.id for h in hits][-1] == "vector-only" and hits[-1].rerank_probability is None
    assert hits[-1].retrieval_rank == 0  # the nearest of all: the query's own vector
    assert all(h.rerank_probability is not None for h in hits[:2])


def test_bad_rerank_arguments_are_invalid_argument_naming_the_field(client: sdk.Client, notes: str) -> None:
    vector = client.embed([QUERY])[0]
    cases = [
        (dict(query=vector, rerank=True), "rerank needs a text query"),
        (dict(query=QUERY, top_k=5, rerank=True, candidates=4), r"candidates must be top_k \(5\)..1000 \(retrieval.max_top_k\), got 4"),
        (dict(query=QUERY, rerank=True, candidates=1001), r"candidates must be top_k \(10\)..1000"),
        (dict(query=QUERY, candidates=20), "candidates is read only with rerank=true"),
        (dict(query=QUERY, reranker=RERANKER), "reranker is read only with rerank=true"),
    ]
    for kwargs, message in cases:
        with pytest.raises(sdk.InvalidArgument, match=message):
            client.search(notes, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(sdk.InvalidArgument, match="candidates must be an integer >= 1|candidates"):
        client.search(notes, QUERY, rerank=True, candidates=0)


def test_an_unknown_reranker_is_not_found_and_names_the_served_ones(client: sdk.Client, notes: str) -> None:
    with pytest.raises(sdk.NotFound, match=f"reranker 'no-such-reranker' is not served; available: .*{RERANKER}"):
        client.search(notes, QUERY, rerank=True, reranker="no-such-reranker")


def test_candidates_over_a_rerank_limit_say_to_ask_for_fewer(client: sdk.Client) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    long_texts = [f"{DOCUMENTS[i % len(DOCUMENTS)]} " * 12 for i in range(8)]  # ~8 x 600 characters
    client.upsert(name, ids=[f"l{i}" for i in range(8)], texts=long_texts)
    with pytest.raises(sdk.InvalidArgument, match=rf"reranking 8 candidates: .*rerank.max_request_chars \({SEARCH_RERANK_MAX_REQUEST_CHARS}\): ask for fewer candidates"):
        client.search(name, QUERY, rerank=True)
    assert len(client.search(name, QUERY, top_k=2, rerank=True, candidates=2)) == 2


@pytest.mark.parametrize("retrieval_server", ["onnxruntime"], indirect=True)  # the repository check, not the backend
def test_without_a_reranker_in_the_repository_rerank_is_failed_precondition_naming_the_build(retrieval_address: str) -> None:
    with sdk.Client(retrieval_address) as plain_client:
        name = f"c-{uuid.uuid4().hex[:8]}"
        plain_client.create_collection(name)
        plain_client.upsert(name, ids=["a"], texts=DOCUMENTS[:1])
        with pytest.raises(sdk.FailedPrecondition, match="facet rerank build"):
            plain_client.search(name, QUERY, rerank=True)
        assert [h.id for h in plain_client.search(name, QUERY)] == ["a"]  # plain search is unaffected



def test_a_stored_text_the_reranker_cannot_read_follows_the_reranked_hits(client: sdk.Client) -> None:
    """A text of only characters the tokenizer drops (combining accents, private-use characters),
    stored with a vector: a search that retrieves it still reranks the others."""
    name = f"c-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    client.upsert(name, ids=["a", "b"], texts=DOCUMENTS[:2])
    vector = client.embed([QUERY])[0]
    client.upsert(name, ids=["accents", "private-use"], texts=["\u0301\u0301", "\ue000\ue001"], vectors=np.stack([vector, vector * 0.9 + 0.01]))
    hits = client.search(name, QUERY, top_k=4, rerank=True)
    assert {h.id for h in hits[:2]} == {"a", "b"} and all(h.rerank_probability is not None for h in hits[:2])
    assert [h.id for h in hits[2:]] == sorted((h.id for h in hits[2:]), key=lambda i: next(x.retrieval_rank or 0 for x in hits if x.id == i))
    assert {h.id for h in hits[2:]} == {"accents", "private-use"} and all(h.rerank_probability is None for h in hits[2:])


def test_a_query_the_reranker_cannot_read_is_refused_as_such_before_any_work(client: sdk.Client, notes: str) -> None:
    with pytest.raises(sdk.InvalidArgument, match=r"cannot read this query: query has 4097 characters; the limit is rerank.max_query_chars \(4096\)") as info:
        client.search(notes, "a" * 4097, rerank=True)
    assert "fewer candidates" not in info.value.message
    with pytest.raises(sdk.InvalidArgument, match="cannot read this query: query takes .* tokens.*no room is left for a document"):
        client.search(notes, "word " * 600, rerank=True)
    with pytest.raises(sdk.InvalidArgument, match=r"cannot read this query: query takes 122 tokens.*only 3 document tokens per window are left, under rerank.min_window_tokens \(16\).*at most 109 tokens"):
        client.search(notes, "paris " * 122, rerank=True)  # 3-token windows would score as noise
    assert client.search(notes, "a" * 4097)  # without rerank, the same query searches


def test_one_candidate_is_one_candidate(client: sdk.Client) -> None:
    name = f"c-{uuid.uuid4().hex[:8]}"
    client.create_collection(name)
    client.upsert(name, ids=["long"], texts=[DOCUMENTS[0] + " " + "word " * (SEARCH_RERANK_MAX_REQUEST_CHARS // 5)])
    with pytest.raises(sdk.InvalidArgument, match=r"reranking 1 candidate: .*rerank.max_request_chars \(2000\): this one stored text is over it alone"):
        client.search(name, QUERY, top_k=1, rerank=True)


def test_each_rpc_names_its_own_field_in_text_errors(client: sdk.Client, notes: str) -> None:
    """Search's text is the `query` (the SDK's argument, the request's oneof), with or without
    rerank; Embed's are texts[i], Upsert's documents[i].text, by their index in the request."""
    for rerank in (False, True):
        with pytest.raises(sdk.InvalidArgument, match=r"INVALID_ARGUMENT: query is blank") as blank:
            client.search(notes, " \u200b ", rerank=rerank)
        assert "text" not in blank.value.message.split(" is blank")[0]
    with pytest.raises(sdk.InvalidArgument, match=r"INVALID_ARGUMENT: query has no token the model reads"):
        client.search(notes, "\u0301")
    with pytest.raises(sdk.InvalidArgument, match=r"cannot read this query: query has no token the model reads"):
        client.search(notes, "\u0301", rerank=True)
    with pytest.raises(sdk.InvalidArgument, match=r"INVALID_ARGUMENT: texts\[1\] has no token the model reads"):
        client.embed(["fine", "\u0301"])
    with pytest.raises(sdk.InvalidArgument, match=r"INVALID_ARGUMENT: documents\[1\]\.text has no token the model reads"):
        client.upsert(notes, ids=["v", "w", "x"], texts=["fine", "\u0301\u0301", "\u0301"])
