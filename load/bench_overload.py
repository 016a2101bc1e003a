"""Overload, side by side: a burst of large Embeds, with small Embeds sent meanwhile, against two
retrieval servers started from the same model repository (issue #12, item 12).

    python load/bench_overload.py [--calls 120] [--texts 32] [--chars 2000] [--small 20] [--deadline-s 10]

With `--services` it measures every service instead (issue #13, part 4; `load/faults_overload.py`):
share refused, time to rejection, p99 of admitted calls, recovery time and peak memory, one
table per service:

    python load/bench_overload.py --services all [--calls 60] [--deadline-s 5] [--repository sae=/path]

  (a) Facet's default: `batching.deadline_admission` on (a call the queued work cannot finish
      before its deadline is refused at once), with the batcher's fair queueing;
  (b) admission off (`FACET_BATCHING_DEADLINE_ADMISSION=false`): the same batcher, fair queueing
      and queue limit (`batching.max_queue_size`) included, without the deadline check.

Each round sends `--calls` concurrent Embeds of `--texts` long texts (`--chars` characters of
real sentences each) at one server, and, starting `--small-after-s` later, `--small` one-sentence
Embeds spaced `--small-interval-s` apart, each without waiting for the others. Every call has a
deadline of `--deadline-s` and no retries (`sdk.RetryPolicy(max_attempts=1)`). The sides take
turns (a b, then b a, ...) on an otherwise idle machine, and between bursts the server that was
used drains its queue; the client runs on the same machine, so read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load import faults_overload  # noqa: E402
from load.faults_overload import OverloadSettings  # noqa: E402
from load.harness import (  # noqa: E402
    DEFAULT_DATA,
    BenchmarkService,
    default_model_repository,
    log,
    percentile,
    real_sentences,
    table_text,
)
from services import registry  # noqa: E402
from services.backends.batching import DEADLINE_LIMIT_KEY, QUEUE_LIMIT_KEY  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402
from services.retrieval.config import RetrievalConfig  # noqa: E402

MODEL = RetrievalConfig().embedding_model
ADMISSION_SETTING = "FACET_BATCHING_DEADLINE_ADMISSION"
OUTCOMES = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "other")
# the config keys a RESOURCE_EXHAUSTED message names: which limit refused the call
LIMIT_KEYS = (DEADLINE_LIMIT_KEY, QUEUE_LIMIT_KEY, "server.max_concurrent_rpcs")
DRAIN_TIMEOUT_S = 120.0  # a server's queue empties after a burst (chunks past their deadline are dropped)


@dataclasses.dataclass(frozen=True)
class Settings:
    calls: int
    texts: int
    chars: int
    small: int
    small_after_s: float
    small_interval_s: float
    deadline_s: float
    rounds: int
    warmup_calls: int
    progress_s: float
    model_repository: Path
    data: Path
    seed: int
    json_path: Path | None
    server_settings: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Side:
    """One configuration: its label in the report and the settings its server gets."""

    key: str
    title: str
    settings: dict[str, str]


SIDES = (
    Side("a", "(a) admission on (default)", {}),
    Side("b", "(b) admission off", {ADMISSION_SETTING: "false"}),
)


@dataclasses.dataclass
class Outcomes:
    """Calls of one kind (large or small) in the bursts of one side: each one's outcome and the
    milliseconds from sending it until its answer (a result or an error) arrived."""

    sent: int = 0
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    ms: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {o: [] for o in OUTCOMES})
    refused_by: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys((*LIMIT_KEYS, "?"), 0))
    other_examples: list[str] = dataclasses.field(default_factory=list)

    def record(self, outcome: str, ms: float, error: BaseException | None = None) -> None:
        self.counts[outcome] += 1
        self.ms[outcome].append(ms)
        if outcome == "RESOURCE_EXHAUSTED":
            self.refused_by[next((k for k in LIMIT_KEYS if k in str(error)), "?")] += 1
        if outcome == "other" and len(self.other_examples) < 3:
            self.other_examples.append(f"{type(error).__name__}: {str(error)[:200]}")

    @property
    def answered(self) -> int:
        return sum(self.counts.values())

    @property
    def all_ms(self) -> list[float]:
        return [m for values in self.ms.values() for m in values]


@dataclasses.dataclass
class SideResult:
    large: Outcomes = dataclasses.field(default_factory=Outcomes)
    small: Outcomes = dataclasses.field(default_factory=Outcomes)
    burst_seconds: float = 0.0  # first call sent .. last answer, summed over rounds
    rows_run: float = 0.0  # rows the model ran during the bursts (its /metrics)
    refusal_messages: dict[str, str] = dataclasses.field(default_factory=dict)  # one example per outcome


def outcome_of(error: BaseException) -> str:
    if isinstance(error, sdk.ResourceExhausted):
        return "RESOURCE_EXHAUSTED"
    if isinstance(error, sdk.DeadlineExceeded):
        return "DEADLINE_EXCEEDED"
    return "other"


# -- one burst -----------------------------------------------------------------------------


async def timed_call(
    client: sdk.AsyncClient, texts: list[str], deadline_s: float, into: Outcomes, result: SideResult
) -> None:
    """One Embed; its outcome and time to answer go into `into`."""
    into.sent += 1
    began = time.perf_counter()
    try:
        await client.embed(texts, timeout_s=deadline_s)
    except sdk.FacetError as exc:
        outcome = outcome_of(exc)
        into.record(outcome, (time.perf_counter() - began) * 1e3, exc)
        result.refusal_messages.setdefault(outcome, str(exc)[:300])
        return
    into.record("OK", (time.perf_counter() - began) * 1e3)


async def report_progress(label: str, burst: SideResult, s: Settings) -> None:
    """A progress line every `s.progress_s` while a burst runs (cancelled when it ends)."""
    began = time.perf_counter()
    while True:
        await asyncio.sleep(s.progress_s)
        large, small = burst.large, burst.small
        log(
            f"  {label} {time.perf_counter() - began:5.1f} s: large {large.answered}/{s.calls} answered "
            f"(OK {large.counts['OK']}, RESOURCE_EXHAUSTED {large.counts['RESOURCE_EXHAUSTED']}, "
            f"DEADLINE_EXCEEDED {large.counts['DEADLINE_EXCEEDED']}, other {large.counts['other']}); "
            f"small {small.answered}/{small.sent} answered"
        )


async def run_burst(
    label: str, server: BenchmarkService, s: Settings, large_calls: list[list[str]], small_texts: list[str]
) -> SideResult:
    """The large calls all at once and the small calls spaced out, against `server`."""
    burst = SideResult()
    rows_before = rows_run(server)
    async with sdk.AsyncClient(
        retrieval=server.address, timeout_s=s.deadline_s, retry=sdk.RetryPolicy(max_attempts=1)
    ) as client:

        async def small_calls() -> None:
            await asyncio.sleep(s.small_after_s)
            pending = []
            for i, text in enumerate(small_texts):
                pending.append(asyncio.ensure_future(timed_call(client, [text], s.deadline_s, burst.small, burst)))
                if i + 1 < len(small_texts):
                    await asyncio.sleep(s.small_interval_s)
            await asyncio.gather(*pending)

        progress = asyncio.ensure_future(report_progress(label, burst, s))
        began = time.perf_counter()
        try:
            await asyncio.gather(
                *(timed_call(client, texts, s.deadline_s, burst.large, burst) for texts in large_calls), small_calls()
            )
        finally:
            progress.cancel()
        burst.burst_seconds = time.perf_counter() - began
    await drained(server)
    burst.rows_run = rows_run(server) - rows_before
    return burst


def metric_value(server: BenchmarkService, name: str) -> float:
    """The sum of `name`'s samples for the embedding model on the server's /metrics (0.0 when absent)."""
    return sum(float(x.value) for x in server.metric_samples() if x.name == name and x.labels.get("model") == MODEL)


def rows_run(server: BenchmarkService) -> float:
    return metric_value(server, "facet_batch_size_sum")


async def drained(server: BenchmarkService) -> None:
    """Wait until the server's batcher has no queued rows (after a burst, before the next)."""
    end = time.monotonic() + DRAIN_TIMEOUT_S
    while metric_value(server, "facet_batcher_queued_rows") > 0:
        if time.monotonic() > end:
            raise SystemExit(
                f"bench_overload: {server.label} still has queued rows {DRAIN_TIMEOUT_S:.0f} s after a burst"
            )
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.5)  # the last running batch finishes


