"""What the benchmarks under `load/` share: service processes, load generators, percentiles,
tables, progress lines, real sentences and the model repository's default. Each `bench_*.py`
script holds only its measurements and its report.

    service = BenchmarkService("retrieval", default_model_repository()).start()
    try:
        with sdk.Client(retrieval=service.address) as client:
            result = sequential_calls(client.embed, [[t] for t in real_sentences(DEFAULT_DATA)[:100]])
    finally:
        service.stop()
    print(table_text(("calls", "p50 / p99 ms"), [(str(result.calls), p50_p99_text(result.latencies_ms))]))
"""

from __future__ import annotations

import ast
import asyncio
import collections
import contextlib
import csv
import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np

import sdk
from deploy.service_process import ServiceProcess

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "rarb-mcr"  # RAR-b MCR CSV files: real sentences
MIB = 1024 * 1024
STARTUP_TIMEOUT_S = 300.0  # model loading on a small shared machine, Triton and Ray included
STOP_TIMEOUT_S = 120.0  # drain plus the retrieval service's index save


def default_model_repository() -> Path:
    """The configured model repository (FACET_MODEL_REPOSITORY or the per-user default)."""
    from services.runtime.config import load_config

    return load_config().model_repository


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for engines that need a fixed port: Triton, a Ray head)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- service processes ---------------------------------------------------------------------


class BenchmarkService(ServiceProcess):
    """`python -m services.<capability>` for a benchmark, on `model_repository`, with its own data
    dir and log in a temporary folder that `stop()` removes.

    The service gets only the FACET_ settings in `settings` (and the model repository and data dir):
    none are inherited from this process's environment, so the sides of a comparison differ only in
    what the benchmark sets. `stop()` records how the service stopped (`stop_seconds`, `exit_code`)
    and the warnings and errors in its log (`problems`), for the report.

    Args:
        capability_name: a registry name ("retrieval", "sae", "nextframe").
        model_repository: the folder of models the service serves.
        settings: FACET_* settings on top of the service's defaults.
        label: a name for progress lines and the report (default: the capability).
        metrics_port: 0 for /metrics on any free port; None (the service's default) for none.
    """

    def __init__(
        self,
        capability_name: str,
        model_repository: Path,
        settings: Mapping[str, str] | None = None,
        *,
        label: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.label = label or capability_name
        self.workdir = Path(tempfile.mkdtemp(prefix=f"facet-bench-{self.label}-"))
        self.data_dir = self.workdir / "data"
        env = {
            "FACET_MODEL_REPOSITORY": str(model_repository),
            "FACET_DATA_DIR": str(self.data_dir),
            **(settings or {}),
        }
        super().__init__(capability_name, env, metrics_port=metrics_port, log_path=self.workdir / "server.log")
        self.problems: list[str] = []
        self.stop_seconds: float | None = None
        self.exit_code: int | None = None
        self.stopped = False

    @property
    def address(self) -> str:
        """`127.0.0.1:<bound port>`: the interface it binds, so no call tries IPv6 first."""
        return f"{self.host}:{self.port or self.requested_port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "spawn() first"
        return self.process.pid

    def spawn(self) -> Self:
        with _without_facet_settings():
            super().spawn()
        return self

    def wait_until_serving(self, timeout_s: float = STARTUP_TIMEOUT_S) -> Self:
        super().wait_until_serving(timeout_s)
        return self

    def start(self, wait: bool = True, timeout_s: float = STARTUP_TIMEOUT_S) -> Self:
        super().start(wait, timeout_s)
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait (drain, index save), SIGKILL after `timeout_s`; collect the log's problems;
        remove the data dir and log. Calling it again does nothing."""
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.process is None:
                return
            if self.alive():
                began = time.perf_counter()
                self.send_terminate()
                try:
                    self.process.wait(timeout_s)
                    self.stop_seconds = time.perf_counter() - began
                except subprocess.TimeoutExpired:
                    self.problems.append(f"did not stop within {timeout_s:.0f} s of SIGTERM; killed")
                    self.kill()
            self.exit_code = self.process.returncode
            if self.exit_code != 0:
                self.problems.append(f"exit code {self.exit_code} after SIGTERM")
            self.problems += log_problems(self.log_path)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            super().__enter__()
        except BaseException:
            self.stop()  # a service that never served: still remove its folder
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        """As `ServiceProcess.log_tail`, 30 lines by default: `stop()` removes the log file."""
        return super().log_tail(lines)

    # what the service process uses, read from /proc and /metrics

    def rss_bytes(self) -> int:
        """Resident memory of the service process (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def written_bytes(self) -> int:
        """Bytes the service process has written to storage (/proc/<pid>/io write_bytes)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the service process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metric_samples(self) -> list[Any]:
        """The samples on the service's /metrics (prometheus_client `Sample`s); [] without a metrics port."""
        if not self.metrics_port:
            return []
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


@contextlib.contextmanager
def _without_facet_settings() -> Iterator[None]:
    """This process's environment without its FACET_ settings, while a child process starts."""
    inherited = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("FACET_")]}
    try:
        yield
    finally:
        os.environ.update(inherited)


