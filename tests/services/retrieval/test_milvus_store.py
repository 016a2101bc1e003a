"""The retrieval service on the Milvus store, where it differs from one process on one disk:
several service processes sharing one Milvus behave as one service; Milvus going away gives
UNAVAILABLE naming its URI and NOT_SERVING until it returns; acknowledged upserts survive
`kill -9` of the service and of the Milvus server mid-stream. Real service processes, a real
Milvus 2.3 standalone (the session's, or one of the test's own where the test stops it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sdk
from deploy.milvus import LocalMilvus
from services.runtime.config import ConfigError, load_config
from tests.services.retrieval.fixtures import milvus_database
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration

NO_RETRY = sdk.RetryPolicy(max_attempts=1)


def _vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(384).astype(np.float32)


def _milvus_env(uri: str, database: str = "default") -> dict[str, str]:
    return {"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": uri, "FACET_RETRIEVAL_MILVUS_DATABASE": database,
            "FACET_RETRIEVAL_MILVUS_TIMEOUT_S": "3"}  # fmt: skip


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=5).status)


def _poll(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def shared_database(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    uri = request.getfixturevalue("milvus_uri")
    with milvus_database(uri) as database:
        yield uri, database


def test_two_services_on_one_milvus_behave_as_one(start_server, shared_database: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    uri, database = shared_database
    first, second = (start_server(env=_milvus_env(uri, database)) for _ in range(2))
    with sdk.Client(first.address) as one, sdk.Client(second.address) as two:
        one.create_collection("shared")
        with pytest.raises(sdk.AlreadyExists):
            two.create_collection("shared")
        one.upsert("shared", ids=["paris", "berlin"], texts=["Paris is the capital of France.", "Berlin is in Germany."],
                   metadata=[{"lang": "en"}, {"lang": "de"}])  # fmt: skip
        # a write acknowledged by one is searchable through the other, at once (Strong consistency)
        assert two.search("shared", "the French capital", top_k=1)[0].id == "paris"
        assert [h.id for h in two.search("shared", "a capital", filter={"lang": "de"})] == ["berlin"]
        two.upsert("shared", ids=["paris"], texts=["Paris hosted the 2024 Olympic Games."])
        [doc] = one.get("shared", ["paris"])
        assert doc.text == "Paris hosted the 2024 Olympic Games."
        assert [c.document_count for c in one.list_collections() if c.name == "shared"] == [2]
        # a collection deleted through one is gone from both
        assert two.delete_collection("shared") == 2
        assert "shared" not in [c.name for c in one.list_collections()]
        with pytest.raises(sdk.NotFound, match="collection 'shared' does not exist"):
            one.search("shared", "anything")
        one.create_collection("shared", dimension=3, metric="l2")  # re-created with other settings: both see them
        assert two.upsert("shared", ids=["v"], vectors=np.ones((1, 3))).upserted == 1
        with pytest.raises(sdk.InvalidArgument, match="collection .shared. takes 3"):
            two.upsert("shared", ids=["w"], vectors=np.ones((1, 4)))


def test_milvus_going_away_is_unavailable_naming_the_uri_and_not_serving_until_it_returns(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    milvus = LocalMilvus(tmp_path / "milvus").start()
    try:
        server = start_server(env=_milvus_env(milvus.uri))
        with sdk.Client(server.address, retry=NO_RETRY) as client:
            client.create_collection("notes")
            client.upsert("notes", ids=["a"], vectors=_vector(0)[None])
            milvus.stop()
            with pytest.raises(sdk.Unavailable, match=f"Milvus at {milvus.uri}"):
                client.search("notes", _vector(0))
            with pytest.raises(sdk.Unavailable, match=f"Milvus at {milvus.uri}"):
                client.list_collections()
            _poll(lambda: _health(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING, 30, "NOT_SERVING")
            milvus.start()
            # a restarted Milvus reloads its collections for tens of seconds: the service says
            # SERVING only once they are loaded, so calls then succeed at once, nothing lost
            _poll(lambda: _health(server.address) == health_pb2.HealthCheckResponse.SERVING, 180, "SERVING again")
            assert client.search("notes", _vector(0), top_k=1)[0].id == "a"
            assert [d.id for d in client.get("notes", ["a"])] == ["a"]
        assert server.alive()
    finally:
        milvus.stop()


def test_a_service_started_while_milvus_is_down_is_not_serving_until_it_comes_up(start_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    milvus = LocalMilvus(tmp_path / "milvus")  # its port is chosen, nothing listens yet
    try:
        server = start_server(env=_milvus_env(milvus.uri), wait=False).wait_for_port()
        assert _health(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING  # from the start, not after a check
        with sdk.Client(server.address, retry=NO_RETRY) as client, pytest.raises(sdk.Unavailable, match=f"Milvus at {milvus.uri}"):
            client.create_collection("early")
        milvus.start()
        _poll(lambda: _health(server.address) == health_pb2.HealthCheckResponse.SERVING, 60, "SERVING")
        with sdk.Client(server.address) as client:
            client.create_collection("early")
            assert [c.name for c in client.list_collections()] == ["early"]
    finally:
        milvus.stop()


def _writer(address: str, acknowledged: list[str], stop: threading.Event, worker: int) -> None:
    """Upserts batches of 4 (vectors) until stopped or a call fails; records what returned OK."""
    with sdk.Client(address, timeout_s=5, retry=NO_RETRY) as client:
        i = 0
        while not stop.is_set():
            ids = [f"w{worker}-{i}-{j}" for j in range(4)]
            try:
                client.upsert("durable", ids=ids, vectors=np.stack([_vector(worker * 1_000_000 + i * 4 + j) for j in range(4)]))
            except sdk.FacetError:
                return  # failed under this call: not acknowledged
            acknowledged.extend(ids)
            i += 1


def _all_present(address: str, acknowledged: list[str]) -> None:
    with sdk.Client(address) as client:
        stored = {d.id for i in range(0, len(acknowledged), 1024) for d in client.get("durable", acknowledged[i : i + 1024])}
        missing = [i for i in acknowledged if i not in stored]
        assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {missing[:5]}"
        worker, i, j = (int(x) for x in acknowledged[-1][1:].split("-"))
        assert client.search("durable", _vector(worker * 1_000_000 + i * 4 + j), top_k=1)[0].id == acknowledged[-1]


@pytest.mark.parametrize("killed", ["the service", "Milvus"])
def test_acknowledged_upserts_survive_kill_9_mid_stream(start_server, tmp_path: Path, killed: str) -> None:  # type: ignore[no-untyped-def]
    milvus = LocalMilvus(tmp_path / "milvus").start()
    try:
        server = start_server(env=_milvus_env(milvus.uri))
        with sdk.Client(server.address) as client:
            client.create_collection("durable", index_type="hnsw")
        acknowledged: list[str] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_writer, args=(server.address, acknowledged, stop, w)) for w in range(3)]
        for t in threads:
            t.start()
        _poll(lambda: len(acknowledged) > 120, 120, "upserts in flight")
        if killed == "Milvus":
            milvus.kill()
        else:
            server.kill()
        stop.set()
        for t in threads:
            t.join()
        if killed == "Milvus":
            milvus.start()
            # SERVING once Milvus has loaded the collection again (see above): reads succeed at once
            _poll(lambda: _health(server.address) == health_pb2.HealthCheckResponse.SERVING, 180, "SERVING after Milvus restarted")
            _all_present(server.address, acknowledged)
        else:
            _all_present(start_server(env=_milvus_env(milvus.uri)).address, acknowledged)
    finally:
        milvus.stop()


def test_dimensions_beyond_milvus_limit_are_refused_naming_it(start_server, shared_database: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    server: ServerProcess = start_server(env=_milvus_env(*shared_database))
    with sdk.Client(server.address) as client, pytest.raises(sdk.InvalidArgument, match=r"dimension must be 1\.\.32768 on the Milvus store"):
        client.create_collection("wide", dimension=32769)


def test_the_milvus_store_needs_a_uri_and_valid_settings() -> None:
    with pytest.raises(ConfigError, match="retrieval.milvus_uri must be set with retrieval.store = milvus"):
        load_config(env={"FACET_RETRIEVAL_STORE": "milvus"})
    with pytest.raises(ConfigError, match="retrieval.milvus_uri must start with http://, https:// or tcp://, got 'localhost:19530'"):
        load_config(env={"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": "localhost:19530"})
    with pytest.raises(ConfigError, match="retrieval.store must be one of embedded, milvus"):
        load_config(env={"FACET_RETRIEVAL_STORE": "postgres"})
    with pytest.raises(ConfigError, match="retrieval.milvus_consistency must be one of Strong"):
        load_config(env={"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": "http://m:19530", "FACET_RETRIEVAL_MILVUS_CONSISTENCY": "strong"})
    config = load_config(env={"FACET_RETRIEVAL_STORE": "milvus", "FACET_RETRIEVAL_MILVUS_URI": "http://m:19530", "FACET_RETRIEVAL_MILVUS_TOKEN": "root:secret"})
    assert "secret" not in repr(config) and config.to_dict()["retrieval"]["milvus_token"] == "***"


def test_metadata_beyond_what_a_milvus_json_field_holds_is_invalid_argument_not_unavailable(start_server, shared_database: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    """Control characters take 6 bytes each as JSON: metadata under retrieval.max_metadata_bytes can
    exceed Milvus' 64 KiB JSON field. Refused before Milvus sees it, as the caller's error (an
    UNAVAILABLE would be retried by the SDK as an outage)."""
    server = start_server(env=_milvus_env(*shared_database))
    with sdk.Client(server.address, retry=NO_RETRY) as client:
        client.create_collection("meta")
        with pytest.raises(sdk.InvalidArgument, match=r"documents\[0\]\.metadata is \d+ bytes as JSON .*at most 65536"):
            client.upsert("meta", ids=["big"], vectors=_vector(0)[None], metadata=[{"k": "\x01" * 11_000}])
        assert client.get("meta", ["big"]) == []


def test_a_local_milvus_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    """Milvus would move to another port, saying so only in its log, and clients would reach
    whatever holds the one they were given."""
    import socket

    from deploy.milvus import MilvusNotStarted

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(MilvusNotStarted, match=f"127.0.0.1:{port}: the port is in use .*FACET_MILVUS_PORT"):
            LocalMilvus(tmp_path / "milvus", port=port).start()
    assert not (tmp_path / "milvus" / "bin").exists()  # refused before anything was unpacked or run


def test_a_local_milvus_sets_the_yaml_keys_it_is_given_and_refuses_unknown_ones(tmp_path: Path) -> None:
    """`LocalMilvus(settings=...)` edits the package's milvus.yaml in place: the key in its own
    section (not a same-named key of another section), the comment kept; a key the file does not
    have is an error, not a setting silently ignored."""
    main = tmp_path / "milvus.yaml"
    main.write_text(
        "proxy:\n  timeTickInterval: 200 # ms, the interval\n  port: 19530\n\n"
        "queryCoord:\n  # the checker\n  checkInterval: 1000\n  timeTickInterval: 7\n"
    )
    LocalMilvus(tmp_path, settings={"proxy.timeTickInterval": 50, "queryCoord.checkInterval": 100})._apply_settings(main)
    assert main.read_text() == (
        "proxy:\n  timeTickInterval: 50 # ms, the interval\n  port: 19530\n\n"
        "queryCoord:\n  # the checker\n  checkInterval: 100\n  timeTickInterval: 7\n"
    )
    for unknown in ("proxy.checkInterval", "queryNode.checkInterval", "timeTickInterval"):
        with pytest.raises(ValueError, match=f"no key '{unknown}'"):
            LocalMilvus(tmp_path, settings={unknown: 1})._apply_settings(main)
