"""`facet up`: each service as its own supervised process on its own port, started as soon as its
models exist.

`Supervisor` starts services, waits until each reports SERVING over gRPC health, restarts a
service that crashes (with backoff), and stops everything cleanly. `DefaultModelBuilds` builds the
default models a capability lacks, one capability at a time (cheapest first, as the registry's
`default_build_s` says), each as a child process (`facet models build --services <name>`) with its
output in a log: the launcher serves and demonstrates what is ready while the rest builds, and a
build that fails says what broke without stopping the others.

`Security` is what `facet up --tls-cert ... --api-keys-file ...` gives the services (their
`server.tls_*` and `server.api_keys_file` keys, as FACET_SERVER_* variables) and what the
launcher's own clients use: its health checks and demo trust the CA given (`--tls-ca`, else the
server certificate itself: right for a self-signed one), present its client certificate under
mTLS, and send `FACET_API_KEY`, else the first key of the keys file.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.lifetime import dying_with_parent
from deploy.service_process import ServiceError, ServiceProcess, wait_serving
from sdk._contract import API_KEY_ENV, capability
from sdk._tls import PEM_ENV, TLS_ENV
from services import registry

__all__ = ["BuildResult", "DefaultModelBuilds", "Security", "Supervisor", "wait_serving"]

_RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
_STABLE_AFTER_S = 60.0
CHECKOUT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Security:
    """TLS, mTLS and API keys for every service of `facet up`, and for the launcher's own clients.

    Attributes:
        cert_file: the services' certificate (PEM; `server.tls_cert_file`); "" for plaintext.
        key_file: its private key (`server.tls_key_file`).
        client_ca_file: set: mTLS, the CA that signs client certificates (`server.tls_client_ca_file`).
        api_keys_file: the services' API keys file (`server.api_keys_file`).
        api_key: the services' single API key (`api_key`).
        ca_file: the CA the launcher trusts for the services' certificate; "" takes `cert_file`.
        client_cert_file: the launcher's client certificate under mTLS (health checks, demo).
        client_key_file: its private key.
    """

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    api_keys_file: str = ""
    api_key: str = ""
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""

    def check(self, demo: bool) -> list[str]:
        """What is wrong, one line each (empty when nothing): the services' settings as they
        would check them at startup (files read, PEM parsed, key matching its certificate, the
        keys file valid), and what the launcher's own clients lack."""
        from services.runtime.api_keys import KeyRing
        from services.runtime.config import ConfigError, ServerConfig
        from services.runtime.tls import server_credentials

        problems = []
        try:
            server_credentials(ServerConfig(tls_cert_file=self.cert_file, tls_key_file=self.key_file, tls_client_ca_file=self.client_ca_file))
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            KeyRing.from_config(self.api_key, self.api_keys_file)
        except ConfigError as exc:
            problems.append(str(exc))
        if bool(self.client_cert_file) != bool(self.client_key_file):
            problems.append("--tls-client-cert and --tls-client-key go together (the launcher's own client certificate and its key)")
        elif self.cert_file:
            problems += self._client_material_problems()
        if demo and self.client_ca_file and not self.client_cert_file:
            problems.append("--demo under mTLS (--tls-client-ca) needs the launcher's own client certificate: --tls-client-cert and --tls-client-key")
        return problems

    def _client_material_problems(self) -> list[str]:
        """The launcher's own client files (--tls-ca, --tls-client-cert/--tls-client-key) read
        and checked as the SDK will read them (a key given as the CA, another certificate's key),
        each problem named by its flag."""
        from sdk._errors import InvalidArgument
        from sdk._tls import channel_credentials

        flags = {"root_certificates": "--tls-ca", "client_cert": "--tls-client-cert", "client_key": "--tls-client-key"}
        try:
            channel_credentials(
                True, self.ca_file or self.cert_file, self.client_cert_file or None, self.client_key_file or None, env={}
            )
        except InvalidArgument as exc:
            message = exc.message
            for argument, flag in flags.items():
                message = message.replace(argument, flag)
            return [message]
        return []

    def service_env(self) -> dict[str, str]:
        """The FACET_SERVER_* variables that give every service these settings."""
        values = {
            "FACET_SERVER_TLS_CERT_FILE": self.cert_file,
            "FACET_SERVER_TLS_KEY_FILE": self.key_file,
            "FACET_SERVER_TLS_CLIENT_CA_FILE": self.client_ca_file,
            "FACET_SERVER_API_KEYS_FILE": self.api_keys_file,
            API_KEY_ENV: self.api_key,
        }
        return {name: _absolute(value) if value and name != API_KEY_ENV else value for name, value in values.items()}

    def client_env(self) -> dict[str, str]:
        """The SDK's variables (FACET_TLS*, FACET_API_KEY) for the launcher's own clients: its
        health checks (`ServiceProcess`) and the demo's `sdk.Client`."""
        env = {API_KEY_ENV: self.api_key or self._first_file_key()}
        if self.cert_file:
            env[TLS_ENV] = "1"
            env[PEM_ENV["root_certificates"]] = _absolute(self.ca_file or self.cert_file)
        if self.client_cert_file:
            env[PEM_ENV["client_cert"]] = _absolute(self.client_cert_file)
            env[PEM_ENV["client_key"]] = _absolute(self.client_key_file)
        return env

    def describe(self) -> str:
        """One line for the launcher's output: TLS or not, and the key names (never the keys)."""
        from services.runtime.api_keys import KeyRing

        transport = "mTLS" if self.client_ca_file else "TLS" if self.cert_file else "plaintext"
        names = [k.name for k in KeyRing.from_config(self.api_key, self.api_keys_file).keys]
        return f"{transport}; API keys: {', '.join(names) if names else 'none (every call is let in)'}"

    def _first_file_key(self) -> str:
        from services.runtime.api_keys import load_api_keys

        return load_api_keys(self.api_keys_file)[0].key if self.api_keys_file else ""


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


