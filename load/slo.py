"""Check a locust run against service-level objectives, step by step.

    python -m load.slo out/run --slo load/slo.toml     # out/run_stats_history.csv from `--csv out/run`
    facet load all --shape steps --slo load/slo.toml   # runs locust, then this

The objectives file (TOML) gives, per RPC (locust request name `<Service>/<Rpc>`), the median
and 99th-percentile latency in milliseconds and the share of failed calls allowed; RPCs without
a table of their own take `[defaults]`::

    [defaults]
    p50_ms = 1000.0
    p99_ms = 5000.0
    error_rate = 0.01

    [rpc."Retrieval/Search"]
    p50_ms = 150.0
    p99_ms = 750.0

The numbers per step come from locust's stats history (`<prefix>_stats_history.csv`, written
every second with `--csv-full-history`): a step is a stretch of seconds at one user count; its
calls and failures are the growth of the cumulative counts over it; its p50/p99 are locust's
"current" percentiles at the step's last second. Those cover locust's sliding window: with
`--shape steps` the locustfile sets it to the step less its first 2 s (`load.shape.
percentile_window_s`), so they are the step's own; otherwise it is locust's 10 s.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import functools
import math
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from google.protobuf import descriptor_pool

import sdk  # noqa: F401 - registers the services' descriptors (their RPC names)
from sdk._contract import CAPABILITIES

OBJECTIVE_KEYS = ("p50_ms", "p99_ms", "error_rate")
AGGREGATED = "Aggregated"


@dataclasses.dataclass(frozen=True)
class Objective:
    """What one RPC must meet.

    Attributes:
        p50_ms: median latency at most this, milliseconds.
        p99_ms: 99th-percentile latency at most this, milliseconds.
        error_rate: failed calls / calls at most this, in [0, 1].
    """

    p50_ms: float
    p99_ms: float
    error_rate: float


@dataclasses.dataclass(frozen=True)
class Objectives:
    """The objectives file: `defaults` for every RPC, `rpc` overrides by request name."""

    defaults: Objective
    rpc: dict[str, Objective]

    def of(self, name: str) -> Objective:
        """The objective of a request name, e.g. "Retrieval/Search"."""
        return self.rpc.get(name, self.defaults)


def _objective(table: object, where: str, base: Objective | None) -> Objective:
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table with {', '.join(OBJECTIVE_KEYS)}")
    unknown = sorted(set(table) - set(OBJECTIVE_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(OBJECTIVE_KEYS)}")
    values: dict[str, float] = {}
    for key in OBJECTIVE_KEYS:
        if key not in table:
            if base is None:
                raise ValueError(f"{where}.{key} is missing")
            values[key] = getattr(base, key)
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{where}.{key} must be a finite number >= 0, got {value!r}")
        if key == "error_rate" and value > 1:
            raise ValueError(f"{where}.error_rate is a share of calls, in [0, 1]; got {value!r}")
        values[key] = float(value)
    return Objective(**values)


@functools.cache
def request_names() -> tuple[str, ...]:
    """Every request name a load run can report: `<Service>/<Rpc>` for each RPC of each
    capability's gRPC service, as in the proto (e.g. "Retrieval/Search"), sorted."""
    pool = descriptor_pool.Default()
    names = []
    for row in CAPABILITIES:
        service = pool.FindServiceByName(row.service_name)
        names += [f"{service.name}/{method.name}" for method in service.methods]
    return tuple(sorted(names))


def _check_request_name(name: str, path: Path) -> None:
    """A ValueError unless `name` is a request name a run can report (a typo would never match)."""
    known = request_names()
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ValueError(
        f'{path}: rpc."{name}" names no RPC, so it would never be checked; {hint}'
        f"names are <Service>/<Rpc> as in the proto: {', '.join(known)}"
    )


