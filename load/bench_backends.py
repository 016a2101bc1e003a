"""The same embedding workload on every backend, side by side, in one run.

    python load/bench_backends.py [--quick] [--json PATH]

Starts the retrieval service once per backend on the same model repository — ONNX Runtime
in-process (the reference), Triton (a real local tritonserver, python backend running the same
ONNX file) and Ray Serve (a real local Ray head; the model as a Serve deployment with
@serve.batch) — and drives each with real RAR-b sentences through the SDK:

  a. single-sentence Embed calls, 1 caller (sequential): p50 / p99 and the p50 overhead
  b. single-sentence Embed calls, 32 concurrent callers: calls/s and p50 / p99
  c. 32-sentence Embed calls, 1 caller: sentences/s and p50 / p99

Backends run in alternating rounds, so background load hits each alike; read the ratios.
Every server gets the same ONNX Runtime thread count (--threads). Targets (issue #5): overhead
≤ 2 ms p50 at concurrency 1, throughput ≥ 0.8× of in-process at concurrency 32.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load.harness import (  # noqa: E402
    DEFAULT_DATA,
    BenchmarkService,
    LoadResult,
    default_model_repository,
    free_port,
    log,
    p50_p99_text,
    percentile,
    real_sentences,
    sequential_calls,
    table_text,
)
from load.retrieval_embed import concurrent_single_calls  # noqa: E402
from load.retrieval_workload import MODEL  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402

BACKENDS = ("onnxruntime", "triton", "ray")


def sequential(address: str, calls: list[list[str]]) -> LoadResult:
    """Each call's texts embedded in turn by one client, after one warm-up call."""
    with sdk.Client(retrieval=address) as client:
        return sequential_calls(client.embed, calls)


def run(args: argparse.Namespace) -> dict[str, dict[str, LoadResult]]:
    from deploy.ray_cluster import LocalRay
    from deploy.triton import TritonServer, write_python_repository

    repository = ModelRepository(args.repository)
    if not repository.has(MODEL):
        raise SystemExit(f"{MODEL} is not in {repository.root}; build it with `facet models build --services retrieval`")
    texts = real_sentences(args.data, 300, seed=0)
    singles, batch_texts = texts[: args.calls], texts[args.calls : args.calls + 32 * args.batch_calls]
    batches = [batch_texts[i : i + 32] for i in range(0, len(batch_texts), 32)]
    work = Path(tempfile.mkdtemp(prefix="facet-bench-backends-"))
    threads = {"FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(args.threads)}
    write_python_repository(repository, work / "triton-repository", [MODEL], intra_op_num_threads=args.threads)
    triton = TritonServer(work / "triton-repository", work, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())
    ray_head = LocalRay(port=free_port(), dashboard_port=free_port(), temp_dir=Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    servers: dict[str, BenchmarkService] = {}
    backends = ["onnxruntime", *(b for b in args.backends if b != "onnxruntime")]
    results: dict[str, dict[str, LoadResult]] = {b: {"c1": LoadResult(), "c32": LoadResult(), "batch32": LoadResult()} for b in backends}
    try:
        settings = {"onnxruntime": threads}
        if "triton" in backends:
            triton.start()
            settings["triton"] = {**threads, "FACET_BACKEND": "triton", "FACET_TRITON_URL": triton.url}
        if "ray" in backends:
            ray_head.start()
            settings["ray"] = {**threads, "FACET_BACKEND": "ray", "FACET_RAY_ADDRESS": ray_head.address}
        for backend, env in settings.items():
            servers[backend] = BenchmarkService("retrieval", repository.root, env, label=backend).spawn()
        addresses = {b: s.wait_until_serving().address for b, s in servers.items()}
        for round_ in range(args.rounds):
            lead = round_ % len(backends)
            for backend in backends[lead:] + backends[:lead]:  # each backend leads in turn
                log(f"round {round_ + 1}/{args.rounds}: {backend}")
                address = addresses[backend]
                results[backend]["c1"].add(sequential(address, [[t] for t in singles]))
                results[backend]["c32"].add(concurrent_single_calls(address, singles, 32, args.seconds))
                results[backend]["batch32"].add(sequential(address, batches))
    finally:
        for server in servers.values():
            server.stop()
        if "triton" in backends:
            triton.stop()
        if "ray" in backends:
            ray_head.stop()
    return results


def table(results: dict[str, dict[str, LoadResult]]) -> str:
    ref = results["onnxruntime"]
    header = ("backend", "1 caller p50 / p99 ms", "p50 overhead", "32 callers calls/s", "vs in-process", "32 callers p50 / p99 ms",
              "32-sentence calls sent./s", "vs in-process", "p50 / p99 ms")  # fmt: skip
    rows = []
    for backend, r in results.items():
        sentences = 32 * r["batch32"].per_second
        rows.append((
            backend if backend != "onnxruntime" else "onnxruntime (in-process)",
            p50_p99_text(r["c1"].latencies_ms),
            f"{percentile(r['c1'].latencies_ms, 50) - percentile(ref['c1'].latencies_ms, 50):+.2f} ms",
            f"{r['c32'].per_second:.1f}",
            f"{r['c32'].per_second / ref['c32'].per_second:.2f}×",
            p50_p99_text(r["c32"].latencies_ms),
            f"{sentences:.0f}",
            f"{r['batch32'].per_second / ref['batch32'].per_second:.2f}×",
            p50_p99_text(r["batch32"].latencies_ms),
        ))  # fmt: skip
    return table_text(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: the configured one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, every backend")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=200, help="single-sentence calls per round (1 caller)")
    parser.add_argument("--batch-calls", type=int, default=30, help="32-sentence calls per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="32-caller load per round")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="backends to compare (in-process always runs: it is the reference)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="2 rounds, 50 calls, 10 batches, 3 s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.batch_calls, args.seconds = 2, 50, 10, 3.0
    args.repository = args.repository or default_model_repository()
    started = time.monotonic()
    results = run(args)
    errors = {b: r["c32"].errors for b, r in results.items() if r["c32"].errors}
    print(f"\nEmbed on each backend ({args.rounds} alternating rounds, {args.threads} ONNX Runtime threads, "
          f"{time.monotonic() - started:.0f} s)\n")  # fmt: skip
    print(table(results))
    if errors:
        print(f"\nerrors under load: {errors}")
    if args.json:
        summary: Callable[[LoadResult], dict[str, float]] = lambda x: {  # noqa: E731
            "per_second": x.per_second, "p50_ms": percentile(x.latencies_ms, 50), "p99_ms": percentile(x.latencies_ms, 99), "errors": x.errors}  # fmt: skip
        args.json.write_text(json.dumps({b: {k: summary(v) for k, v in r.items()} for b, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
