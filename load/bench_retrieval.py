"""Benchmark the retrieval service against in-process baselines, side by side, in one run.

    python load/bench_retrieval.py [--quick] [--json PATH]

Starts real `python -m services.retrieval` processes (each with a fresh data dir, stopped
with SIGTERM at the end, also on failure) and measures:

  a. Embed throughput over gRPC (concurrent clients, 32 real sentences per call) vs
     sentence-transformers `encode` in this process on the same batches and thread count.
  b. Single-sentence Embed latency over gRPC (one client, sequential) vs the same ONNX model
     run in this process with the same tokenizer, with batching off and on.
  c. Dynamic batching on vs off: throughput with 32 concurrent single-sentence callers.
  d. Search top-10 latency over 100k stored vectors (flat and HNSW), HNSW recall@10 vs flat,
     and the server's resident memory per 100k documents.

Measurements that are compared run back to back in alternating rounds, so background load
hits both sides alike; the machine may be shared, so read ratios, not absolute numbers.
`--quick` uses 10k documents and shorter runs (about 2 minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

from load.harness import (  # noqa: E402
    DEFAULT_DATA,
    BenchmarkService,
    Results,
    default_model_repository,
    log,
    print_results,
    real_sentences,
)
from load.retrieval_embed import (  # noqa: E402
    InProcessOnnx,
    load_sentence_transformer,
    measure_batching,
    measure_embed_throughput,
    measure_single_latency,
)
from load.retrieval_search import build_corpus, measure_search  # noqa: E402
from load.retrieval_workload import FULL, MODEL, QUICK, UPSERT_BATCH, Settings, server_env, split_workload  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402

# The measurements: a-c (Embed) in load/retrieval_embed.py, d (Search) in load/retrieval_search.py.


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k documents, shorter runs (~2 minutes)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="default: $FACET_MODEL_REPOSITORY, else the per-user default (build it with `make models`)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real sentences)")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="ONNX Runtime intra-op threads in the server and in-process, and torch threads",
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for Embed throughput")
    parser.add_argument("--callers", type=int, default=32, help="concurrent single-sentence callers (batching)")
    parser.add_argument("--documents", type=int, help="vectors per collection (default 100k, 10k with --quick)")
    parser.add_argument("--noise", type=float, default=0.02, help="gaussian noise std per dimension for documents")
    parser.add_argument("--max-chars", type=int, default=300, help="skip texts longer than this (paragraphs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="FACET_KEY=VALUE",
        help="a setting for every server started (repeatable), e.g. FACET_BATCHING_MAX_QUEUE_DELAY_MICROSECONDS=2000",
    )
    args = parser.parse_args(argv)
    for name in ("threads", "clients", "callers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.documents is not None and args.documents <= UPSERT_BATCH:
        parser.error(f"--documents must be > {UPSERT_BATCH}")
    plan = QUICK if args.quick else FULL
    if args.documents:
        plan = dataclasses.replace(plan, documents=args.documents)
    return Settings(
        plan=plan,
        quick=args.quick,
        model_repository=args.model_repository or default_model_repository(),
        data=args.data,
        threads=args.threads,
        clients=args.clients,
        callers=args.callers,
        noise=args.noise,
        max_chars=args.max_chars,
        seed=args.seed,
        json_path=args.json,
        server_settings=dict(item.split("=", 1) for item in args.server_env),
    )


# -- the benchmark -------------------------------------------------------------------------


def run_benchmark(s: Settings) -> Results:
    out = Results()
    try:
        entry = ModelRepository(s.model_repository).get(MODEL)
    except LookupError as exc:
        raise SystemExit(f"bench_retrieval: {exc}; build it with `make models`") from None
    work = split_workload(real_sentences(s.data, s.max_chars, s.seed), s.plan)
    servers: list[BenchmarkService] = []

    def spawn(label: str, batching: bool) -> BenchmarkService:
        server = BenchmarkService(
            "retrieval", s.model_repository, server_env(s, batching), label=label, metrics_port=0
        )  # /metrics: batch sizes and queue times for the report
        servers.append(server)
        return server.spawn()

    try:
        log(f"starting 2 retrieval servers (batching on / off, {s.threads} ORT threads) from {s.model_repository}")
        on = spawn("batching-on", batching=True)
        off = spawn("batching-off", batching=False)
        log("loading sentence-transformers and the in-process ONNX session")
        st = load_sentence_transformer(s.threads)
        local = InProcessOnnx(entry, s.threads)
        on.wait_until_serving()
        off.wait_until_serving()
        log(f"serving: batching on at {on.address} (pid {on.pid}), off at {off.address} (pid {off.pid})")
        measure_embed_throughput(s, work, on, off, st, out)
        measure_single_latency(s, work, on, off, local, out)
        measure_batching(s, work, on, off, out)
        corpus = build_corpus(s, work, on)  # here, so the search server's memory holds only the collections
        on.stop()
        off.stop()
        del st, local
        log("starting a fresh server (default batching) for the search measurements")
        search = spawn("search", batching=True).wait_until_serving()
        measure_search(s, corpus, search, out)
    finally:
        for server in servers:
            server.stop()
    out.raw["servers"] = {
        srv.label: {"stop_seconds": srv.stop_seconds, "exit_code": srv.exit_code, "problems": srv.problems}
        for srv in servers
    }
    return out


def print_report(s: Settings, out: Results, wall: float) -> None:
    problems = [f"[{label}] {p}" for label, info in out.raw["servers"].items() for p in info["problems"]]
    print_results(f"Facet retrieval benchmark ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s", out, problems,
                  "service problems seen in logs / exit codes")  # fmt: skip
    stops = [
        f"{label} {info['stop_seconds']:.1f} s (exit {info['exit_code']})"
        for label, info in out.raw["servers"].items()
        if info["stop_seconds"] is not None
    ]
    print("- servers stopped after SIGTERM in: " + ", ".join(stops))


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    out = run_benchmark(s)
    wall = time.perf_counter() - began
    out.notes[:0] = [
        f"threads: server ONNX Runtime intra_op={s.threads} inter_op=1, in-process ONNX Runtime the same, "
        f"torch.set_num_threads({s.threads}) for sentence-transformers; {os.cpu_count()} CPUs; clients run on the "
        f"same machine. 1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end.",
        f"texts: real RAR-b MCR queries and candidates from {s.data} (unique, <= {s.max_chars} characters), "
        f"shuffled with seed {s.seed}; each measurement uses its own slice.",
        "a/b/c: the sides take turns (rounds of 2 batches per client; blocks of 10 calls; "
        f"{s.plan.slice_seconds:.0f} s slices), so background load hits them alike; compare ratios, not absolutes.",
    ]
    print_report(s, out, wall)
    if s.json_path is not None:
        out.write_json(s.json_path, s, wall, mode="quick" if s.quick else "full")
    return 0


if __name__ == "__main__":
    sys.exit(main())