async def warm_up(server: BenchmarkService, s: Settings, large: list[str], small: list[str]) -> None:
    """A few sequential calls of the burst's sizes, so both servers start the burst alike."""
    async with sdk.AsyncClient(retrieval=server.address, timeout_s=120.0) as client:
        for _ in range(s.warmup_calls):
            await client.embed(large)
            await client.embed(small)


# -- the benchmark -------------------------------------------------------------------------


def workload(s: Settings) -> tuple[list[list[str]], list[str]]:
    """The large calls' texts and the small calls' sentences.

    Long texts are real sentences joined until `s.chars` characters; call i takes `s.texts` of
    them starting at a different place in the pool, so calls do not repeat each other's texts.
    """
    sentences = real_sentences(s.data, seed=s.seed)
    small = sentences[: s.small]
    rest = iter(sentences[s.small :])
    pool: list[str] = []
    for _ in range(max(s.texts * 4, 64)):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < s.chars:
            try:
                parts.append(next(rest))
            except StopIteration:
                raise SystemExit(f"not enough sentences in {s.data} for texts of {s.chars} characters") from None
        pool.append(" ".join(parts)[: s.chars])
    calls = [[pool[(i * 7 + j) % len(pool)] for j in range(s.texts)] for i in range(s.calls)]
    return calls, small


