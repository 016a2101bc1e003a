"""A real full disk under a running retrieval server (issue #12, item 17): its store folder on a
4 MB tmpfs, mounted in a user + mount namespace (`unshare -Urm`, no privileges needed) that only
the server sees; the test fills it through /proc/<pid>/root. Upsert gets RESOURCE_EXHAUSTED naming
the database, health stays SERVING, reads work, writes resume once space is freed, and SIGTERM on
the full disk exits 0 with a clear line about the index it could not save."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sdk
from deploy.service_process import CHECKOUT, wait_serving

pytestmark = pytest.mark.integration

MOUNT = 'mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"'


def _unshare_works() -> str | None:
    try:
        done = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


@pytest.fixture
def server_on_a_tiny_disk(model_repository, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path, Path, Path]]:  # type: ignore[no-untyped-def]
    """(process, address, its store folder, that folder as seen from here (through /proc), its log)."""
    why = _unshare_works()
    if why is not None:
        pytest.skip(f"user namespaces are not available here (unshare -Urm: {why}); the SQLite-quota tests cover the same statuses")
    data_dir = tmp_path / "data"
    store_dir = data_dir / "retrieval"
    store_dir.mkdir(parents=True)
    log_path, port_file = tmp_path / "server.log", tmp_path / "port.json"
    env = {
        **os.environ,
        "FACET_MODEL_REPOSITORY": str(model_repository.root),
        "FACET_DATA_DIR": str(data_dir),
        "FACET_API_KEY": "",
        "FACET_SERVER_HOST": "127.0.0.1",
        "FACET_SERVER_PORT": "0",
        "FACET_SERVER_METRICS_PORT": "-1",
        "FACET_RETRIEVAL_INDEX_SAVE_INTERVAL_S": "3600",
    }
    command = ["unshare", "-Urm", "sh", "-c", MOUNT, "sh", str(store_dir),
               sys.executable, "-m", "services.retrieval", "--port-file", str(port_file)]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env=env, cwd=CHECKOUT, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            assert process.poll() is None, f"the server exited: {log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the server did not bind its port"
            time.sleep(0.05)
        address = f"127.0.0.1:{json.loads(port_file.read_text())['port']}"
        assert wait_serving(address, "facet.v1.Retrieval", 120, alive=lambda: process.poll() is None)
        yield process, address, store_dir, Path(f"/proc/{process.pid}/root") / store_dir.relative_to("/"), log_path
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _fill(folder: Path) -> Path:
    """Write a file in `folder` until its file system is full."""
    filler = folder / "filler"
    with filler.open("ab", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with pytest.raises(OSError) as full:
            f.write(b"\0" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)


def test_a_full_disk_is_resource_exhausted_reads_work_and_sigterm_exits_cleanly(server_on_a_tiny_disk) -> None:  # type: ignore[no-untyped-def]
    process, address, server_store_dir, store_dir, log_path = server_on_a_tiny_disk
    database = str(server_store_dir / "retrieval.sqlite3")
    vectors = _vectors(100, 0)
    with sdk.Client(address) as client:
        client.create_collection("c")
        client.upsert("c", ids=[f"d{i}" for i in range(100)], vectors=vectors)
        filler = _fill(store_dir)

        with pytest.raises(sdk.ResourceExhausted) as full:
            client.upsert("c", ids=[f"x{i}" for i in range(300)], vectors=_vectors(300, 1))
        assert database in full.value.message and "no space left" in full.value.message
        with pytest.raises(sdk.ResourceExhausted) as full:  # the WAL has no free frames to reuse: a new one is needed
            client.create_collection("d")
        assert database in full.value.message
        assert [c.name for c in client.list_collections()] == ["c"]
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert len(client.get("c", [f"d{i}" for i in range(100)])) == 100
        assert client.search("c", vectors[42], top_k=1)[0].id == "d42"

        filler.unlink()  # space again: writes work without a restart
        client.upsert("c", ids=[f"y{i}" for i in range(10)], vectors=_vectors(10, 2))
        assert client.get("c", ["y9"])[0].id == "y9"
        _fill(store_dir)

    process.send_signal(signal.SIGTERM)  # the index of "c" changed and cannot be saved now
    assert process.wait(60) == 0
    log = log_path.read_text()
    assert "cannot start" not in log
    [entry] = [e for line in log.splitlines() if (e := _json(line)) and e.get("event") == "index_not_saved"]
    assert entry["collection"] == "c" and "no data is lost" in entry["msg"]
    assert f"{server_store_dir}/indexes/c." in entry["msg"] and "no space left" in entry["msg"]  # names the file


def _json(line: str) -> dict | None:  # type: ignore[type-arg]
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