def load_objectives(path: Path) -> Objectives:
    """Read an objectives file.

    Args:
        path: a TOML file with `[defaults]` (all three keys) and optional `[rpc."<Service>/<Rpc>"]`
            tables (any of the keys; the rest from the defaults).
    Returns:
        The objectives.
    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid TOML, a missing or unknown key, a negative or non-numeric value
            (the message names the key), an `rpc` table naming no RPC of any service.
    """
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - {"defaults", "rpc"})
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {', '.join(unknown)}; known: defaults, rpc")
    defaults = _objective(data.get("defaults"), "defaults", None)
    rpcs = data.get("rpc", {})
    if not isinstance(rpcs, dict):
        raise ValueError(f'{path}: rpc must hold tables, e.g. [rpc."Retrieval/Search"]')
    for name in rpcs:
        _check_request_name(name, path)
    return Objectives(defaults, {name: _objective(table, f'rpc."{name}"', defaults) for name, table in rpcs.items()})


@dataclasses.dataclass(frozen=True)
class RpcStep:
    """One RPC during one step.

    Attributes:
        name: the request name, e.g. "Retrieval/Search".
        calls: calls completed during the step.
        failures: of them, failed.
        calls_per_s: calls / the step's duration.
        p50_ms, p99_ms: latency percentiles at the step's end (locust's ~10 s window), ms;
            None when locust had none (no calls in the window).
    """

    name: str
    calls: int
    failures: int
    calls_per_s: float
    p50_ms: float | None
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclasses.dataclass(frozen=True)
class Step:
    """A stretch of the run at one user count: `users`, from `start` to `end` (Unix seconds of
    its first and last history rows), `duration_s` long, and its RPCs by name."""

    users: int
    start: int
    end: int
    duration_s: float
    rpcs: list[RpcStep]


def _number(text: str) -> float | None:
    """A percentile cell; locust writes N/A without calls and 0 when its window has no data yet."""
    return None if text in ("", "N/A", "0") else float(text)


