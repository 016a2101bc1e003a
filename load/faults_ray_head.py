"""The Ray head killed under a running service, then started again on the same address: what the
service's callers see, and whether it recovers (issue #13, part 3; a script, not a test: on 2
cores it takes 2-4 minutes).

    python load/faults_ray_head.py [--model-repository PATH] [--deadline-s 5] [--watch-s 120]

Starts a local Ray head (its own temp dir and session) and a retrieval service on the ray
backend, supervised as `facet up` runs it (the launcher's Supervisor restarts it when it exits);
checks one Embed; kills every process of the head's session with SIGKILL (a crash of the
head node); starts a new head on the same port; then sends one Embed (no retries, `--deadline-s`)
every 0.5 s for `--watch-s` seconds, printing each outcome with the service's gRPC health status,
until one succeeds. Everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

import sdk  # noqa: E402
from deploy.launcher import Supervisor  # noqa: E402
from deploy.lifetime import session_processes  # noqa: E402
from deploy.ray_cluster import LocalRay  # noqa: E402
from load.harness import default_model_repository, free_port, log  # noqa: E402


def health(address: str) -> str:
    """The retrieval service's gRPC health status name (or the error that prevented the check)."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="facet.v1.Retrieval"), timeout=2
            )
    except grpc.RpcError as exc:
        return f"health check failed: {exc.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def kill_head(head: LocalRay) -> int:
    """SIGKILL every process of the head's session (and those under its temp dir); how many."""
    pids = session_processes(head.session_id, str(Path(head.temp_dir or "").resolve()))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


class _Address:
    def __init__(self, address: str) -> None:
        self.address = address


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-repository", type=Path, default=None, help="default: $FACET_MODEL_REPOSITORY or the per-user default"
    )
    parser.add_argument("--deadline-s", type=float, default=5.0, help="deadline of each Embed after the kill")
    parser.add_argument(
        "--watch-s", type=float, default=120.0, help="how long to wait for recovery after the new head is up"
    )
    args = parser.parse_args(argv)
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
    port, dashboard = free_port(), free_port()
    heads = [LocalRay(port=port, dashboard_port=dashboard, temp_dir=temp).start()]
    work = Path(tempfile.mkdtemp(prefix="facet-ray-head-"))
    service_port = free_port()
    os.environ["FACET_RETRIEVAL_PORT"], os.environ["FACET_SERVER_METRICS_PORT"] = str(service_port), "-1"
    env = {"FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": heads[0].address, "FACET_DATA_DIR": str(work / "data"),
           "FACET_MODEL_REPOSITORY": str(args.model_repository or default_model_repository())}  # fmt: skip
    supervisor = Supervisor(["retrieval"], log_dir=work / "logs", env=env)
    stop = threading.Event()
    watcher = threading.Thread(target=supervisor.supervise, args=(stop.is_set,), daemon=True)
    service = _Address(f"127.0.0.1:{service_port}")
    recovered = False
    try:
        supervisor.start(300)
        watcher.start()
        with sdk.Client(service.address, timeout_s=args.deadline_s, retry=sdk.RetryPolicy(max_attempts=1)) as client:
            log(f"before: Embed OK {client.embed(['before']).shape}, health {health(service.address)}")
            killed_at = time.monotonic()
            log(f"killed {kill_head(heads[0])} processes of the Ray head")
            try:
                client.embed(["right after"])
                log("right after the kill: Embed OK")
            except sdk.FacetError as exc:
                log(f"right after the kill: {str(exc)[:160]}; health {health(service.address)}")
            heads.append(LocalRay(port=port, dashboard_port=dashboard, temp_dir=temp).start())
            log(
                f"new head on {heads[-1].address}, {time.monotonic() - killed_at:.1f} s after the kill; health {health(service.address)}"
            )
            outcomes: dict[str, int] = {}
            watch_from = time.monotonic()
            while time.monotonic() - watch_from < args.watch_s:
                try:
                    client.embed(["after"])
                except sdk.FacetError as exc:
                    key = f"{exc.code.name} (health {health(service.address)})"
                    outcomes[key] = outcomes.get(key, 0) + 1
                    time.sleep(0.5)
                    continue
                recovered = True
                log(f"first OK Embed {time.monotonic() - killed_at:.1f} s after the kill; before it: {outcomes}")
                break
            if not recovered:
                log(f"no OK Embed within {args.watch_s:.0f} s of the new head: {outcomes}")
    finally:
        stop.set()
        watcher.join(10)
        supervisor.stop()
        lines = [line for line in supervisor.services["retrieval"].process.log().splitlines() if not line.startswith("[")]
        log("the service's last log lines (Ray's own left out):\n" + "\n".join(line[:300] for line in lines[-15:]))
        for head in heads:
            head.stop()
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if recovered else 1


if __name__ == "__main__":
    sys.exit(main())