async def run_benchmark(s: Settings) -> dict[str, SideResult]:
    try:
        ModelRepository(s.model_repository).get(MODEL)
    except LookupError as exc:
        raise SystemExit(f"bench_overload: {exc}; build it with `make models` or pass --model-repository") from None
    large_calls, small_texts = workload(s)
    results = {side.key: SideResult() for side in SIDES}
    servers: dict[str, BenchmarkService] = {}
    try:
        log(f"starting 2 retrieval servers ({', '.join(side.title for side in SIDES)}) from {s.model_repository}")
        for side in SIDES:
            servers[side.key] = BenchmarkService(
                "retrieval", s.model_repository, {**s.server_settings, **side.settings}, label=side.key, metrics_port=0
            ).spawn()
        for side in SIDES:
            await asyncio.to_thread(servers[side.key].wait_until_serving)
            await warm_up(servers[side.key], s, large_calls[-1], small_texts[-1:] or ["a warm-up sentence"])
        log("serving and warmed up: " + ", ".join(f"{k} at {v.address} (pid {v.pid})" for k, v in servers.items()))
        for round_index in range(s.rounds):
            order = SIDES if round_index % 2 == 0 else SIDES[::-1]
            for side in order:
                label = f"round {round_index + 1}/{s.rounds} {side.title}"
                log(f"{label}: {s.calls} Embeds of {s.texts} x {s.chars} chars, {s.small} small Embeds")
                burst = await run_burst(label, servers[side.key], s, large_calls, small_texts)
                merge(results[side.key], burst)
                log(
                    f"{label}: done in {burst.burst_seconds:.1f} s; large {burst.large.counts}, "
                    f"small {burst.small.counts}"
                )
    finally:
        for server in servers.values():
            server.stop()
    for key, server in servers.items():
        results[key].refusal_messages["server problems"] = "; ".join(server.problems[:4]) or "none"
    return results


def merge(total: SideResult, burst: SideResult) -> None:
    for mine, theirs in ((total.large, burst.large), (total.small, burst.small)):
        mine.sent += theirs.sent
        for outcome in OUTCOMES:
            mine.counts[outcome] += theirs.counts[outcome]
            mine.ms[outcome] += theirs.ms[outcome]
        for key, n in theirs.refused_by.items():
            mine.refused_by[key] += n
        mine.other_examples += theirs.other_examples[: 3 - len(mine.other_examples)]
    total.burst_seconds += burst.burst_seconds
    total.rows_run += burst.rows_run
    for outcome, message in burst.refusal_messages.items():
        total.refusal_messages.setdefault(outcome, message)


# -- the report ----------------------------------------------------------------------------


