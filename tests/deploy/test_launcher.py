"""`facet up`: supervised service processes, restart on crash, clean stop."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import sdk
from deploy.launcher import wait_serving
from services.model_repository import ModelRepository

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _read_until(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> str:
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if needle in line:
                return seen
        if proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not printed within {timeout_s}s; output so far:\n{seen}")


def _up_env(model_repository: ModelRepository, data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "FACET_MODEL_REPOSITORY": str(model_repository.root),
        "FACET_DATA_DIR": str(data_dir),
        "FACET_RETRIEVAL_PORT": str(port),
        "FACET_SERVER_METRICS_PORT": "0",
    }


def test_up_serves_restarts_a_crashed_service_and_stops_cleanly(model_repository: ModelRepository, tmp_path: Path) -> None:
    port = _free_port()
    env = _up_env(model_repository, tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _read_until(proc, f"SERVING on localhost:{port}", 120)
        with sdk.Client(f"localhost:{port}") as client:
            assert client.embed(["hello"]).shape == (1, 384)
        [child] = _children(proc.pid)
        os.kill(child, signal.SIGKILL)
        _read_until(proc, "restarting", 10)
        deadline = time.monotonic() + 60  # the supervisor's backoff, then a new process
        while (children := _children(proc.pid)) in ([], [child]):
            assert time.monotonic() < deadline, "the launcher did not start the service again"
            time.sleep(0.05)
        [new_child] = children
        assert wait_serving(f"localhost:{port}", "facet.v1.Retrieval", 60)
        assert _children(proc.pid) == [new_child]
        with sdk.Client(f"localhost:{port}") as client:
            assert client.embed(["back again"]).shape == (1, 384)
        assert (tmp_path / "logs" / "retrieval.log").stat().st_size > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert _children(proc.pid) == []
        with pytest.raises(ProcessLookupError):
            os.kill(new_child, 0)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_rejects_unknown_services() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval,teleport"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "teleport" in result.stderr


def test_up_reports_a_service_that_cannot_start(model_repository: ModelRepository, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _up_env(model_repository, tmp_path, port)
        result = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert "did not become SERVING" in result.stderr and f"cannot bind 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("cannot bind") == 1, result.stderr  # the service's reason once, not its log twice


def test_bad_configuration_is_one_clear_line() -> None:
    env = {**os.environ, "FACET_BATCHING_MAX_BATCH_SIZE": "zero"}
    result = subprocess.run([sys.executable, "-m", "deploy.cli", "models", "list"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "facet: bad configuration: FACET_BATCHING_MAX_BATCH_SIZE: cannot read 'zero' as int"


def test_up_with_the_demo_exercises_the_sae_service(sae_repository: ModelRepository, tmp_path: Path) -> None:
    """`make run`'s path for the SAE service: `facet up --demo --exit-after-demo` serves the SAEs
    the repository holds (no default build when it has some) and runs the SDK demo against them."""
    port = _free_port()
    env = {**_up_env(sae_repository, tmp_path, _free_port()), "FACET_SAE_PORT": str(port)}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "sae", "--demo", "--exit-after-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"SERVING on localhost:{port}" in out and "building" not in out
    assert "SAEs:" in out and "smollm2-135m-l6-batchtopk-w256" in out
    assert "decomposes into" in out and "novel / " in out


def test_up_with_the_demo_exercises_the_nextframe_service(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`make run`'s path for next-frame: with every dataset's model in the repository nothing is
    built; the demo lists the models, streams a rollout from each and estimates its constant."""
    out = _up_nextframe_demo(nextframe_repository, tmp_path, "onnxruntime", {}).stdout
    assert "building" not in out and "gravity ≈" in out and "moon mass ≈" in out
    assert len(list((tmp_path / "facet-demo").glob("*.gif"))) == 6