def log_problems(log_path: Path, limit: int = 12) -> list[str]:
    """Warning/error entries of a service's JSON log and any non-JSON output, deduplicated with counts."""
    counts: collections.Counter[str] = collections.Counter()
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip():
                counts[f"non-JSON output: {line.strip()[:300]}"] += 1
            continue
        if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
            continue
        detail = {k: v for k, v in entry.items() if k not in ("ts", "request_id", "latency_ms", "service")}
        exc = str(detail.pop("exc", "")).strip().splitlines()
        message = json.dumps(detail, default=str) + (f" exc: {exc[-1]}" if exc else "")
        counts[message[:400]] += 1
    return [f"{message} (x{n})" if n > 1 else message for message, n in counts.most_common(limit)]


# -- load generators -----------------------------------------------------------------------


@dataclasses.dataclass
class LoadResult:
    """Calls made under load: how many, how many failed, over how long, and each one's latency."""

    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    first_error: str = ""

    def add(self, other: LoadResult) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies_ms += other.latencies_ms
        self.first_error = self.first_error or other.first_error

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def timed_ms(call: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def sequential_calls(call: Callable[[T], object], items: Sequence[T], warmup: int = 1) -> LoadResult:
    """`call(item)` for each item in turn, one at a time, after `warmup` untimed calls on the first items."""
    for item in items[:warmup]:
        call(item)
    result = LoadResult()
    start = time.perf_counter()
    for item in items:
        began = time.perf_counter()
        call(item)
        result.latencies_ms.append((time.perf_counter() - began) * 1e3)
        result.calls += 1
    result.seconds = time.perf_counter() - start
    return result


async def callers_for_duration(call: Callable[[int], Awaitable[object]], callers: int, seconds: float) -> LoadResult:
    """`callers` concurrent loops of `call(position)` for `seconds` (calls in flight then finish).

    Caller i passes positions i, i + callers, i + 2 * callers, ...; a call that raises `sdk.FacetError`
    counts as an error and the loop goes on.
    """
    result = LoadResult()
    deadline = time.perf_counter() + seconds

    async def caller(position: int) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await call(position)
            except sdk.FacetError as exc:
                result.errors += 1
                result.first_error = result.first_error or str(exc)
                continue
            result.latencies_ms.append((time.perf_counter() - start) * 1e3)
            result.calls += 1
            position += callers

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    result.seconds = time.perf_counter() - start
    return result


async def drain(items: Iterable[T], workers: Sequence[Callable[[T], Awaitable[object]]]) -> float:
    """The workers, concurrently, each taking the next item until none is left; returns the seconds taken."""
    queue = iter(items)

    async def work(handle: Callable[[T], Awaitable[object]]) -> None:
        for item in queue:
            await handle(item)

    start = time.perf_counter()
    await asyncio.gather(*(work(w) for w in workers))
    return time.perf_counter() - start


# -- percentiles, tables, progress -----------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (numpy's linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def p50_p99_text(values: Sequence[float]) -> str:
    """The latencies' "p50 / p99", two decimals each, as the tables show them."""
    return f"{percentile(values, 50):.2f} / {percentile(values, 99):.2f}"


def table_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table, columns padded to their widest cell."""
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a ratio table: a measure, Facet's number, the baseline's, their ratio and a target."""

    measure: str
    facet: str
    baseline: str
    ratio: str
    target: str = "info"
    met: bool | None = None  # None: no target, for information

    def cells(self) -> tuple[str, str, str, str, str]:
        met = "" if self.met is None else (" met" if self.met else " MISSED")
        return self.measure, self.facet, self.baseline, self.ratio, self.target + met


def rows_table(rows: Iterable[Row]) -> str:
    return table_text(("measure", "facet", "baseline", "ratio / overhead", "target"), [r.cells() for r in rows])


@dataclasses.dataclass
class Results:
    """What a benchmark found: the table's rows, raw numbers for --json, and notes under the table."""

    rows: list[Row] = dataclasses.field(default_factory=list)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def write_json(self, path: Path, settings: Any, wall_seconds: float, **extra: Any) -> None:
        """`--json`: the settings (a dataclass), the wall time, the rows, notes and raw numbers, and
        `extra` keys, written to `path`; says where on stdout."""
        payload = {
            **extra,
            "wall_seconds": wall_seconds,
            "settings": dataclasses.asdict(settings),
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "notes": self.notes,
            "raw": self.raw,
        }
        path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"- results written to {path}")


def print_results(title: str, out: Results, problems: Sequence[str], what: str = "service problems seen in its log / exit code") -> None:
    """A benchmark's report on stdout: the title, the ratio table, the notes, then `what` with
    each of `problems` (or "none")."""
    print()
    print(title)
    print(rows_table(out.rows))
    print()
    for note in out.notes:
        print(f"- {note}")
    print(f"- {what}: " + ("none" if not problems else ""))
    for problem in problems:
        print(f"  - {problem}")


