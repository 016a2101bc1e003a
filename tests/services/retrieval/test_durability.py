"""What survives a crash or a damaged disk: an Upsert that returned OK survives `kill -9`; the saved
index is loaded on start (not rebuilt), saved on the interval and on shutdown; a lost or damaged
database refuses to start; a full database is RESOURCE_EXHAUSTED while reads go on."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import sdk

pytestmark = pytest.mark.integration


def _vector(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(384).astype(np.float32)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_acknowledged_upserts_survive_kill_9(start_server, tmp_path, index_type: str) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir, env={"FACET_RETRIEVAL_INDEX_SAVE_INTERVAL_S": "0.3"})
    with sdk.Client(server.address) as client:
        client.create_collection("durable", index_type=index_type)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        with sdk.Client(server.address, timeout_s=5) as client:
            i = 0
            while not stop.is_set():
                ids = [f"w{worker}-{i}-{j}" for j in range(4)]
                texts = [f"note {worker} {i} {j}" for j in range(4)]
                try:
                    if i % 2 == 0:  # text documents, embedded by the service
                        client.upsert("durable", ids=ids, texts=texts, metadata=[{"w": worker}] * 4)
                    else:
                        seeds = [worker * 1_000_000 + i * 4 + j for j in range(4)]
                        client.upsert("durable", ids=ids, vectors=np.stack([_vector(s) for s in seeds]))
                except sdk.FacetError:
                    return  # the server died under this call: not acknowledged
                with lock:
                    acknowledged.extend(ids)
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    # several index saves happened while writes are in flight (the manifest's generation moves on)
    _poll(lambda: _manifest_generation(data_dir, "durable") >= 4 and len(acknowledged) > 40, 120, "index saves during writes")
    server.kill()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) > 20, "too few upserts before the kill to prove anything"

    restarted = start_server(data_dir=data_dir)
    with sdk.Client(restarted.address) as client:
        stored = {d.id for i in range(0, len(acknowledged), 1024) for d in client.get("durable", acknowledged[i : i + 1024])}
        missing = [i for i in acknowledged if i not in stored]
        assert not missing, f"{len(missing)} acknowledged ids lost after kill -9, e.g. {missing[:5]}"
        [info] = [c for c in client.list_collections() if c.name == "durable"]
        assert info.document_count >= len(acknowledged)
        # the index agrees with SQLite: the last acknowledged vector-upsert is found by its own vector
        last_vector_id = next(i for i in reversed(acknowledged) if int(i.split("-")[1]) % 2 == 1)
        worker, i, j = (int(x) for x in last_vector_id[1:].split("-"))
        hits = client.search("durable", _vector(worker * 1_000_000 + i * 4 + j), top_k=1)
        assert hits[0].id == last_vector_id
        # and text documents are searchable too
        last_text_id = next(i for i in reversed(acknowledged) if int(i.split("-")[1]) % 2 == 0)
        worker, i, j = (int(x) for x in last_text_id[1:].split("-"))
        assert last_text_id in {h.id for h in client.search("durable", f"note {worker} {i} {j}", top_k=5)}


# -- the saved index is loaded on start, saved on the interval and on shutdown (item 22) -------------


def _since(server, offset: int, event: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """`event`s written after the log had `offset` characters (one run of the server)."""
    lines = server.log()[offset:].splitlines()
    return [e for line in lines if (e := _json(line)) is not None and e.get("event") == event]


def _json(line: str) -> dict | None:  # type: ignore[type-arg]
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _manifest_generation(data_dir, collection: str) -> int:  # type: ignore[no-untyped-def]
    path = data_dir / "retrieval" / "indexes" / f"{collection}.json"
    try:
        return int(json.loads(path.read_text())["generation"])
    except (OSError, ValueError, KeyError):
        return -1


def _poll(condition, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_the_index_is_saved_on_the_interval_and_loaded_after_kill_9(start_server, tmp_path, index_type: str) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir, env={"FACET_RETRIEVAL_INDEX_SAVE_INTERVAL_S": "0.2"})
    vectors = np.stack([_vector(i) for i in range(200)])
    with sdk.Client(server.address) as client:
        client.create_collection("c", index_type=index_type)
        for start in range(0, 200, 50):  # four writes: generation 4
            client.upsert("c", ids=[f"d{i}" for i in range(start, start + 50)], vectors=vectors[start : start + 50])
    _poll(lambda: _manifest_generation(data_dir, "c") == 4, 30, "the interval's save of generation 4")
    server.kill()  # no shutdown save: what is loaded next is what the interval saved
    offset = len(server.log())
    restarted = start_server(data_dir=data_dir)
    assert _since(restarted, offset, "index_rebuilt") == []
    [loaded] = _since(restarted, offset, "index_loaded")
    assert (loaded["collection"], loaded["vectors"], loaded["applied_changes"]) == ("c", 200, 0)
    with sdk.Client(restarted.address) as client:
        assert [client.search("c", vectors[i], top_k=1)[0].id for i in range(0, 200, 20)] == [f"d{i}" for i in range(0, 200, 20)]


def test_the_index_is_saved_on_shutdown_and_a_crash_applies_only_later_changes(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    never = {"FACET_RETRIEVAL_INDEX_SAVE_INTERVAL_S": "3600"}  # only the shutdown saves
    server = start_server(data_dir=data_dir, env=never)
    vectors = np.stack([_vector(i) for i in range(300)])
    with sdk.Client(server.address) as client:
        client.create_collection("c", index_type="hnsw")
        client.upsert("c", ids=[f"d{i}" for i in range(200)], vectors=vectors[:200])
    assert _manifest_generation(data_dir, "c") == -1  # not saved yet
    assert server.terminate(30) == 0
    assert _manifest_generation(data_dir, "c") == 1  # saved on shutdown

    offset = len(server.log())
    second = start_server(data_dir=data_dir, env=never)
    assert [e["applied_changes"] for e in _since(second, offset, "index_loaded")] == [0]
    with sdk.Client(second.address) as client:
        client.upsert("c", ids=[f"d{i}" for i in range(200, 300)], vectors=vectors[200:])
        client.delete("c", ["d0", "d1"])
    second.kill()

    offset = len(second.log())
    third = start_server(data_dir=data_dir, env=never)
    assert _since(third, offset, "index_rebuilt") == []
    [loaded] = _since(third, offset, "index_loaded")
    assert loaded["applied_changes"] == 100 + 2 and loaded["vectors"] == 298
    with sdk.Client(third.address) as client:
        assert client.search("c", vectors[250], top_k=1)[0].id == "d250"
        assert "d0" not in {h.id for h in client.search("c", vectors[0], top_k=5)}


# -- a missing or damaged database is never served as empty (item 16) -------------------------------


@pytest.mark.parametrize("damage", ["deleted", "zero bytes", "garbage page"])
def test_a_lost_or_damaged_database_refuses_to_start_naming_the_file(start_server, tmp_path, damage: str) -> None:  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir)
    with sdk.Client(server.address) as client:
        client.create_collection("c")
        client.upsert("c", ids=[f"d{i}" for i in range(300)], vectors=np.stack([_vector(i) for i in range(300)]))
    assert server.terminate(30) == 0
    db = data_dir / "retrieval" / "retrieval.sqlite3"
    if damage == "deleted":
        db.unlink()
    elif damage == "zero bytes":
        db.write_bytes(b"")
    else:
        with db.open("r+b") as f:
            f.seek(4096 * (db.stat().st_size // 4096 // 2))
            f.write(np.random.default_rng(0).bytes(4096))
    offset = len(server.log())
    failed = start_server(data_dir=data_dir, wait=False)
    assert failed.wait(120) == 1
    run = failed.log()[offset:]
    assert f"cannot start: {db}: " in run
    assert not any(e.get("event") == "serving" for line in run.splitlines() if (e := _json(line)))


# -- storage failures have a status (item 17) ------------------------------------------------------


def test_a_full_database_is_resource_exhausted_health_stays_serving_and_shutdown_is_clean(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    data_dir = tmp_path / "data"
    server = start_server(data_dir=data_dir, env={"FACET_RETRIEVAL_MAX_DATABASE_BYTES": "2000000"})
    db = data_dir / "retrieval" / "retrieval.sqlite3"
    acknowledged: list[str] = []
    with sdk.Client(server.address) as client:
        client.create_collection("c")
        with pytest.raises(sdk.ResourceExhausted) as full:
            for batch in range(100):
                ids = [f"b{batch}-{j}" for j in range(100)]
                client.upsert("c", ids=ids, vectors=np.stack([_vector(batch * 100 + j) for j in range(100)]))
                acknowledged += ids
        assert str(db) in full.value.message and "no space left" in full.value.message
        assert len(acknowledged) >= 300
        with grpc.insecure_channel(server.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # reads keep working
        assert len(client.get("c", acknowledged[:100])) == 100
        assert client.search("c", _vector(5), top_k=1)[0].id == "b0-5"
        # a new collection: written when a page has room, else the same clear status, never INTERNAL
        try:
            client.create_collection("d")
        except sdk.ResourceExhausted as exc:
            assert str(db) in exc.message
    assert server.terminate(30) == 0
    assert "cannot start" not in server.log()
    restarted = start_server(data_dir=data_dir)
    with sdk.Client(restarted.address) as client:
        assert len(client.get("c", acknowledged[-100:])) == 100
