"""`facet up`: each service as its own supervised process on its own port.

Builds missing default models first, starts the services, waits until each reports
SERVING over gRPC health, prints the endpoints, restarts a service that crashes
(with backoff), and stops everything cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.service_process import ServiceError, ServiceProcess, wait_serving
from sdk._contract import capability
from services import registry

__all__ = ["Supervisor", "wait_serving"]

_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_STABLE_AFTER_S = 60.0


class _Managed:
    """A supervised service: its process, and when it may be restarted."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.running = False
        self.restarts = 0
        self.next_start_at = 0.0

    @property
    def name(self) -> str:
        return self.process.name


class Supervisor:
    def __init__(
        self,
        services: Sequence[str],
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        grace_period_s: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        unknown = [s for s in services if s not in registry.BY_NAME]
        if unknown:
            raise ValueError(f"unknown services {unknown}; available: {registry.names()}")
        self.host = host
        self.log_dir = log_dir
        self.grace_period_s = grace_period_s  # the services' own drain time; stop() allows a margin on top
        self.env = env or {}  # on top of this process's environment, e.g. the backend to use
        self.services = [self._managed(name) for name in services]

    def _managed(self, name: str) -> _Managed:
        # each on its default port unless FACET_<NAME>_PORT says otherwise; metrics 1000 above
        port = int(os.environ.get(f"FACET_{name.upper()}_PORT", capability(name).default_port))
        metrics_port = int(os.environ.get("FACET_SERVER_METRICS_PORT", port + 1000))
        log_path = (self.log_dir / f"{name}.log") if self.log_dir is not None else None
        return _Managed(ServiceProcess(name, self.env, port=port, metrics_port=metrics_port, host=self.host, log_path=log_path))

    def start(self, timeout_s: float = 300.0) -> None:
        """Start every service and wait until all are SERVING. Raises RuntimeError otherwise."""
        for svc in self.services:
            svc.process.env.update(self.env)
            svc.process.spawn()
            svc.running = True
        for svc in self.services:
            try:
                svc.process.wait_until_serving(timeout_s)
            except ServiceError as exc:
                self.stop()
                raise RuntimeError(f"service {exc}") from None

    def endpoints(self) -> dict[str, str]:
        return {svc.name: svc.process.address for svc in self.services}

    def supervise(self, should_stop: Callable[[], bool]) -> None:
        """Restart crashed services until `should_stop()`; backoff grows with quick repeated crashes."""
        while not should_stop():
            now = time.monotonic()
            for svc in self.services:
                if svc.running and not svc.process.alive():
                    if now - svc.process.started_at > _STABLE_AFTER_S:
                        svc.restarts = 0
                    delay = _RESTART_BACKOFF_S[min(svc.restarts, len(_RESTART_BACKOFF_S) - 1)]
                    print(f"facet: {svc.name} exited with code {svc.process.returncode}; restarting in {delay:.0f}s", flush=True)
                    svc.running = False
                    svc.next_start_at = now + delay
                    svc.restarts += 1
                elif not svc.running and now >= svc.next_start_at:
                    svc.process.spawn()
                    svc.running = True
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every service (they drain in-flight calls), then SIGKILL what is left."""
        for svc in self.services:
            svc.process.send_terminate()
        deadline = time.monotonic() + self.grace_period_s + 5.0
        for svc in self.services:
            if svc.running:
                svc.process.wait(deadline - time.monotonic())
            svc.running = False