def log(message: str) -> None:
    """A progress line, with the time."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- side by side ---------------------------------------------------------------------------


Call = Callable[[int], Awaitable[object]]


async def side_by_side(
    sides: Mapping[str, Call],
    callers: int,
    seconds: float,
    rounds: int,
    callers_of: Mapping[str, int] | None = None,
    slices: list[dict[str, Any]] | None = None,
) -> dict[str, LoadResult]:
    """Each side under `callers` concurrent callers (`callers_of[side]` where given) for `seconds` in
    all, in `rounds` slices; the sides take turns, the first side of each round rotating, so
    background load hits them alike. Each slice's side, calls, errors, seconds and 1-minute load
    average are appended to `slices` when given (to judge the noise)."""
    results = {name: LoadResult() for name in sides}
    order = list(sides)
    for r in range(rounds):
        turn = order[r % len(order) :] + order[: r % len(order)]
        for name in turn:
            n = (callers_of or {}).get(name, callers)
            part = await callers_for_duration(sides[name], n, seconds / rounds)
            results[name].add(part)
            if slices is not None:
                slices.append(
                    {
                        "side": name,
                        "callers": n,
                        "calls": part.calls,
                        "errors": part.errors,
                        "seconds": part.seconds,
                        "load_1min": os.getloadavg()[0],
                    }
                )
    return results


def rate(result: LoadResult, items_per_call: int) -> float:
    """Items (texts, pairs) per second of a load: successful calls x items per call / seconds."""
    return result.calls * items_per_call / result.seconds if result.seconds else 0.0


def throughput_cell(result: LoadResult, items_per_call: int) -> str:
    """Items/s and per-call p50 / p99, as "412.3 (p50 / p99 20.11 / 40.20 ms)", with ", N failed" when calls failed."""
    failed = f", {result.errors} failed" if result.errors else ""
    return (
        f"{rate(result, items_per_call):.1f} (p50 / p99 {percentile(result.latencies_ms, 50):.2f} / "
        f"{percentile(result.latencies_ms, 99):.2f} ms{failed})"
    )


def ratio_row(
    measure: str, facet: LoadResult, baseline: LoadResult, items_per_call: int, baseline_label: str, target: float
) -> Row:
    """A table row: Facet's and the baseline's items/s with p50/p99, their ratio, and whether it meets `target`
    (never met when a side had failed calls or no calls)."""
    facet_rate, base_rate = rate(facet, items_per_call), rate(baseline, items_per_call)
    ratio = facet_rate / base_rate if base_rate else float("nan")
    met = bool(ratio >= target) and not facet.errors and not baseline.errors and facet.calls > 0
    return Row(
        measure,
        throughput_cell(facet, items_per_call),
        f"{baseline_label} {throughput_cell(baseline, items_per_call)}",
        f"{ratio:.2f}x",
        f">= {target:.1f}x",
        met,
    )


def overhead_row(
    measure: str, facet_ms: Sequence[float], local_ms: Sequence[float], local_label: str, target_ms: float
) -> Row:
    """A table row: Facet's p50 / p99 against the in-process one, and the p50 difference against `target_ms`."""
    overhead = percentile(facet_ms, 50) - percentile(local_ms, 50)
    return Row(
        measure,
        f"{percentile(facet_ms, 50):.2f} / {percentile(facet_ms, 99):.2f}",
        f"{local_label} {percentile(local_ms, 50):.2f} / {percentile(local_ms, 99):.2f}",
        f"{overhead:+.2f} ms",
        f"<= +{target_ms:g} ms",
        bool(overhead <= target_ms),
    )


def load_summary(result: LoadResult, items_per_call: int) -> dict[str, float]:
    return {
        "calls": result.calls,
        "errors": result.errors,
        "seconds": result.seconds,
        "items_per_s": rate(result, items_per_call),
        "p50_ms": percentile(result.latencies_ms, 50),
        "p99_ms": percentile(result.latencies_ms, 99),
    }


# -- data ----------------------------------------------------------------------------------


def real_sentences(data_dir: Path, max_chars: int = 300, seed: int = 0) -> list[str]:
    """Unique queries and candidate answers of every RAR-b MCR CSV in `data_dir`, at most `max_chars`
    long, shuffled with `seed`. Raises SystemExit when the folder holds no CSV files."""
    found: set[str] = set()
    files = sorted(data_dir.glob("*.csv"))
    if not files:
        raise SystemExit(f"no CSV files in {data_dir}; pass --data")
    for path in files:
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                found.add(row["queries"].strip())
                found.update(str(d).strip() for d in ast.literal_eval(row["documents"]))
    texts = sorted(t for t in found if 0 < len(t) <= max_chars)
    random.Random(seed).shuffle(texts)
    return texts