def _up_nextframe_demo(repository: ModelRepository, tmp_path: Path, backend: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`facet up --services nextframe --backend <backend> --demo --exit-after-demo`, asserted to succeed."""
    port = _free_port()
    env = {**_up_env(repository, tmp_path, _free_port()), "FACET_NEXTFRAME_PORT": str(port), "TMPDIR": str(tmp_path), **env}
    command = [sys.executable, "-m", "deploy.cli", "up", "--services", "nextframe", "--backend", backend, "--demo", "--exit-after-demo"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"SERVING on localhost:{port}" in result.stdout
    assert result.stdout.count("rollout MSE") == 6  # the same SDK demo: a rollout from every model
    return result


def test_up_on_the_triton_backend_runs_the_demo(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --backend triton`: a real local tritonserver serves the repository, the service
    calls it, and the same SDK demo runs; Triton stops with the services."""
    triton_port = _free_port()
    result = _up_nextframe_demo(nextframe_repository, tmp_path, "triton", {"FACET_TRITON_URL": f"127.0.0.1:{triton_port}"})
    assert f"starting tritonserver for {len(nextframe_repository.models())} models on 127.0.0.1:{triton_port}" in result.stdout
    log = (tmp_path / "triton" / "tritonserver.log").read_text()
    assert "successfully loaded 'nextframe-pendulum'" in log
    with pytest.raises(OSError):  # stopped with the services
        socket.create_connection(("127.0.0.1", triton_port), timeout=1).close()


def test_up_on_the_ray_backend_runs_the_demo(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --backend ray`: a real local Ray head, every frame model deployed as a Ray Serve
    application by the service, the same SDK demo; the head stops with the services."""
    ray_port = _free_port()
    env = {"FACET_RAY_ADDRESS": f"127.0.0.1:{ray_port}", "RAY_DASHBOARD_PORT": str(_free_port())}
    result = _up_nextframe_demo(nextframe_repository, tmp_path, "ray", env)
    assert f"starting a local Ray head on 127.0.0.1:{ray_port}" in result.stdout
    with pytest.raises(OSError):  # stopped with the services
        socket.create_connection(("127.0.0.1", ray_port), timeout=1).close()


DEMO_SEARCH = "search: " + repr("Which city is France's capital?")  # the retrieval demo's first search


def test_up_with_the_milvus_store_starts_a_local_milvus_runs_the_demo_and_stops_it(model_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --retrieval-store milvus` without a URI: a local Milvus standalone under the data
    dir holds the collections, the retrieval demo runs on it, and Milvus stops with the services;
    a second run finds the demo's collection again (it lives in Milvus, not in the service)."""
    milvus_port = _free_port()
    env = {**_up_env(model_repository, tmp_path, _free_port()), "FACET_MILVUS_PORT": str(milvus_port)}
    command = [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval", "--retrieval-store", "milvus", "--demo", "--exit-after-demo"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"starting a local Milvus standalone on http://127.0.0.1:{milvus_port}" in result.stdout
    assert DEMO_SEARCH in result.stdout and "retrieval  demo done" in result.stdout.split("facet: summary", 1)[1]
    assert not (tmp_path / "retrieval" / "retrieval.sqlite3").exists()  # nothing in the embedded store
    assert (tmp_path / "milvus" / "logs" / "milvus.log").stat().st_size > 0
    with pytest.raises(OSError):  # stopped with the services
        socket.create_connection(("127.0.0.1", milvus_port), timeout=1).close()
    from deploy.milvus import LocalMilvus
    from services.retrieval.config import RetrievalConfig
    from services.retrieval.milvus_store import MilvusStore
    from services.runtime.errors import Unavailable

    with LocalMilvus(tmp_path / "milvus", port=milvus_port) as milvus:
        store = MilvusStore(RetrievalConfig(store="milvus", milvus_uri=milvus.uri))
        deadline = time.monotonic() + 60
        while True:  # after a restart Milvus loads its collections again before it answers queries
            try:
                assert [(c.name, c.document_count) for c in store.list_collections()] == [("demo", 6)]
                break
            except Unavailable:
                assert time.monotonic() < deadline, "Milvus did not serve the demo collection again within 60 s"
                time.sleep(1)
        store.close()


def _copy_repository(repository: ModelRepository, to: Path) -> ModelRepository:
    shutil.copytree(repository.root, to, symlinks=True)
    return ModelRepository(to)


def test_a_failed_build_is_said_and_does_not_hide_what_is_ready(model_repository: ModelRepository, tmp_path: Path) -> None:
    """`make run` with one capability's build broken (its work folder cannot be created): the
    ready service serves and its demo runs, the broken build is named with its log's tail, the
    summary says which failed, and the exit code is 1."""
    repository = _copy_repository(model_repository, tmp_path / "models")  # retrieval ready, next-frame missing
    (tmp_path / "nextframe-build").write_text("a file where the build wants its work folder")
    env = {**_up_env(repository, tmp_path, _free_port()), "FACET_NEXTFRAME_PORT": str(_free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "nextframe,retrieval", "--demo", "--exit-after-demo"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "SERVING" in result.stdout and DEMO_SEARCH in result.stdout
    assert "building the default models of nextframe failed (exit code 1)" in result.stderr
    assert "nextframe-build" in result.stderr  # the log's tail says what broke
    summary = result.stdout.split("facet: summary", 1)[1]
    assert "retrieval  demo done" in summary and "nextframe  FAILED: building the default models of nextframe failed" in summary


def test_a_ready_service_runs_its_demo_while_a_missing_one_builds(nextframe_repository: ModelRepository, tmp_path: Path) -> None:
    """A fresh machine in small: next-frame's models are there, the embedding model is not.
    Next-frame is served and demonstrated first; the embedding model builds meanwhile (the real
    export with its parity check, progress in its log); then retrieval starts and its demo runs."""
    repository = _copy_repository(nextframe_repository, tmp_path / "models")
    env = {**_up_env(repository, tmp_path, _free_port()), "FACET_NEXTFRAME_PORT": str(_free_port()), "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval,nextframe", "--demo", "--exit-after-demo"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    building, built = out.index("facet: building the default models of retrieval"), out.index("facet: retrieval default models built")
    nextframe_done, retrieval_done = out.index("facet: nextframe demo done"), out.index("facet: retrieval demo done")
    assert building < nextframe_done < built < retrieval_done
    assert out.count("rollout MSE") == 6 and DEMO_SEARCH in out
    assert repository.has("all-minilm-l6-v2")
    assert (tmp_path / "logs" / "build-retrieval.log").stat().st_size > 0


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _child_running(parent: int, needle: str) -> int:
    """The pid of `parent`'s child whose command line has `needle` (polled: it may be starting)."""
    found: list[int] = []

    def look() -> bool:
        found[:] = [pid for pid in _children(parent) if needle.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return bool(found)

    assert _poll(look, 60), f"no child of {parent} runs {needle}"
    return found[0]


def _session_processes(session_id: int) -> list[int]:
    from deploy.lifetime import session_processes

    return session_processes(session_id)


@pytest.mark.parametrize("backend", ["ray", "triton"])
def test_a_killed_launcher_leaves_no_engine_and_no_service(backend: str, model_repository: ModelRepository, tmp_path: Path) -> None:
    """`facet up --backend ray|triton` killed with SIGKILL (no clean-up of its own): its service
    dies with it, and the engine it started (a Ray head that detached, a tritonserver) is stopped
    by its watchdog; the engine's port is free again."""
    from deploy.lifetime import EngineRecord

    engine_port, service_port = _free_port(), _free_port()
    env = {**_up_env(model_repository, tmp_path, _free_port()), "FACET_RETRIEVAL_PORT": str(service_port), "TMPDIR": str(tmp_path),
           "RAY_DASHBOARD_PORT": str(_free_port()), "FACET_RAY_ADDRESS": f"127.0.0.1:{engine_port}", "FACET_TRITON_URL": f"127.0.0.1:{engine_port}"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval", "--backend", backend],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _read_until(proc, "facet: starting retrieval", 300)  # the engine runs, the service is spawned
        record = EngineRecord.load(tmp_path / "engines" / f"{backend}.json")
        assert record is not None and record.owner_pid == proc.pid
        assert _listening(engine_port)
        service = _child_running(proc.pid, "services.retrieval")
        proc.kill()
        proc.wait(10)
        assert _poll(lambda: not _listening(engine_port), 60), f"the {backend} engine outlived its launcher"
        assert _poll(lambda: not _session_processes(record.session_id), 60)
        assert _poll(lambda: not Path(f"/proc/{service}").exists() or Path(f"/proc/{service}/stat").read_text().split()[2] == "Z", 60)
        assert _poll(lambda: not (tmp_path / "engines" / f"{backend}.json").exists(), 60)  # the watchdog's last step
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_next_start_stops_a_stale_ray_head_it_owns(model_repository: ModelRepository, tmp_path: Path) -> None:
    """Launcher and watchdog both killed (SIGKILL): the Ray head stays, recorded in the owner file
    under the data directory. The next `facet up` there stops it, says so, and starts its own on
    the same port."""
    from deploy.lifetime import EngineRecord

    ray_port = _free_port()
    env = {**_up_env(model_repository, tmp_path, _free_port()), "FACET_RETRIEVAL_PORT": str(_free_port()), "TMPDIR": str(tmp_path),
           "RAY_DASHBOARD_PORT": str(_free_port()), "FACET_RAY_ADDRESS": f"127.0.0.1:{ray_port}"}  # fmt: skip
    command = [sys.executable, "-m", "deploy.cli", "up", "--services", "retrieval", "--backend", "ray"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second: subprocess.Popen[str] | None = None
    record = None
    try:
        _read_until(first, "facet: starting retrieval", 300)
        record = EngineRecord.load(tmp_path / "engines" / "ray.json")
        assert record is not None
        watchdog = _child_running(first.pid, "deploy.lifetime")
        os.kill(watchdog, signal.SIGKILL)
        first.kill()
        first.wait(10)
        assert _listening(ray_port)  # the head outlived both: stale
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = _read_until(second, "facet: starting retrieval", 300)
        assert f"stopped a stale Ray head on 127.0.0.1:{ray_port}" in seen and f"left by launcher pid {first.pid}" in seen
        assert not _session_processes(record.session_id)
        assert _listening(ray_port)  # the new head
        second.send_signal(signal.SIGTERM)
        assert second.wait(120) == 0
        assert not _listening(ray_port)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if record is not None:
            from deploy.lifetime import stop_session

            stop_session(record.session_id, record.marker)