class _Managed:
    """A supervised service: its process, and when it may be restarted."""

    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.running = False  # started by the launcher and to be kept running
        self.serving = False  # reported SERVING once
        self.restarts = 0
        self.next_start_at = 0.0

    @property
    def name(self) -> str:
        return self.process.name


class Supervisor:
    """The service processes of `facet up`, each on its own port.

    Args:
        services: registry names.
        host: interface the services listen on.
        log_dir: one `<name>.log` per service (None: temporary files).
        grace_period_s: the services' own drain time; `stop()` allows 5 s on top.
        env: on top of this process's environment (the backend, its engine's address).
    Raises:
        ValueError: a name is not in the registry.
    """

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
        self.grace_period_s = grace_period_s
        self.env = env or {}
        self.services = {name: self._managed(name) for name in services}

    def _managed(self, name: str) -> _Managed:
        # each on its default port unless FACET_<NAME>_PORT says otherwise; metrics 1000 above
        port = int(os.environ.get(f"FACET_{name.upper()}_PORT", capability(name).default_port))
        metrics_port = int(os.environ.get("FACET_SERVER_METRICS_PORT", port + 1000))
        log_path = (self.log_dir / f"{name}.log") if self.log_dir is not None else None
        return _Managed(ServiceProcess(name, self.env, port=port, metrics_port=metrics_port, host=self.host, log_path=log_path))

    def spawn(self, name: str) -> None:
        """Start service `name` and return at once (`wait_until_serving` waits)."""
        svc = self.services[name]
        svc.process.env.update(self.env)
        svc.process.spawn()
        svc.running = True

    def wait_until_serving(self, name: str, timeout_s: float = 300.0) -> None:
        """Wait until service `name` is SERVING.

        Raises:
            ServiceError: it exited or did not become SERVING in time; it is stopped and not
                restarted, the message says why (the service's own error line).
        """
        svc = self.services[name]
        try:
            svc.process.wait_until_serving(timeout_s)
        except ServiceError:
            svc.running = False
            svc.process.terminate(self.grace_period_s)
            raise
        svc.serving = True

    def start(self, timeout_s: float = 300.0) -> None:
        """Start every service and wait until all are SERVING.

        Raises:
            RuntimeError: one did not become SERVING (every service is stopped then).
        """
        for name in self.services:
            self.spawn(name)
        for name in self.services:
            try:
                self.wait_until_serving(name, timeout_s)
            except ServiceError as exc:
                self.stop()
                raise RuntimeError(f"service {exc}") from None

    def endpoints(self) -> dict[str, str]:
        """name -> host:port of every service that is SERVING (was, and is kept running)."""
        return {svc.name: svc.process.address for svc in self.services.values() if svc.serving and svc.running}

    def restart_crashed(self) -> None:
        """One pass of supervision: note services that exited, restart those whose backoff is over
        (the backoff grows with quick repeated crashes)."""
        now = time.monotonic()
        for svc in self.services.values():
            if not svc.serving:
                continue  # never came up: nothing to restart
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

    def supervise(self, should_stop: Callable[[], bool]) -> None:
        """Restart crashed services until `should_stop()`."""
        while not should_stop():
            self.restart_crashed()
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM every service (they drain in-flight calls), then SIGKILL what is left."""
        for svc in self.services.values():
            svc.process.send_terminate()
        deadline = time.monotonic() + self.grace_period_s + 5.0
        for svc in self.services.values():
            svc.process.wait(deadline - time.monotonic())
            svc.running = False


class BuildResult:
    """How one capability's default-model build ended.

    Attributes:
        name: the capability.
        ok: whether it exited 0.
        seconds: how long it took.
        message: for a failure, what broke (exit code and the last lines of its log).
    """

    def __init__(self, name: str, ok: bool, seconds: float, message: str = "") -> None:
        self.name, self.ok, self.seconds, self.message = name, ok, seconds, message


class DefaultModelBuilds:
    """The default models a set of capabilities lacks, built one capability at a time, cheapest
    first, each as `facet models build --services <name>` in a child process (it dies with the
    launcher) whose output goes to `<log_dir>/build-<name>.log`.

    Args:
        capabilities: the capabilities whose defaults are missing (any order).
        log_dir: where each build's log goes.
        benchmark_data: the shared benchmark data for the builds' parity checks, or None.
        progress_interval_s: how often `progress()` has a line to print, seconds.
    """

    def __init__(self, capabilities: Sequence[str], log_dir: Path, benchmark_data: Path | None, progress_interval_s: float = 30.0) -> None:
        self.queue = registry.cheapest_build_first(list(capabilities))
        self.log_dir = log_dir
        self.benchmark_data = benchmark_data
        self.progress_interval_s = progress_interval_s
        self.current: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.last_progress_at = 0.0

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"build-{name}.log"

    @property
    def done(self) -> bool:
        """Nothing building and nothing left to build."""
        return self.current is None and not self.queue

    def start_next(self) -> None:
        """Start the cheapest build left, unless one runs or none is left."""
        if self.current is not None or not self.queue:
            return
        name = self.queue.pop(0)
        command = [sys.executable, "-m", "deploy.cli", "models", "build", "--services", name]
        if self.benchmark_data is not None:
            command += ["--data", str(self.benchmark_data)]
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        minutes = registry.get(name).default_build_s / 60
        print(f"facet: building the default models of {name} (about {minutes:.0f} min on 2 cores; log {log})", flush=True)
        with log.open("ab") as out:
            self.process = subprocess.Popen(dying_with_parent(command), cwd=CHECKOUT, stdout=out, stderr=subprocess.STDOUT)
        self.current, self.started_at = name, time.monotonic()
        self.last_progress_at = self.started_at

    def poll(self) -> BuildResult | None:
        """Start the next build when none runs; return the result of one that ended, else None."""
        self.start_next()
        if self.current is None or self.process is None or self.process.poll() is None:
            return None
        name, code = self.current, self.process.returncode
        seconds = time.monotonic() - self.started_at
        self.current, self.process = None, None
        if code == 0:
            return BuildResult(name, True, seconds)
        tail = "\n".join(f"    {line}" for line in _log_lines(self.log_path(name))[-8:])
        return BuildResult(name, False, seconds, f"building the default models of {name} failed (exit code {code}) after {seconds:.0f} s; "
                                                 f"last lines of {self.log_path(name)}:\n{tail}")  # fmt: skip

    def progress(self) -> str | None:
        """A line on the running build, at most every `progress_interval_s`; else None."""
        now = time.monotonic()
        if self.current is None or now - self.last_progress_at < self.progress_interval_s:
            return None
        self.last_progress_at = now
        lines = _log_lines(self.log_path(self.current))
        status = lines[-1] if lines else "starting"
        return f"facet: building {self.current} ({_duration(now - self.started_at)}): {status[:160]}"

    def stop(self) -> None:
        """Stop the running build (SIGTERM, then SIGKILL); what it registered so far stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.queue.clear()


def _log_lines(path: Path, tail_bytes: int = 16384) -> list[str]:
    """The non-empty lines at the end of a log; a progress bar's redraws (carriage returns) count
    as lines, its latest state last."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - tail_bytes))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
