"""The retrieval benchmark's Embed measurements (a-c), each side by side with what a user would run
in their own process:

  a. Embed throughput over gRPC (concurrent clients, 32 real sentences per call) vs
     sentence-transformers `encode` in this process on the same batches and thread count.
  b. Single-sentence Embed latency over gRPC (one client, sequential) vs the same ONNX model
     run in this process with the same tokenizer, with batching off and on.
  c. Dynamic batching on vs off: throughput with 32 concurrent single-sentence callers.

Also the Embed calls the search measurements use to make their corpus (`embed_corpus`), and the
32-caller load that `load/bench_backends.py` puts on each backend (`concurrent_single_calls`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

import sdk
from load.harness import (
    BenchmarkService,
    LoadResult,
    Results,
    Row,
    callers_for_duration,
    drain,
    log,
    percentile,
    timed_ms,
)
from load.retrieval_workload import BATCHING, SENTENCES_PER_CALL, Settings, Workload
from services.backends.onnx_session import create_session
from services.model_repository import ModelVersion
from services.retrieval.tokenization import TextTokenizer

HISTOGRAM_KEYS = {
    "facet_batch_size_sum": "batch_rows_sum",
    "facet_batch_size_count": "batches",
    "facet_queue_time_seconds_sum": "queue_s_sum",
    "facet_queue_time_seconds_count": "queued",
    "facet_request_latency_seconds_sum": "embed_s_sum",
    "facet_request_latency_seconds_count": "embeds",
}


# -- baselines in this process ---------------------------------------------------------------


class InProcessOnnx:
    """The model the service runs, in this process: same model.onnx, tokenizer and thread settings."""

    def __init__(self, entry: ModelVersion, threads: int) -> None:
        # inter_op 1: the service's default; CPU: the service's provider on this machine
        self.session = create_session(
            entry.model_file, providers="cpu", intra_op_num_threads=threads, inter_op_num_threads=1
        )
        self.tokenizer = TextTokenizer(entry.file("tokenizer"), int(entry.metadata["properties"]["max_seq_length"]))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def embed(self, texts: list[str]) -> np.ndarray:
        batch = self.tokenizer(texts)
        outputs = self.session.run(
            self.output_names, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        )
        return outputs[self.output_names.index("sentence_embedding_normalized")]


def load_sentence_transformer(threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    from training.retrieval.export import packaged_minilm_dir

    torch.set_num_threads(threads)
    return SentenceTransformer(str(packaged_minilm_dir()), device="cpu", local_files_only=True)


def st_encode_seconds(model: Any, batches: list[list[str]]) -> float:
    """Seconds for sentence-transformers to encode each batch (one encode call per batch, as facet gets them)."""
    start = time.perf_counter()
    for batch in batches:
        model.encode(batch, batch_size=SENTENCES_PER_CALL, show_progress_bar=False)
    return time.perf_counter() - start


# -- calls over gRPC -----------------------------------------------------------------------


async def _facet_embed_seconds(address: str, batches: list[list[str]], clients: int) -> float:
    pool = [sdk.AsyncClient(retrieval=address) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.embed(batches[0][:1]) for c in pool))  # open the channels
        return await drain(batches, [c.embed for c in pool])
    finally:
        await asyncio.gather(*(c.close() for c in pool))


def facet_embed_seconds(address: str, batches: list[list[str]], clients: int) -> float:
    """Seconds for `clients` concurrent clients to embed every batch (one call per batch)."""
    return asyncio.run(_facet_embed_seconds(address, batches, clients))


def facet_embeddings(address: str, texts: list[str]) -> np.ndarray:
    with sdk.Client(retrieval=address) as client:
        return client.embed(texts)


async def _concurrent_single_calls(address: str, texts: list[str], callers: int, seconds: float) -> LoadResult:
    async with sdk.AsyncClient(retrieval=address) as client:
        await client.embed(texts[:1])
        return await callers_for_duration(
            lambda position: client.embed([texts[position % len(texts)]]), callers, seconds
        )


def concurrent_single_calls(address: str, texts: list[str], callers: int, seconds: float) -> LoadResult:
    """`callers` concurrent loops of single-sentence Embed calls for `seconds` (in-flight calls then finish)."""
    return asyncio.run(_concurrent_single_calls(address, texts, callers, seconds))


async def _embed_corpus(address: str, texts: list[str], per_call: int, clients: int) -> np.ndarray:
    chunks = [texts[i : i + per_call] for i in range(0, len(texts), per_call)]
    results: list[np.ndarray | None] = [None] * len(chunks)
    pool = [sdk.AsyncClient(retrieval=address) for _ in range(clients)]

    def worker(client: sdk.AsyncClient) -> Callable[[int], Awaitable[None]]:
        async def embed_chunk(i: int) -> None:
            results[i] = await client.embed(chunks[i])

        return embed_chunk

    try:
        await drain(range(len(chunks)), [worker(c) for c in pool])
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return np.concatenate([r for r in results if r is not None])


def embed_corpus(address: str, texts: list[str], per_call: int = SENTENCES_PER_CALL, clients: int = 2) -> np.ndarray:
    """Embeddings of `texts` from the service, in order."""
    return asyncio.run(_embed_corpus(address, texts, per_call, clients))


# -- the server's own view -------------------------------------------------------------------


def histograms(server: BenchmarkService) -> dict[str, float]:
    """Sums and counts of the batch-size, queue-time and Embed-latency histograms on /metrics."""
    totals: dict[str, float] = collections.defaultdict(float)
    for sample in server.metric_samples():
        name = HISTOGRAM_KEYS.get(sample.name)
        if name and (
            sample.name.startswith("facet_batch")
            or sample.name.startswith("facet_queue")
            or sample.labels.get("method", "").endswith("/Embed")
        ):
            totals[name] += sample.value
    return dict(totals)


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def mean_of(totals: Mapping[str, float], total: str, count: str) -> float:
    return totals.get(total, 0.0) / totals[count] if totals.get(count) else float("nan")


# -- the measurements ------------------------------------------------------------------------


def measure_embed_throughput(
    s: Settings, work: Workload, on: BenchmarkService, off: BenchmarkService, st: Any, out: Results
) -> None:
    """a. Same batches through facet (batching on and off, concurrent clients) and ST encode, in alternating rounds."""
    per_round = 2 * s.clients
    rounds = [work.batches[i : i + per_round] for i in range(0, len(work.batches), per_round)]
    sides: dict[str, Callable[[list[list[str]]], float]] = {
        "on": lambda b: facet_embed_seconds(on.address, b, s.clients),
        "off": lambda b: facet_embed_seconds(off.address, b, s.clients),
        "st": lambda b: st_encode_seconds(st, b),
    }
    for run in sides.values():
        run(work.batches[:2])  # warm-up
    seconds = dict.fromkeys(sides, 0.0)
    order = list(sides)
    for r, batches in enumerate(rounds):
        for side in order[r % 3 :] + order[: r % 3]:
            seconds[side] += sides[side](batches)
    sentences = sum(len(b) for b in work.batches)
    rate = {k: sentences / v for k, v in seconds.items()}
    log(f"a. Embed throughput (sentences/s): batching on {rate['on']:.1f}, off {rate['off']:.1f}, ST {rate['st']:.1f}")
    for side, label in (("on", "batching on"), ("off", "batching off")):
        ratio = rate[side] / rate["st"]
        out.rows.append(
            Row(
                f"a. Embed throughput, {SENTENCES_PER_CALL}/call, {s.clients} clients, {label} (sentences/s)",
                f"{rate[side]:.1f}",
                f"ST encode {rate['st']:.1f}",
                f"{ratio:.2f}x",
                ">= 1.3x",
                ratio >= 1.3,
            )
        )
    facet = facet_embeddings(on.address, work.batches[0])
    reference = st.encode(work.batches[0], batch_size=SENTENCES_PER_CALL, show_progress_bar=False)
    cosine = float(np.min(np.sum(facet * reference, axis=1)))
    out.rows.append(
        Row(
            "a. parity check: min cosine, facet vs ST, 32 sentences",
            f"{cosine:.6f}",
            "1.0",
            "",
            ">= 0.999",
            cosine >= 0.999,
        )
    )
    out.raw["embed_throughput"] = {
        "sentences_per_side": sentences,
        "rounds": len(rounds),
        "seconds": seconds,
        "sentences_per_s": rate,
        "min_cosine_vs_st": cosine,
    }


def measure_single_latency(
    s: Settings, work: Workload, on: BenchmarkService, off: BenchmarkService, local: InProcessOnnx, out: Results
) -> None:
    """b. One sentence per call, sequential; the sides (and a GetModel floor) take turns in blocks of 10 calls."""
    latencies: dict[str, list[float]] = {"off": [], "on": [], "local": [], "getmodel": []}
    with sdk.Client(retrieval=off.address) as c_off, sdk.Client(retrieval=on.address) as c_on:
        calls: dict[str, Callable[[list[str]], object]] = {
            "off": c_off.embed,
            "on": c_on.embed,
            "local": local.embed,
            "getmodel": lambda _texts: c_off.model_info(),  # an RPC without model work: the per-call floor
        }
        for call in calls.values():
            for text in work.singles[:20]:  # warm-up
                call([text])
        before = {"on": histograms(on), "off": histograms(off)}
        order = list(calls)
        for b, start in enumerate(range(0, len(work.singles), 10)):
            for side in order[b % len(order) :] + order[: b % len(order)]:
                latencies[side] += [
                    timed_ms(functools.partial(calls[side], [t])) for t in work.singles[start : start + 10]
                ]
        server_mean = {
            k: 1e3 * mean_of(delta(histograms(srv), before[k]), "embed_s_sum", "embeds")
            for k, srv in (("on", on), ("off", off))
        }
    p50 = {k: percentile(v, 50) for k, v in latencies.items()}
    p99 = {k: percentile(v, 99) for k, v in latencies.items()}
    mean = {k: float(np.mean(v)) for k, v in latencies.items()}
    log("b. 1-sentence latency p50/p99 (ms): " + ", ".join(f"{k} {p50[k]:.2f}/{p99[k]:.2f}" for k in latencies))
    for side, label in (
        ("off", "batching off"),
        ("on", f"batching on, {BATCHING.max_queue_delay_microseconds} us delay"),
    ):
        overhead = p50[side] - p50["local"]
        out.rows += [
            Row(
                f"b. Embed 1 sentence p50, {label} (ms)",
                f"{p50[side]:.2f}",
                f"in-process ORT {p50['local']:.2f}",
                f"{overhead:+.2f} ms",
                "<= +1 ms",
                overhead <= 1.0,
            ),
            Row(
                f"b. Embed 1 sentence p99, {label} (ms)",
                f"{p99[side]:.2f}",
                f"in-process ORT {p99['local']:.2f}",
                f"{p99[side] - p99['local']:+.2f} ms",
            ),
            Row(
                f"b. Embed 1 sentence mean, {label}: client vs server-side (ms)",
                f"{mean[side]:.2f}",
                f"server handler {server_mean[side]:.2f}",
                f"{mean[side] - server_mean[side]:+.2f} ms outside the handler",
            ),
        ]
    out.rows.append(
        Row(
            "b. GetModel round trip p50/p99, no model work (ms)",
            f"{p50['getmodel']:.2f}/{p99['getmodel']:.2f}",
            "",
            "per-call floor of gRPC + SDK + interceptor",
        )
    )
    out.raw["single_latency_ms"] = {
        "calls_per_side": len(latencies["local"]),
        "p50": p50,
        "p99": p99,
        "mean": mean,
        "server_handler_mean": server_mean,
    }


def measure_batching(s: Settings, work: Workload, on: BenchmarkService, off: BenchmarkService, out: Results) -> None:
    """c. `callers` concurrent single-sentence loops against batching on and off, in alternating time slices."""
    servers = {"on": on, "off": off}
    results = {"on": LoadResult(), "off": LoadResult()}
    for server in servers.values():
        concurrent_single_calls(server.address, work.concurrent, s.callers, 1.0)  # warm-up
    before = {k: (histograms(srv), srv.cpu_seconds()) for k, srv in servers.items()}
    for r in range(s.plan.concurrent_slices):
        for side in ("on", "off") if r % 2 == 0 else ("off", "on"):
            results[side].add(
                concurrent_single_calls(servers[side].address, work.concurrent, s.callers, s.plan.slice_seconds)
            )
    stats = {k: delta(histograms(srv), before[k][0]) for k, srv in servers.items()}
    cpu = {k: srv.cpu_seconds() - before[k][1] for k, srv in servers.items()}
    for side, result in results.items():
        if result.errors:
            servers[side].problems.append(
                f"{result.errors} Embed calls failed under {s.callers} callers: {result.first_error}"
            )
    on_r, off_r = results["on"], results["off"]
    ratio = on_r.per_second / off_r.per_second
    rows_per_batch = mean_of(stats["on"], "batch_rows_sum", "batches")
    queue_ms = 1e3 * mean_of(stats["on"], "queue_s_sum", "queued")
    log(
        f"c. {s.callers} callers (calls/s): on {on_r.per_second:.1f}, off {off_r.per_second:.1f}, ratio {ratio:.2f}; "
        f"on: {rows_per_batch:.1f} rows/batch, queue wait {queue_ms:.1f} ms"
    )
    out.rows += [
        Row(
            f"c. {s.callers} concurrent 1-sentence callers, throughput (calls/s)",
            f"on {on_r.per_second:.1f}",
            f"off {off_r.per_second:.1f}",
            f"{ratio:.2f}x",
            ">= 3x",
            ratio >= 3.0,
        ),
        Row(
            f"c. {s.callers} callers, latency p50/p99 (ms)",
            f"on {percentile(on_r.latencies_ms, 50):.0f}/{percentile(on_r.latencies_ms, 99):.0f}",
            f"off {percentile(off_r.latencies_ms, 50):.0f}/{percentile(off_r.latencies_ms, 99):.0f}",
            "",
        ),
        Row(
            f"c. {s.callers} callers, server CPU per call (ms)",
            f"on {1e3 * cpu['on'] / max(on_r.calls, 1):.1f}",
            f"off {1e3 * cpu['off'] / max(off_r.calls, 1):.1f}",
            f"on: {rows_per_batch:.1f} rows/batch, queue {queue_ms:.1f} ms",
        ),
    ]
    out.raw["batching"] = {
        side: {
            "calls": r.calls,
            "errors": r.errors,
            "seconds": r.seconds,
            "calls_per_s": r.per_second,
            "p50_ms": percentile(r.latencies_ms, 50),
            "p99_ms": percentile(r.latencies_ms, 99),
            "server_cpu_s": cpu[side],
            "server_histograms": stats[side],
        }
        for side, r in results.items()
    }