def _read_csv(path: Path, needed: Sequence[str], what: str) -> list[dict[str, str]]:
    """The rows of one of locust's CSV files, each with every `needed` column filled.

    Raises:
        FileNotFoundError: no such file (the message says which `--csv` file it is).
        ValueError: a missing column, or a row cut short (a truncated file), naming its line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {what} at {path}: give the --csv PREFIX of a finished run (facet load --csv PREFIX, or locust "
            "--csv PREFIX --csv-full-history)"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = reader.fieldnames or []
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(f"{path} is not a locust {what}: no column {', '.join(missing)}")
    if not rows:  # locust writes an Aggregated row even for a run without calls
        raise ValueError(f"{path} has a header and no rows (a truncated file?)")
    for line, r in enumerate(rows, start=2):
        if None in r or None in r.values():
            raise ValueError(f"{path}: line {line} has too few or too many cells (a truncated file?)")
    return rows


def _int(r: dict[str, str], column: str, path: Path) -> int:
    try:
        return int(r[column])
    except ValueError:
        raise ValueError(f"{path}: {column} {r[column]!r} is not a whole number") from None


def read_steps(history_csv: Path, min_rows: int = 2) -> list[Step]:
    """Split locust's stats history into steps of constant user count.

    Args:
        history_csv: `<prefix>_stats_history.csv` of a run with `--csv-full-history`.
        min_rows: stretches with fewer seconds of history before another stretch (the ramp
            between two counts) are not steps; their calls count towards the next step. The
            last stretch is a step however short (a run of a few seconds has one or two rows).
    Returns:
        The steps in time order; those at 0 users left out.
    Raises:
        FileNotFoundError: no such file.
        ValueError: not a locust stats history (the message names the missing column), or a
            truncated one (naming the line).
    """
    needed = ("Timestamp", "User Count", "Name", "50%", "99%", "Total Request Count", "Total Failure Count")
    rows = _read_csv(history_csv, needed, "stats history (PREFIX_stats_history.csv)")
    for r in rows:
        for column in ("Timestamp", "User Count", "Total Request Count", "Total Failure Count"):
            _int(r, column, history_csv)
    # the user count of each second, from the Aggregated rows (written every interval)
    seconds = [(int(r["Timestamp"]), int(r["User Count"])) for r in rows if r["Name"] == AGGREGATED]
    stretches: list[list[int]] = []  # [users, first second, last second, rows]
    for second, users in seconds:
        if stretches and stretches[-1][0] == users:
            stretches[-1][2] = second
            stretches[-1][3] += 1
        else:
            stretches.append([users, second, second, 1])
    by_name: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        if r["Name"] != AGGREGATED:
            by_name.setdefault(r["Name"], []).append(r)
    steps: list[Step] = []
    previous_end: int | None = None  # last second counted into an earlier step
    last_busy = max((i for i, stretch in enumerate(stretches) if stretch[0] > 0), default=-1)
    for index, (users, first, last, count) in enumerate(stretches):
        if users == 0 or (count < min_rows and index < last_busy):
            continue
        duration = float(last - previous_end) if previous_end is not None else float(last - first + 1)
        rpcs = []
        for name, named in sorted(by_name.items()):
            before = [r for r in named if previous_end is not None and int(r["Timestamp"]) <= previous_end]
            upto = [r for r in named if int(r["Timestamp"]) <= last]
            if not upto:
                continue
            calls = int(upto[-1]["Total Request Count"]) - (int(before[-1]["Total Request Count"]) if before else 0)
            failures = int(upto[-1]["Total Failure Count"]) - (int(before[-1]["Total Failure Count"]) if before else 0)
            if calls <= 0:
                continue
            in_step = [r for r in upto if int(r["Timestamp"]) >= first]
            end_row = in_step[-1] if in_step else upto[-1]
            rpcs.append(
                RpcStep(name, calls, failures, calls / duration, _number(end_row["50%"]), _number(end_row["99%"]))
            )
        steps.append(Step(users, first, last, duration, rpcs))
        previous_end = last
    return steps


def read_run(stats_csv: Path, users: int) -> Step:
    """The whole run as one step, from locust's final `<prefix>_stats.csv` (exact percentiles over
    every call, not a window).

    Args:
        stats_csv: `<prefix>_stats.csv`.
        users: the run's peak user count (shown in the table).
    Returns:
        A Step with `start` and `end` 0 and `duration_s` NaN; calls/s is locust's run average.
    Raises:
        FileNotFoundError: no such file.
        ValueError: not a locust stats file, or a truncated one (naming the line).
    """
    needed = ("Name", "Request Count", "Failure Count", "Requests/s", "50%", "99%")
    rows = _read_csv(stats_csv, needed, "stats file (PREFIX_stats.csv)")
    for r in rows:
        for column in ("Request Count", "Failure Count"):
            _int(r, column, stats_csv)
    rpcs = [
        RpcStep(
            r["Name"],
            int(r["Request Count"]),
            int(r["Failure Count"]),
            float(r["Requests/s"]),
            _number(r["50%"]),
            _number(r["99%"]),
        )
        for r in rows
        if r["Name"] != AGGREGATED and int(r["Request Count"]) > 0
    ]
    return Step(users, 0, 0, math.nan, sorted(rpcs, key=lambda r: r.name))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One row of the table: an RPC in a step, its objective and what it broke (empty: passed)."""

    step: Step
    rpc: RpcStep
    objective: Objective
    breaches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.breaches


