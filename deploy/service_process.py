"""One service as a child process: `python -m services.<capability>`, started, watched and stopped.

The one way Facet runs a service process — `facet up` (the launcher), the tests' fixtures and the
benchmarks under `load/` all use `ServiceProcess`:

    with ServiceProcess("retrieval", env={"FACET_MODEL_REPOSITORY": "/srv/models"}) as service:
        client = sdk.Client(service.address)      # bound to a free port, SERVING

It binds the port it is given (0: any free one), learns the bound ports from the service's port
file, waits until gRPC health says SERVING, sends its output to a log file, and stops it with
SIGTERM (the service reports NOT_SERVING and drains in-flight calls within its grace period),
then SIGKILL when it does not exit in time.

Over TLS (`FACET_SERVER_TLS_CERT_FILE` in its environment) the health checks use TLS too, trusting
`FACET_TLS_ROOT_CERTIFICATES` when set, else the server's certificate itself (right for a
self-signed one); under mTLS (`FACET_SERVER_TLS_CLIENT_CA_FILE`) they present
`FACET_TLS_CLIENT_CERT` / `FACET_TLS_CLIENT_KEY`, and without those the port file alone says
SERVING (the service writes it once it reports SERVING).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.lifetime import dying_with_parent
from sdk._contract import capability
from sdk._tls import PEM_ENV, channel_credentials

CHECKOUT = Path(__file__).resolve().parents[1]


def wait_serving(
    address: str,
    service_name: str,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    credentials: grpc.ChannelCredentials | None = None,
) -> bool:
    """Poll gRPC health until `service_name` is SERVING; False on timeout or when `alive()` turns
    False. `credentials`: the channel's TLS credentials (None: plaintext)."""
    deadline = time.monotonic() + timeout_s
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
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


class HealthCheck:
    """How a launcher reaches a service's health over its port, from the service's environment.

    Attributes:
        credentials: TLS credentials for the health channel, None for plaintext.
        possible: False under mTLS without a client certificate: health cannot be asked.
        tls: whether the service serves TLS.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        cert = env.get("FACET_SERVER_TLS_CERT_FILE", "")
        self.tls = bool(cert)
        mtls = bool(env.get("FACET_SERVER_TLS_CLIENT_CA_FILE"))
        client = env.get(PEM_ENV["client_cert"]) or None, env.get(PEM_ENV["client_key"]) or None
        self.possible = not mtls or None not in client
        self.credentials: grpc.ChannelCredentials | None = None
        if self.tls and self.possible:
            root = env.get(PEM_ENV["root_certificates"]) or cert
            self.credentials = channel_credentials(True, root, client[0], client[1], env={})


class _FromEnv:
    """The default of `ServiceProcess(metrics_port=...)`: read it from the env given (None means off)."""


FROM_ENV = _FromEnv()


class ServiceError(RuntimeError):
    """A service process exited or did not become SERVING; the message ends with its log's tail."""


