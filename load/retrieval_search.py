"""The retrieval benchmark's search measurement (d): Search top-10 latency over 100k stored vectors
(flat and HNSW) vs FAISS flat in this process, HNSW recall@10 vs flat, the server's resident memory
and disk writes per 100k documents, Upsert load speed, and searches during the periodic index save.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

import sdk
from load.harness import MIB, BenchmarkService, Results, Row, drain, log, percentile
from load.retrieval_embed import embed_corpus
from load.retrieval_workload import TOP_K, UPSERT_BATCH, Settings, Workload
from services.retrieval.collections import DEFAULT_HNSW_EF_SEARCH, DEFAULT_HNSW_M, HNSW_EF_CONSTRUCTION

# -- the baseline in this process and the truth ---------------------------------------------------


def faiss_flat_latencies_ms(documents: np.ndarray, queries: np.ndarray, calls: int, threads: int) -> list[float]:
    """Single-query top-k latency of a FAISS flat inner-product index in this process (the service's flat index)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(documents.shape[1])
    index.add(unit_rows(documents))
    for q in queries[:20]:
        index.search(q[None, :], TOP_K)
    latencies = []
    for i in range(calls):
        q = queries[i % len(queries)][None, :]
        start = time.perf_counter()
        index.search(q, TOP_K)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)


def exact_top_ids(documents: np.ndarray, queries: np.ndarray, k: int) -> list[list[str]]:
    """Exact cosine top-k ids, computed here with numpy."""
    top = np.argsort(-(queries @ unit_rows(documents).T), axis=1)[:, :k]
    ids = document_ids(len(documents))
    return [[ids[j] for j in row] for row in top]