def check(steps: Sequence[Step], objectives: Objectives) -> list[Verdict]:
    """Every RPC of every step against its objective.

    A percentile locust did not report (no calls in its window) is not judged; the error rate is.
    """
    verdicts = []
    for step in steps:
        for rpc in step.rpcs:
            objective = objectives.of(rpc.name)
            breaches = []
            if rpc.p50_ms is not None and rpc.p50_ms > objective.p50_ms:
                breaches.append(f"p50 {rpc.p50_ms:g} > {objective.p50_ms:g} ms")
            if rpc.p99_ms is not None and rpc.p99_ms > objective.p99_ms:
                breaches.append(f"p99 {rpc.p99_ms:g} > {objective.p99_ms:g} ms")
            if rpc.error_rate > objective.error_rate:
                breaches.append(f"errors {rpc.error_rate:.1%} > {objective.error_rate:.1%}")
            verdicts.append(Verdict(step, rpc, objective, tuple(breaches)))
    return verdicts


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def format_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a text table, one block per step: step ("run" for the whole run), users,
    RPC, calls/s, p50, p99 ("-": locust had no window to report), errors (failed/calls), result
    (PASS, or FAIL and what broke)."""
    header = f"{'step':>4} {'users':>5}  {'rpc':<28} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>11}  result"
    lines = [header, "-" * len(header)]
    steps: list[Step] = []
    for v in verdicts:
        if not steps or steps[-1] is not v.step:
            if steps:
                lines.append("")
            steps.append(v.step)
        result = "PASS" if v.passed else "FAIL  " + "; ".join(v.breaches)
        errors = f"{v.rpc.failures}/{v.rpc.calls}"
        label = "run" if math.isnan(v.step.duration_s) else str(len(steps))
        lines.append(
            f"{label:>4} {v.step.users:>5}  {v.rpc.name:<28} {v.rpc.calls_per_s:>8.1f} {_ms(v.rpc.p50_ms):>7} {_ms(v.rpc.p99_ms):>7} {errors:>11}  {result}"
        )
    return "\n".join(lines)


def history_path(prefix: str | Path) -> Path:
    """locust's stats history of a `--csv PREFIX` run."""
    return Path(f"{prefix}_stats_history.csv")


def stats_path(prefix: str | Path) -> Path:
    """locust's final stats of a `--csv PREFIX` run."""
    return Path(f"{prefix}_stats.csv")


def run_check(prefix: str | Path, slo: Path, out: TextIO | None = None) -> int:
    """Print the table of a run and return 0 when every row passed, 1 on a breach or no data.

    Args:
        prefix: the run's `--csv` prefix.
        slo: the objectives file.
        out: a text stream (stdout by default).
    Returns:
        The exit status.
    Raises:
        FileNotFoundError, ValueError: as `load_objectives` and `read_steps`.
    """
    stream = out or sys.stdout
    objectives = load_objectives(slo)
    steps = read_steps(history_path(prefix))
    # one step: the run's exact percentiles judge it too; several: each step is what matters
    whole = [read_run(stats_path(prefix), steps[0].users)] if len(steps) == 1 else []
    verdicts = check([*steps, *whole], objectives)
    if not verdicts:
        print(
            f"SLO check: FAIL: no completed calls in {history_path(prefix)}: nothing to judge "
            "(did the users reach the service? see the run's failures and log)",
            file=stream,
        )
        return 1
    print(format_table(verdicts), file=stream)
    failed = [v for v in verdicts if not v.passed]
    if failed:
        print(
            f"\nSLO check: FAIL: {len(failed)} of {len(verdicts)} rows in {len(steps)} step(s) breach {slo}",
            file=stream,
        )
        return 1
    print(f"\nSLO check: PASS: {len(verdicts)} rows in {len(steps)} step(s) meet {slo}", file=stream)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m load.slo PREFIX [--slo FILE]`: exit 0 when the run met the objectives, 1 on a
    breach, 2 on an unreadable file."""
    parser = argparse.ArgumentParser(
        prog="python -m load.slo", description="check a locust run's CSV against SLOs, per step"
    )
    parser.add_argument("prefix", help="the run's --csv prefix (reads PREFIX_stats_history.csv)")
    parser.add_argument(
        "--slo",
        type=Path,
        default=Path(__file__).with_name("slo.toml"),
        help="objectives file (default: load/slo.toml)",
    )
    args = parser.parse_args(argv)
    try:
        return run_check(args.prefix, args.slo)
    except (OSError, ValueError) as exc:
        print(f"SLO check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