class ServiceProcess:
    """`python -m services.<capability>` as a child process.

    Args:
        capability: a registry name ("sae", "nextframe", "retrieval", ...).
        env: on top of this process's environment (FACET_* settings: the model repository, the
            backend, limits).
        port: gRPC port; 0 binds any free port. `metrics_port` likewise (None: off). When not given,
            they come from `env`'s FACET_SERVER_PORT / FACET_SERVER_METRICS_PORT, else 0 (any free
            port): the process learns what it bound from the service's port file either way.
        host: interface to bind.
        log_path: where the service's stdout and stderr go (appended); default: a temporary file.
    """

    def __init__(
        self,
        capability_name: str,
        env: Mapping[str, str] | None = None,
        *,
        port: int | None = None,
        metrics_port: int | None | _FromEnv = FROM_ENV,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self.capability = capability(capability_name)
        self.env = dict(env or {})
        self.requested_port = int(self.env.pop("FACET_SERVER_PORT", 0)) if port is None else port
        if isinstance(metrics_port, _FromEnv):
            from_env = int(self.env.pop("FACET_SERVER_METRICS_PORT", 0))
            metrics_port = None if from_env < 0 else from_env
        self.requested_metrics_port = metrics_port
        self.host = host
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix=f"facet-{capability_name}-")) / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port: int | None = None
        self.started_at = 0.0
        self._log_offset = 0

    @property
    def name(self) -> str:
        return self.capability.name

    @property
    def address(self) -> str:
        """`localhost:<bound port>` once started (the requested port before)."""
        return f"localhost:{self.port or self.requested_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def spawn(self) -> ServiceProcess:
        """Start the process and return at once (`wait_until_serving` waits)."""
        self._port_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            **self.env,
            "FACET_SERVER_HOST": self.host,
            "FACET_SERVER_PORT": str(self.requested_port),
            "FACET_SERVER_METRICS_PORT": str(-1 if self.requested_metrics_port is None else self.requested_metrics_port),
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0  # this run's lines start here
        command = [sys.executable, "-m", f"services.{self.name}", "--port-file", str(self._port_file)]
        # stdout too: an engine's client library (Ray's driver) prints its own warnings there
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            # SIGTERM when whoever started it dies, even by SIGKILL: no service outlives its launcher
            self.process = subprocess.Popen(dying_with_parent(command), env=env, cwd=CHECKOUT, stdout=log, stderr=log)
        self.started_at = time.monotonic()
        self.port, self.metrics_port = 0, None
        return self

    def wait_for_port(self, timeout_s: float = 120.0) -> ServiceProcess:
        """Wait until the service has bound its ports (`address` is then its own), SERVING or not.
        Raises ServiceError (with the log's tail) when the process exits or `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        while not self._port_file.exists():
            if not self.alive():
                raise ServiceError(f"{self.name} did not become SERVING: it exited with code {self.returncode}{self.failure_reason()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"{self.name} did not bind its port within {timeout_s:.0f} s{self.log_tail()}")
            time.sleep(0.05)
        facts = json.loads(self._port_file.read_text())
        self.port, self.metrics_port = int(facts["port"]), facts.get("metrics_port")
        return self

    def wait_until_serving(self, timeout_s: float = 120.0) -> ServiceProcess:
        """Wait for the bound ports and SERVING. Raises ServiceError (with the log's tail) when the
        process exits or `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        self.wait_for_port(timeout_s)
        check = HealthCheck({**os.environ, **self.env})
        if not check.possible:  # mTLS and no client certificate: the port file says SERVING
            return self
        left = max(1.0, deadline - time.monotonic())
        if not wait_serving(self.address, self.capability.service_name, left, alive=self.alive, credentials=check.credentials):
            trust = (
                " (over TLS: health checks trust FACET_TLS_ROOT_CERTIFICATES, else the server certificate "
                "itself; set it to the CA that signed the certificate)"
                if check.tls
                else ""
            )
            raise ServiceError(f"{self.name} did not become SERVING on {self.address}{trust}{self.log_tail()}")
        return self

    def start(self, wait: bool = True, timeout_s: float = 120.0) -> ServiceProcess:
        """`spawn`, then (unless `wait` is False) `wait_until_serving`."""
        self.spawn()
        return self.wait_until_serving(timeout_s) if wait else self

    def send_terminate(self) -> None:
        """SIGTERM, without waiting: the service stops taking calls and drains the ones in flight."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait up to `timeout_s`, then SIGKILL. Returns the exit code."""
        self.send_terminate()
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int | None:
        """Wait for the process to exit; SIGKILL it after `timeout_s`. Returns the exit code."""
        if self.process is None:
            return None
        try:
            self.process.wait(max(0.1, timeout_s))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no drain (what a crash looks like)."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        """Everything the service wrote to its log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def failure_reason(self) -> str:
        """Why this run of the service ended, for an error message: ": " and the last error its
        structured log recorded (once: the service also prints that line as plain text), and
        where the log is; without one, the last lines of this run's log (a traceback)."""
        run = self.log()[self._log_offset :].splitlines()
        errors = []
        for line in run:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "critical") and entry.get("msg"):
                    errors.append(str(entry["msg"]))
        if errors:
            return f": {errors[-1]} (log: {self.log_path})"
        return self.log_tail()

    def log_tail(self, lines: int = 5) -> str:
        """"; last lines of LOG:" and those lines, for an error message."""
        tail = self.log().splitlines()[-lines:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail) if tail else f"; see {self.log_path}"

    @property
    def _port_file(self) -> Path:
        return self.log_path.with_name(f"{self.log_path.stem}.port.json")

    def __enter__(self) -> ServiceProcess:
        return self if self.alive() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(OSError):
            self.terminate()
