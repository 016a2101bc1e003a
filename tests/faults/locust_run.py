"""What the fault tests share: a headless locust process driving load, its CSV read back, the ack
log of acknowledged upserts, a supervised service (the launcher's `Supervisor`, restarting what
crashes) and polls with a deadline. Imported by the tests; no fixtures here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.launcher import Supervisor
from tests.serving import REPO_ROOT, free_port

# the project's load scenarios (`facet load`), and this folder's own retrieval users (their calls
# have long deadlines and tags to leave RPCs out)
SCENARIOS = REPO_ROOT / "load" / "locustfile.py"
FAULT_USERS = Path(__file__).with_name("locust_retrieval.py")
SUMMARY_LISTENER = Path(__file__).with_name("locust_summary.py")


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll `condition` until it holds; fail the test after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class RequestStats:
    """One RPC's calls in a locust run and how many of them failed."""

    name: str
    requests: int
    failures: int


class LocustRun:
    """`python -m locust --headless` in its own process (locust's gevent patching stays out of
    pytest), stopped with SIGTERM (its users finish their calls), its counts read back from the
    summary the locustfile writes at exit (locust's own CSV, also written, is refreshed only every
    2 s and not at a SIGTERM).

    Args:
        host: the service's host:port.
        work: where the CSV files and locust's output go.
        users: concurrent locust users (spawned at once).
        env: on top of this process's environment (FACET_LOAD_ACK_LOG, FACET_RETRY_*, ...).
        locustfile: the scenario: `SCENARIOS` (then `user_class` picks the capability's users
            and the service's address goes in FACET_<NAME>_ADDR) or `FAULT_USERS`.
        user_class: the User class to run (None: every one the locustfile has).
        extra_args: more locust options (`--exclude-tags embed`).
    """

    def __init__(
        self,
        host: str,
        work: Path,
        users: int = 4,
        env: dict[str, str] | None = None,
        locustfile: Path = FAULT_USERS,
        user_class: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.csv_prefix = work / "locust"
        self.output = work / "locust.out"
        self.summary = work / "locust-summary.json"
        command = [sys.executable, "-m", "locust", "-f", f"{locustfile},{SUMMARY_LISTENER}", "--headless", "--host", host,
                   "-u", str(users), "-r", str(users), "--run-time", "600s", "--stop-timeout", "120",
                   "--csv", str(self.csv_prefix), "--only-summary", "--loglevel", "WARNING", *extra_args, *([user_class] if user_class else [])]  # fmt: skip
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {}), "FACET_FAULTS_SUMMARY": str(self.summary)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self, timeout_s: float = 180.0) -> None:
        """SIGTERM: locust stops its users (each finishes its call, within `--stop-timeout`) and
        writes the CSV. Fails the test if locust does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"locust did not stop within {timeout_s:.0f} s; its output:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def stats(self) -> dict[str, RequestStats]:
        """RPC name -> counts of every call, from the summary the locustfile writes at exit."""
        if not self.summary.exists():
            pytest.fail(f"locust wrote no {self.summary.name}; its output:\n{self.log()[-3000:]}")
        requests = json.loads(self.summary.read_text())["requests"]
        return {name: RequestStats(name, calls, failures) for name, (calls, failures) in requests.items()}

    def failures(self) -> list[str]:
        """Each distinct failure locust recorded: 'RPC: error text (count)'."""
        return list(json.loads(self.summary.read_text())["errors"]) if self.summary.exists() else []

    def __enter__(self) -> LocustRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def acknowledged(ack_log: Path) -> dict[str, list[str]]:
    """collection -> the ids of every upsert the server acknowledged, from an ack log (one JSON
    line `{"collection": ..., "ids": [...]}` per acknowledged upsert)."""
    acked: dict[str, list[str]] = {}
    if ack_log.exists():
        for line in ack_log.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                acked.setdefault(entry["collection"], []).extend(entry["ids"])
    return acked


def ack_count(ack_log: Path) -> int:
    """Acknowledged upserts so far (lines in the ack log)."""
    return ack_log.read_text().count("\n") if ack_log.exists() else 0


def service_env(model_repository: Path, data_dir: Path) -> dict[str, str]:
    """The FACET_* settings of a supervised test service: its models, its own data directory, no
    API key (whatever this process's environment holds)."""
    return {"FACET_MODEL_REPOSITORY": str(model_repository), "FACET_DATA_DIR": str(data_dir), "FACET_API_KEY": ""}


class SupervisedService:
    """One service run by the launcher's `Supervisor` (as `facet up` runs it): on a free port,
    restarted when it exits, supervised by a thread until `stop()`.

    Args:
        name: registry name.
        env: the service's FACET_* settings (model repository, data directory, backend, ...).
        log_dir: the service's log (`<name>.log`).
        grace_period_s: its drain time on SIGTERM (`FACET_SERVER_GRACE_PERIOD_S`).
        metrics: serve /metrics on a free port (`metrics_url`), the same across restarts.
    """

    def __init__(
        self, name: str, env: dict[str, str], log_dir: Path, grace_period_s: float = 10.0, metrics: bool = False
    ) -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port() if metrics else -1
        env = {**env, "FACET_SERVER_GRACE_PERIOD_S": str(grace_period_s)}
        with _environ(
            {f"FACET_{name.upper()}_PORT": str(self.port), "FACET_SERVER_METRICS_PORT": str(self.metrics_port)}
        ):
            self.supervisor = Supervisor([name], log_dir=log_dir, grace_period_s=grace_period_s, env=env)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.supervisor.supervise, args=(self._stop.is_set,), daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The service process's pid now (None between a crash and its restart)."""
        process = self.supervisor.services[self.name].process.process
        return process.pid if process is not None and process.poll() is None else None

    def log(self) -> str:
        return self.supervisor.services[self.name].process.log()

    def start(self, timeout_s: float = 300.0) -> SupervisedService:
        self.supervisor.start(timeout_s)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.supervisor.stop()

    def __enter__(self) -> SupervisedService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, restored afterwards (the Supervisor reads ports from it)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` now, in bytes (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample (`name` with `labels`, e.g. facet_requests_in_flight with
    method=...) on a service's /metrics page; 0 when absent or the page is unreachable."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urlopen(url, timeout=2) as page:
            text = page.read().decode()
    except OSError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def lost_upserts(address: str, acked: dict[str, list[str]]) -> list[str]:
    """The acknowledged ids (collection -> ids, see `acknowledged`) that the retrieval service at
    `address` does not return by Get: acknowledged writes that were lost."""
    import sdk

    lost: list[str] = []
    with sdk.Client(retrieval=address, timeout_s=60) as client:
        for collection, ids in acked.items():
            for start in range(0, len(ids), 64):
                chunk = ids[start : start + 64]
                found = {doc.id for doc in client.get(collection, chunk)}
                lost += [f"{collection}/{doc_id}" for doc_id in chunk if doc_id not in found]
    return lost
