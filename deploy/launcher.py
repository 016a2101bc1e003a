"""`facet up`: each service as its own supervised process on its own port.

Builds missing default models first, starts the services, waits until each reports
SERVING over gRPC health, prints the endpoints, restarts a service that crashes
(with backoff), and stops everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk._contract import DEFAULT_PORTS, SERVICE_NAMES

# Services that exist in this release, in start order.
IMPLEMENTED = ("sae", "nextframe", "retrieval")
_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_STABLE_AFTER_S = 60.0


def wait_serving(address: str, service_name: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll gRPC health until `service_name` is SERVING; False on timeout or when `alive()` turns False."""
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline and alive():
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def _alive(process: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: process.poll() is None


@dataclasses.dataclass
class _Managed:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start_at: float = 0.0

    @property
    def address(self) -> str:
        return f"localhost:{self.port}"


class Supervisor:
    def __init__(
        self,
        services: Sequence[str],
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        grace_period_s: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        unknown = [s for s in services if s not in IMPLEMENTED]
        if unknown:
            raise ValueError(f"unknown or not yet implemented services {unknown}; available: {list(IMPLEMENTED)}")
        self.host = host
        self.log_dir = log_dir
        self.grace_period_s = grace_period_s  # the services' own drain time; stop() allows a margin on top
        self.env = env or {}  # on top of this process's environment, e.g. the backend to use
        self.services = [_Managed(name, int(os.environ.get(f"FACET_{name.upper()}_PORT", DEFAULT_PORTS[name]))) for name in services]
        self._stopping = False

    def _spawn(self, svc: _Managed) -> None:
        env = dict(os.environ, **self.env, FACET_SERVER_HOST=self.host, FACET_SERVER_PORT=str(svc.port))
        env.setdefault("FACET_SERVER_METRICS_PORT", str(svc.port + 1000))
        command = [sys.executable, "-m", f"services.{svc.name}"]
        if self.log_dir is None:
            svc.process = subprocess.Popen(command, env=env)
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # stdout too: an engine's client library (Ray's driver) prints its own warnings there
            with (self.log_dir / f"{svc.name}.log").open("ab") as log:  # the child keeps its own copy
                svc.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        svc.started_at = time.monotonic()

    def start(self, timeout_s: float = 300.0) -> None:
        """Start every service and wait until all are SERVING. Raises RuntimeError otherwise."""
        for svc in self.services:
            self._spawn(svc)
        for svc in self.services:
            proc = svc.process
            assert proc is not None
            if not wait_serving(svc.address, SERVICE_NAMES[svc.name], timeout_s, alive=_alive(proc)):
                self.stop()
                raise RuntimeError(f"service {svc.name} did not become SERVING on {svc.address}{self._log_tail(svc)}")

    def _log_tail(self, svc: _Managed, lines: int = 5) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{svc.name}.log"
        tail = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return f"; last lines of {path}:\n" + "\n".join(tail) if tail else f"; see {path}"

    def endpoints(self) -> dict[str, str]:
        return {svc.name: svc.address for svc in self.services}

    def supervise(self, should_stop: Callable[[], bool]) -> None:
        """Restart crashed services until `should_stop()`; backoff grows with quick repeated crashes."""
        while not should_stop():
            now = time.monotonic()
            for svc in self.services:
                proc = svc.process
                if proc is not None and proc.poll() is not None:
                    if now - svc.started_at > _STABLE_AFTER_S:
                        svc.restarts = 0
                    delay = _RESTART_BACKOFF_S[min(svc.restarts, len(_RESTART_BACKOFF_S) - 1)]
                    print(f"facet: {svc.name} exited with code {proc.returncode}; restarting in {delay:.0f}s", flush=True)
                    svc.process = None
                    svc.next_start_at = now + delay
                    svc.restarts += 1
                elif proc is None and now >= svc.next_start_at:
                    self._spawn(svc)
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every service (they drain in-flight calls), then SIGKILL what is left."""
        for svc in self.services:
            if svc.process is not None and svc.process.poll() is None:
                svc.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_period_s + 5.0
        for svc in self.services:
            if svc.process is None:
                continue
            try:
                svc.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.process.kill()
                svc.process.wait()
            svc.process = None