def recall_at_k(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


# -- the corpus ----------------------------------------------------------------------------


@dataclasses.dataclass
class Corpus:
    documents: np.ndarray
    queries: np.ndarray
    base: int


def noisy_documents(base: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """`count` vectors: the real embeddings in turn, each plus gaussian noise (std `noise` per dimension)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(count) % len(base)
    return (base[rows] + rng.normal(0.0, noise, size=(count, base.shape[1]))).astype(np.float32)


def document_ids(count: int) -> list[str]:
    return [f"doc-{i:07d}" for i in range(count)]


def build_corpus(s: Settings, work: Workload, server: BenchmarkService) -> Corpus:
    """Documents: real-sentence embeddings from the service, repeated with gaussian noise; queries: held-out sentences."""
    start = time.perf_counter()
    base = embed_corpus(server.address, work.base)
    queries = embed_corpus(server.address, work.queries)
    log(f"d. embedded {len(base) + len(queries)} sentences for the corpus in {time.perf_counter() - start:.1f} s")
    return Corpus(noisy_documents(base, s.plan.documents, s.noise, s.seed), queries, len(base))


# -- calls over gRPC -----------------------------------------------------------------------


@dataclasses.dataclass
class UpsertStats:
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    lowest_rss: int = 2**62  # the server's lowest RSS seen after a call returned


async def _upsert_all(
    address: str, collection: str, vectors: np.ndarray, first: int, concurrency: int, rss: Callable[[], int]
) -> UpsertStats:
    ids = document_ids(first + len(vectors))[first:]
    stats = UpsertStats()
    async with sdk.AsyncClient(retrieval=address, timeout_s=600) as client:

        async def upsert(start: int) -> None:
            end = start + UPSERT_BATCH
            began = time.perf_counter()
            await client.upsert(collection, ids[start:end], vectors=vectors[start:end])
            stats.latencies_s.append(time.perf_counter() - began)
            stats.lowest_rss = min(stats.lowest_rss, rss())

        await drain(range(0, len(vectors), UPSERT_BATCH), [upsert] * concurrency)
    return stats


def upsert_all(
    address: str, collection: str, vectors: np.ndarray, first: int, rss: Callable[[], int], concurrency: int = 2
) -> UpsertStats:
    """Upsert `vectors` (ids from document number `first` on) in UPSERT_BATCH-document calls, `concurrency` in
    flight, sampling the server's RSS with `rss()` after each call."""
    return asyncio.run(_upsert_all(address, collection, vectors, first, concurrency, rss))


def interleaved_searches(
    client: sdk.Client, names: Mapping[str, str], queries: np.ndarray, calls: int
) -> tuple[dict[str, list[float]], dict[str, list[list[str]]]]:
    """Alternate searches over the collections; return latencies (ms) and the ids found per query (first pass)."""
    for q in queries[:20]:  # warm-up
        for name in names.values():
            client.search(name, q, top_k=TOP_K)
    latencies: dict[str, list[float]] = {k: [] for k in names}
    found: dict[str, list[list[str]]] = {k: [] for k in names}
    kinds = list(names)
    for i in range(max(calls, len(queries))):
        for kind in kinds if i % 2 == 0 else kinds[::-1]:
            start = time.perf_counter()
            hits = client.search(names[kind], queries[i % len(queries)], top_k=TOP_K)
            latencies[kind].append((time.perf_counter() - start) * 1e3)
            if i < len(queries):
                found[kind].append([h.id for h in hits])
    return latencies, found


def searches_until_saved(
    server: BenchmarkService,
    generations: Mapping[str, int],
    client: sdk.Client,
    collection: str,
    query: np.ndarray,
    timeout_s: float = 180.0,
) -> list[float]:
    """Search continuously until each collection's index file holds its final write generation; return those
    searches' latencies (ms). The service saves indexes every few seconds on its one store thread, where
    searches also run, so searches queue behind a save.
    """
    index_dir = server.data_dir / "retrieval" / "indexes"
    deadline = time.monotonic() + timeout_s
    latencies = []
    while any(saved_generation(index_dir / f"{name}.json") != g for name, g in generations.items()):
        if time.monotonic() > deadline:
            server.problems.append(
                f"indexes {sorted(generations)} not saved within {timeout_s:.0f} s of the last upsert"
            )
            break
        start = time.perf_counter()
        client.search(collection, query, top_k=TOP_K)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def saved_generation(meta_file: Path) -> int:
    """The write generation an index file was saved at (the store bumps it once per Upsert call); -1: none yet."""
    try:
        return int(json.loads(meta_file.read_text())["generation"])
    except (OSError, ValueError, KeyError):
        return -1


def index_file_mib(server: BenchmarkService, collection: str) -> float:
    """Size of a collection's saved FAISS index in the server's data dir; NaN before the first save."""
    path = server.data_dir / "retrieval" / "indexes" / f"{collection}.faiss"
    return path.stat().st_size / MIB if path.is_file() else float("nan")


# -- the measurement -------------------------------------------------------------------------


def load_collections(
    server: BenchmarkService, corpus: Corpus, names: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, int]]:
    """Create and fill each collection; return load stats per kind and Upsert calls per collection."""
    stats: dict[str, Any] = {}
    upsert_calls: dict[str, int] = {}
    with sdk.Client(retrieval=server.address, timeout_s=600) as client:
        for kind, name in names.items():
            client.create_collection(name, index_type=kind, dimension=corpus.documents.shape[1])
            stats[kind] = load_collection(server, client, name, corpus.documents)
            upsert_calls[name] = stats[kind].pop("upsert_calls")
            log(
                f"d. loaded {len(corpus.documents)} docs into {kind} in {stats[kind]['seconds']:.1f} s (upsert p50 "
                f"{stats[kind]['upsert_p50_s']:.2f} s, max {stats[kind]['upsert_max_s']:.2f} s); "
                f"RSS +{stats[kind]['rss_growth_mib']:.1f} MiB, {stats[kind]['disk_written_mib']:.0f} MiB written"
            )
    return stats, upsert_calls


def load_collection(server: BenchmarkService, client: sdk.Client, name: str, docs: np.ndarray) -> dict[str, Any]:
    """Fill one collection; return its load speed, RSS growth and disk writes.

    The first batch warms up the request path, SQLite and the index and is not counted. RSS growth is the RSS
    after loading minus the RSS before; the lowest RSS seen in between is kept too, since the allocator may hand
    back (or reuse) memory freed at startup while loading.
    """
    client.upsert(name, document_ids(UPSERT_BATCH), vectors=docs[:UPSERT_BATCH])
    rss_before, written_before = server.rss_bytes(), server.written_bytes()
    start = time.perf_counter()
    upserts = upsert_all(server.address, name, docs[UPSERT_BATCH:], UPSERT_BATCH, server.rss_bytes)
    seconds = time.perf_counter() - start
    counted = len(docs) - UPSERT_BATCH
    grown = (server.rss_bytes() - rss_before) / MIB
    return {
        "upsert_calls": 1 + len(upserts.latencies_s),
        "seconds": seconds,
        "docs_per_s": counted / seconds,
        "upsert_p50_s": percentile(upserts.latencies_s, 50),
        "upsert_max_s": max(upserts.latencies_s),
        "rss_growth_mib": grown,
        "rss_drop_during_load_mib": max(0, rss_before - upserts.lowest_rss) / MIB,
        "rss_per_100k_mib": grown * 100_000 / counted,
        "disk_written_mib": (server.written_bytes() - written_before) / MIB,
        "raw_vectors_mib": counted * docs.shape[1] * 4 / MIB,
    }


def measure_search(s: Settings, corpus: Corpus, server: BenchmarkService, out: Results) -> None:
    """d. Flat vs HNSW collections of the same vectors: latency, recall, memory, load speed."""
    names = {"flat": "bench_flat", "hnsw": "bench_hnsw"}
    load, upsert_calls = load_collections(server, corpus, names)
    with sdk.Client(retrieval=server.address) as client:
        stall = searches_until_saved(server, upsert_calls, client, names["flat"], corpus.queries[0])
        index_mib = {kind: index_file_mib(server, name) for kind, name in names.items()}
        latencies, found = interleaved_searches(client, names, corpus.queries, s.plan.search_calls)
    local = faiss_flat_latencies_ms(corpus.documents, corpus.queries, s.plan.search_calls, s.threads)
    truth = exact_top_ids(corpus.documents, corpus.queries, TOP_K)
    recall = recall_at_k(found["hnsw"], found["flat"])
    flat_exact = recall_at_k(found["flat"], truth)
    p50 = {k: percentile(v, 50) for k, v in latencies.items()}
    p99 = {k: percentile(v, 99) for k, v in latencies.items()}
    local_p50 = percentile(local, 50)
    log(
        f"d. search p50: flat {p50['flat']:.2f} ms, hnsw {p50['hnsw']:.2f} ms, in-process FAISS flat {local_p50:.2f} ms; "
        f"recall@10 hnsw vs flat {recall:.3f}, flat vs exact {flat_exact:.3f}"
    )
    n = f"{s.plan.documents // 1000}k"
    raw_mib = 100_000 * corpus.documents.shape[1] * 4 / MIB
    out.rows += [
        Row(
            f"d. Search top-10 p50, flat, {n} docs (ms)",
            f"{p50['flat']:.2f}",
            f"in-process FAISS flat {local_p50:.2f}",
            f"{p50['flat'] - local_p50:+.2f} ms",
        ),
        Row(
            f"d. Search top-10 p50, HNSW, {n} docs (ms)",
            f"{p50['hnsw']:.2f}",
            f"facet flat {p50['flat']:.2f}",
            f"{p50['flat'] / p50['hnsw']:.2f}x faster",
        ),
        Row("d. Search top-10 p99, flat / HNSW (ms)", f"{p99['flat']:.2f} / {p99['hnsw']:.2f}", "", ""),
        Row(
            f"d. HNSW recall@10 vs flat ({len(corpus.queries)} queries)",
            f"{recall:.3f}",
            f"flat vs exact (numpy) {flat_exact:.3f}",
            "",
        ),
    ]
    scale = 100_000 / s.plan.documents
    for kind, label in (("flat", "flat"), ("hnsw", "HNSW")):
        per_100k = load[kind]["rss_per_100k_mib"]
        out.rows.append(
            Row(
                f"d. Server RSS growth per 100k docs, {label} (MiB)",
                f"{per_100k:.1f}"
                + ("" if scale == 1 else f" (x{scale:.0f} of {load[kind]['rss_growth_mib']:+.1f}; unreliable)"),
                f"index file {index_mib[kind] * scale:.1f} (raw float32 {raw_mib:.1f})",
                f"{per_100k / (index_mib[kind] * scale):.2f}x index file",
            )
        )
    out.rows.append(
        Row(
            f"d. Upsert load, {UPSERT_BATCH}/call, 2 in flight, flat / HNSW (docs/s)",
            f"{load['flat']['docs_per_s']:.0f} / {load['hnsw']['docs_per_s']:.0f}",
            "",
            f"slowest call {load['flat']['upsert_max_s']:.2f} / {load['hnsw']['upsert_max_s']:.2f} s",
        )
    )
    written = {k: load[k]["disk_written_mib"] for k in names}
    raw_loaded = load["flat"]["raw_vectors_mib"]
    out.rows.append(
        Row(
            "d. Disk writes by the server while loading, flat / HNSW (MiB)",
            f"{written['flat']:.0f} / {written['hnsw']:.0f}",
            f"raw float32 vectors loaded {raw_loaded:.0f}",
            f"{written['flat'] / raw_loaded:.1f}x / {written['hnsw'] / raw_loaded:.1f}x",
        )
    )
    if stall:
        out.rows.append(
            Row(
                "d. Search during the periodic index save, max (ms)",
                f"{max(stall):.1f}",
                f"flat p50 {p50['flat']:.2f}",
                f"{len(stall)} searches until saved",
            )
        )
    out.notes.append(
        f"d. documents: {corpus.base} real sentences embedded by the service, repeated to {s.plan.documents} vectors, "
        f"each plus gaussian noise (std {s.noise} per dimension; the cosine collections L2-normalise); queries: "
        f"{len(corpus.queries)} other real sentences embedded by the service. HNSW: service defaults (M={DEFAULT_HNSW_M}, "
        f"efConstruction={HNSW_EF_CONSTRUCTION}, efSearch={DEFAULT_HNSW_EF_SEARCH}). RSS growth: RSS after the load minus RSS before it (after a first "
        f"warm-up batch of {UPSERT_BATCH} documents); the allocator reuses memory freed at startup, so small loads "
        f"under-count" + ("; noisy at 10k documents (--quick)." if s.plan.documents < 50_000 else ".")
    )
    out.raw["search"] = {
        "documents": s.plan.documents,
        "queries": len(corpus.queries),
        "p50_ms": p50,
        "p99_ms": p99,
        "faiss_flat_p50_ms": local_p50,
        "recall_hnsw_vs_flat": recall,
        "recall_flat_vs_exact": flat_exact,
        "load": load,
        "index_file_mib": index_mib,
        "search_during_save_ms": stall,
    }