def ms_text(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN: no such calls


def ratio_text(a: float, b: float) -> str:
    if a != a or b != b or a <= 0:
        return "-"
    return f"{b / a:.1f}x"


def table(s: Settings, results: dict[str, SideResult]) -> str:
    a, b = results["a"], results["b"]
    rows: list[tuple[str, str, str, str]] = []

    def count(measure: str, value_of: Callable[[SideResult], object]) -> None:
        rows.append((measure, str(value_of(a)), str(value_of(b)), ""))

    def timing(measure: str, values_of: Callable[[SideResult], list[float]], q: float | None, with_ratio: bool) -> None:
        va, vb = values_of(a), values_of(b)
        xa = max(va, default=float("nan")) if q is None else percentile(va, q)
        xb = max(vb, default=float("nan")) if q is None else percentile(vb, q)
        rows.append((measure, ms_text(xa), ms_text(xb), ratio_text(xa, xb) if with_ratio else ""))

    count("large calls sent", lambda r: r.large.sent)
    for outcome in OUTCOMES:
        rows.append((f"  {outcome}", str(a.large.counts[outcome]), str(b.large.counts[outcome]), ""))
    for key in LIMIT_KEYS:
        rows.append((f"    RE naming {key}", str(a.large.refused_by[key]), str(b.large.refused_by[key]), ""))
    if a.large.refused_by["?"] or b.large.refused_by["?"]:
        rows.append(("    RE naming none of these", str(a.large.refused_by["?"]), str(b.large.refused_by["?"]), ""))
    refused = "RESOURCE_EXHAUSTED"
    timing("time until RESOURCE_EXHAUSTED arrived, p50 ms", lambda r: r.large.ms[refused], 50, True)
    timing("time until RESOURCE_EXHAUSTED arrived, p95 ms", lambda r: r.large.ms[refused], 95, True)
    timing("time until RESOURCE_EXHAUSTED arrived, max ms", lambda r: r.large.ms[refused], None, True)
    timing("time until DEADLINE_EXCEEDED arrived, p50 ms", lambda r: r.large.ms["DEADLINE_EXCEEDED"], 50, False)
    timing("large-call latency when OK, p95 ms", lambda r: r.large.ms["OK"], 95, False)
    count(
        "small calls sent: OK / RE / DE / other",
        lambda r: f"{r.small.sent}: " + " / ".join(str(r.small.counts[o]) for o in OUTCOMES),
    )
    timing("small-call latency (until answered), p50 ms", lambda r: r.small.all_ms, 50, False)
    timing("small-call latency (until answered), p95 ms", lambda r: r.small.all_ms, 95, True)
    timing("small-call latency (until answered), max ms", lambda r: r.small.all_ms, None, False)
    count("texts embedded OK per second of burst", lambda r: f"{goodput(s, r):.1f}")
    count("rows the model ran for calls that failed", lambda r: f"{wasted_rows(s, r):.0f}")
    return table_text(("measure", SIDES[0].title, SIDES[1].title, "(b)/(a)"), rows)


def goodput(s: Settings, r: SideResult) -> float:
    texts_ok = r.large.counts["OK"] * s.texts + r.small.counts["OK"]
    return texts_ok / r.burst_seconds if r.burst_seconds else 0.0


def wasted_rows(s: Settings, r: SideResult) -> float:
    """Rows run during the bursts beyond those returned to OK calls (work whose caller got an error)."""
    return r.rows_run - (r.large.counts["OK"] * s.texts + r.small.counts["OK"])


def print_report(s: Settings, results: dict[str, SideResult], wall_s: float, load_before: float) -> None:
    print()
    print(
        f"Facet overload benchmark: {s.rounds} round(s) per side of {s.calls} concurrent Embeds of {s.texts} texts "
        f"x {s.chars} chars, {s.small} one-sentence Embeds sent {s.small_interval_s:g} s apart from "
        f"{s.small_after_s:g} s in; deadline {s.deadline_s:g} s, no retries. Wall time {wall_s:.0f} s."
    )
    print(table(s, results))
    print()
    print(
        f"- {os.cpu_count()} CPUs, client on the same machine; service defaults otherwise"
        + (f" plus {s.server_settings}" if s.server_settings else "")
        + f"; 1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end."
    )
    print(
        "- RE = RESOURCE_EXHAUSTED, DE = DEADLINE_EXCEEDED; times are from sending a call to its answer, at the client."
    )
    for side in SIDES:
        r = results[side.key]
        for outcome, message in r.refusal_messages.items():
            print(f"- {side.title}, {outcome}: {message}")
        for example in r.large.other_examples + r.small.other_examples:
            print(f"- {side.title}, other error: {example}")


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=120, help="concurrent large Embeds per burst")
    parser.add_argument("--texts", type=int, default=32, help="texts per large Embed")
    parser.add_argument("--chars", type=int, default=2000, help="characters per long text")
    parser.add_argument("--small", type=int, default=20, help="one-sentence Embeds per burst")
    parser.add_argument("--small-after-s", type=float, default=0.5, help="first small call this long after the burst")
    parser.add_argument("--small-interval-s", type=float, default=0.25, help="seconds between small calls")
    parser.add_argument("--deadline-s", type=float, default=10.0, help="deadline of every call")
    parser.add_argument("--rounds", type=int, default=2, help="bursts per side, the sides taking turns (a b, b a, ...)")
    parser.add_argument("--warmup-calls", type=int, default=2, help="sequential large + small calls per server first")
    parser.add_argument("--progress-s", type=float, default=2.0, help="seconds between progress lines")
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="default: $FACET_MODEL_REPOSITORY, else the per-user default (build it with `make models`)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real sentences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the raw results here as JSON")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="FACET_KEY=VALUE",
        help="a setting for both servers (repeatable); the admission switch is the benchmark's",
    )
    args = parser.parse_args(argv)
    for name in ("calls", "texts", "chars", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    for name in ("small", "warmup_calls"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    for name in ("deadline_s", "progress_s"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    for name in ("small_after_s", "small_interval_s"):
        if not getattr(args, name) >= 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    server_settings = dict(item.split("=", 1) for item in args.server_env)
    if ADMISSION_SETTING in server_settings:
        parser.error(f"{ADMISSION_SETTING} is what the benchmark compares; do not set it with --server-env")
    return Settings(
        calls=args.calls,
        texts=args.texts,
        chars=args.chars,
        small=args.small,
        small_after_s=args.small_after_s,
        small_interval_s=args.small_interval_s,
        deadline_s=args.deadline_s,
        rounds=args.rounds,
        warmup_calls=args.warmup_calls,
        progress_s=args.progress_s,
        model_repository=args.model_repository or default_model_repository(),
        data=args.data,
        seed=args.seed,
        json_path=args.json,
        server_settings=server_settings,
    )


def parse_per_service(argv: Sequence[str]) -> OverloadSettings:
    """The options of `--services` mode (see load/faults_overload.py)."""
    parser = argparse.ArgumentParser(prog="bench_overload.py --services", description=faults_overload.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--services", required=True, help="comma-separated registry names, or 'all'")
    parser.add_argument("--calls", type=int, default=60, help="large calls sent at once per service")
    parser.add_argument("--deadline-s", type=float, default=5.0, help="deadline of every large call")
    parser.add_argument(
        "--probe-interval-s", type=float, default=0.1, help="seconds between small calls after the burst"
    )
    parser.add_argument(
        "--probe-deadline-s", type=float, default=2.0, help="deadline of each small call after the burst"
    )
    parser.add_argument("--repository", action="append", default=[], metavar="SERVICE=PATH",
                        help="a service's model repository (repeatable); default: $FACET_MODEL_REPOSITORY, "
                        "else the per-user default")  # fmt: skip
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real sentences)")
    args = parser.parse_args(argv)
    if args.calls < 1 or not args.deadline_s > 0 or not args.probe_interval_s > 0 or not args.probe_deadline_s > 0:
        parser.error("--calls must be >= 1 and --deadline-s, --probe-interval-s, --probe-deadline-s > 0")
    services = (
        tuple(registry.names())
        if args.services == "all"
        else tuple(n.strip() for n in args.services.split(",") if n.strip())
    )
    given = dict(item.split("=", 1) for item in args.repository)
    default = default_model_repository()
    return OverloadSettings(
        services=services,
        calls=args.calls,
        deadline_s=args.deadline_s,
        probe_interval_s=args.probe_interval_s,
        probe_deadline_s=args.probe_deadline_s,
        repositories={name: Path(given.get(name, default)) for name in services},
        data=args.data,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--services" or a.startswith("--services=") for a in args):
        faults_overload.run(parse_per_service(args))
        return 0
    s = parse_settings(argv)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = asyncio.run(run_benchmark(s))
    print_report(s, results, time.perf_counter() - began, load_before)
    if s.json_path is not None:
        payload = {"settings": dataclasses.asdict(s), "results": {k: dataclasses.asdict(v) for k, v in results.items()}}
        s.json_path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"- results written to {s.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
