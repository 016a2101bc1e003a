"""An Upsert that returned OK survives `kill -9` of the server."""

from __future__ import annotations

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
    time.sleep(2.5)  # several index saves happened; writes are in flight
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
