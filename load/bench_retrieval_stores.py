"""Benchmark the retrieval service's two stores side by side, in one run: the embedded store
(SQLite + FAISS, the default) and the Milvus store (`retrieval.store = "milvus"`).

    python load/bench_retrieval_stores.py [--quick] [--json PATH]

Setup. The script starts a local Milvus 2.3.5 standalone (`deploy/milvus.py`: the `milvus`
package's server, embedded etcd, RocksMQ, local storage) in a temporary folder on this machine,
and real `python -m services.retrieval` processes on the default embedding model repository:
one on the embedded store, one on Milvus with `retrieval.milvus_consistency = "Strong"` (the
default: every read sees every acknowledged write), and, for information, one on the same Milvus
and collections with "Bounded" reads. Everything it started is stopped at the end (services with
SIGTERM, then Milvus), also on failure, and the temporary folders are removed. Every call goes
through the SDK (`sdk.Client` / `sdk.AsyncClient`) with retries off, so a failed call shows.
Collections use Facet's defaults on both stores: cosine, HNSW M=32, efConstruction=128,
efSearch=128 (Milvus: ef = max(efSearch, top_k)), and flat (FAISS IndexFlatIP / Milvus FLAT).

Vectors. Documents are built from real text, cheaply: `--base-sentences` real RAR-b MCR
sentences embedded once by the embedded-store service (all-MiniLM-L6-v2, 384-d, unit length),
repeated to the document count, each copy plus gaussian noise (std `--noise` per dimension),
float32. Queries are other real sentences embedded the same way. The vectors are sent in
Upsert and in Search, so the embedding model is not what is measured. (Needs the default
embedding model in the model repository: `make models`, or `facet models build --services
retrieval` for it alone.)

What it measures, at 100k documents (10k with `--quick`, about 4 minutes):
  1. Upsert throughput (documents/s): every document in calls of `--batch` (512) documents,
     `--in-flight` (2) calls at once, into an HNSW and a flat collection on each store. The
     stores take turns in blocks of `--upsert-block` calls (the first store of each block
     alternating), and each store's time is the time of its own blocks. A first call per store
     is a warm-up and not counted. An acknowledged write on Milvus is in its log broker; its
     segments are sealed and indexed later, in the background (the "flush to every row
     indexed" row times that part, after the load).
  2. Search top-10 latency p50 / p99 (vector queries): one client, sequential calls, the stores
     and collections taking turns in blocks of `--search-block` calls; and, on the HNSW
     collections, `--callers` (8) concurrent callers per store for a while (searches/s and
     latency), the stores again taking turns (`load.harness.side_by_side`).
  3. recall@10 of each store's HNSW (and flat) collection against the exact top-10, computed
     here with numpy on the same vectors, over the first `queries` searches.
  2 and 3 are measured twice: "loaded", right after the load (once the embedded store has saved
  its index files, which it does every 30 s); then "settled", after the benchmark itself asks
  Milvus (with pymilvus, outside Facet) to flush both collections and waits until Milvus reports
  every row indexed and its query node serves every row from sealed segments. Until Milvus
  seals a growing segment (on its size, or after 10 minutes without writes, on Milvus'
  defaults) it searches it with an interim IVF index (nlist 128, nprobe 16), not HNSW: "loaded"
  is what a client sees right after a bulk load, "settled" the steady state of a long-lived
  collection. The notes say which segments Milvus served in each phase (read with pymilvus).

How to read it. The last column is Milvus / embedded: above 1 for documents/s, searches/s and
recall means Milvus is ahead; above 1 for latency means Milvus is slower. The stores run on
the same machine as the clients and Milvus, in alternating turns, so background load (the
machine may be shared) hits both alike: read the ratios, not the absolute numbers. Milvus also
works in the background (flushing, index building) after its calls return, which is on the
machine during the embedded store's turns too. The "Milvus Bounded reads" rows show how much
of Milvus' search latency is the Strong consistency wait: a Strong read waits until the query
node has consumed Milvus' time ticks up to the read's timestamp (proxy.timeTickInterval, 200 ms
on Milvus' defaults), so one sequential client sees a few hundred ms per search; the same
collections read with "Bounded" consistency (5 s of staleness allowed) do not wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from deploy.milvus import MILVUS_PACKAGE, LocalMilvus  # noqa: E402
from load.harness import (  # noqa: E402
    DEFAULT_DATA,
    MIB,
    BenchmarkService,
    LoadResult,
    Results,
    Row,
    default_model_repository,
    drain,
    log,
    percentile,
    real_sentences,
    side_by_side,
    table_text,
)
from load.retrieval_embed import embed_corpus  # noqa: E402
from load.retrieval_search import document_ids, exact_top_ids, noisy_documents, recall_at_k, saved_generation  # noqa: E402
from services.model_repository import ModelRepository  # noqa: E402
from services.retrieval.collections import DEFAULT_HNSW_EF_SEARCH, DEFAULT_HNSW_M, HNSW_EF_CONSTRUCTION  # noqa: E402
from services.retrieval.config import RetrievalConfig  # noqa: E402
from services.retrieval.milvus_store import milvus_name  # noqa: E402

MODEL = RetrievalConfig().embedding_model
TOP_K = 10
EMBEDDED, MILVUS, BOUNDED = "embedded", "milvus", "milvus-bounded"
COLLECTIONS = {"hnsw": "stores_hnsw", "flat": "stores_flat"}
NO_RETRIES = sdk.RetryPolicy(max_attempts=1)  # a failed call is counted, not hidden in a retry's latency
WARMUP_SEARCHES = 5  # untimed searches per store and collection before each phase
SEGMENT_STATES = {2: "growing", 3: "sealed", 4: "flushed", 5: "flushing"}  # Milvus' SegmentState


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    documents: int  # vectors per collection
    base_sentences: int  # real sentences embedded to make the documents
    queries: int  # other real sentences: the search queries (recall is over these)
    search_calls: int  # timed sequential searches per store, collection and phase
    concurrent_seconds: float  # per store and phase, all rounds together
    concurrent_rounds: int


# A sequential Strong search on Milvus takes a few hundred ms (time ticks): search_calls sets most of the run time.
QUICK = Plan(
    documents=10_000, base_sentences=4_000, queries=50, search_calls=50, concurrent_seconds=4.0, concurrent_rounds=2
)
FULL = Plan(
    documents=100_000, base_sentences=20_000, queries=200, search_calls=200, concurrent_seconds=12.0, concurrent_rounds=3
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Settings:
    plan: Plan
    quick: bool
    model_repository: Path
    data: Path
    batch: int
    in_flight: int
    upsert_block: int
    search_block: int
    callers: int
    noise: float
    max_chars: int
    seed: int
    flat: bool
    bounded: bool
    settle: bool
    settle_timeout_s: float
    json_path: Path | None
    server_settings: dict[str, str]


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k documents, fewer searches (about 4 minutes)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=None,
        help="default: $FACET_MODEL_REPOSITORY, else the per-user default (build it with `make models`)",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real sentences)")
    parser.add_argument("--documents", type=int, help="vectors per collection (default 100k, 10k with --quick)")
    parser.add_argument("--base-sentences", type=int, help="real sentences embedded to make the documents")
    parser.add_argument("--batch", type=int, default=512, help="documents per Upsert call")
    parser.add_argument("--in-flight", type=int, default=2, help="Upsert calls in flight per store")
    parser.add_argument("--upsert-block", type=int, default=10, help="Upsert calls per store per turn")
    parser.add_argument(
        "--search-block", type=int, default=10, help="sequential searches per store and collection per turn"
    )
    parser.add_argument("--callers", type=int, default=8, help="concurrent search callers per store")
    parser.add_argument("--noise", type=float, default=0.02, help="gaussian noise std per dimension for documents")
    parser.add_argument("--max-chars", type=int, default=300, help="skip texts longer than this (paragraphs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-flat", action="store_true", help="HNSW collections only")
    parser.add_argument("--no-bounded", action="store_true", help="no third service with Bounded Milvus reads")
    parser.add_argument("--no-settle", action="store_true", help="skip the flush and the 'settled' measurements")
    parser.add_argument("--settle-timeout", type=float, default=900.0, help="seconds to wait for Milvus' index build")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="FACET_KEY=VALUE",
        help="a setting for every server started (repeatable), e.g. FACET_RETRIEVAL_MILVUS_CONCURRENCY=16",
    )
    args = parser.parse_args(argv)
    for name in ("batch", "in_flight", "upsert_block", "search_block", "callers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 1 <= args.batch <= RetrievalConfig().max_documents_per_request:
        parser.error(
            f"--batch must be 1..{RetrievalConfig().max_documents_per_request} (retrieval.max_documents_per_request)"
        )
    plan = QUICK if args.quick else FULL
    if args.documents is not None:
        if args.documents <= args.batch:
            parser.error(f"--documents must be > --batch ({args.batch})")
        plan = dataclasses.replace(plan, documents=args.documents)
    if args.base_sentences is not None:
        plan = dataclasses.replace(plan, base_sentences=args.base_sentences)
    plan = dataclasses.replace(plan, base_sentences=max(1, min(plan.base_sentences, plan.documents)))
    return Settings(
        plan=plan,
        quick=args.quick,
        model_repository=args.model_repository or default_model_repository(),
        data=args.data,
        batch=args.batch,
        in_flight=args.in_flight,
        upsert_block=args.upsert_block,
        search_block=args.search_block,
        callers=args.callers,
        noise=args.noise,
        max_chars=args.max_chars,
        seed=args.seed,
        flat=not args.no_flat,
        bounded=not args.no_bounded,
        settle=not args.no_settle,
        settle_timeout_s=args.settle_timeout,
        json_path=args.json,
        server_settings=dict(item.split("=", 1) for item in args.server_env),
    )


# -- the corpus ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Corpus:
    documents: np.ndarray  # float32 [documents, dimension]
    queries: np.ndarray  # float32 [queries, dimension], unit length
    ids: list[str]
    truth: list[list[str]]  # exact cosine top-10 ids per query (numpy)
    embed_seconds: float


def build_corpus(s: Settings, embedded: BenchmarkService) -> Corpus:
    texts = real_sentences(s.data, s.max_chars, s.seed)
    need = s.plan.base_sentences + s.plan.queries
    if need > len(texts):
        raise SystemExit(f"need {need} unique sentences (--base-sentences + queries), the data has {len(texts)}")
    start = time.perf_counter()
    base = embed_corpus(embedded.address, texts[: s.plan.base_sentences])
    queries = embed_corpus(embedded.address, texts[s.plan.base_sentences : need])
    seconds = time.perf_counter() - start
    log(f"embedded {need} real sentences with the embedded-store service in {seconds:.1f} s")
    documents = noisy_documents(base, s.plan.documents, s.noise, s.seed)
    start = time.perf_counter()
    truth = exact_top_ids(documents, queries, TOP_K)
    log(
        f"exact top-{TOP_K} of {len(queries)} queries over {len(documents)} documents (numpy) in {time.perf_counter() - start:.1f} s"
    )
    return Corpus(documents, queries, document_ids(len(documents)), truth, seconds)


# -- 1. Upsert, the stores taking turns ----------------------------------------------------------


@dataclasses.dataclass
class LoadStats:
    documents: int = 0  # counted (after the warm-up call)
    seconds: float = 0.0  # the store's own blocks
    created: int = 0  # UpsertResult.created, warm-up included
    call_latencies_s: list[float] = dataclasses.field(default_factory=list)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "documents": self.documents,
            "seconds": self.seconds,
            "docs_per_s": self.docs_per_s,
            "created": self.created,
            "call_p50_s": percentile(self.call_latencies_s, 50),
            "call_p99_s": percentile(self.call_latencies_s, 99),
            "call_max_s": max(self.call_latencies_s, default=float("nan")),
        }


class UpsertFailed(RuntimeError):
    pass


def rotated(items: Sequence[str], turn: int) -> list[str]:
    k = turn % len(items)
    return list(items[k:]) + list(items[:k])


async def _load_side_by_side(
    s: Settings, addresses: Mapping[str, str], name: str, corpus: Corpus
) -> dict[str, LoadStats]:
    n = len(corpus.documents)
    batches = [(a, min(a + s.batch, n)) for a in range(0, n, s.batch)]
    clients = {
        side: sdk.AsyncClient(retrieval=address, timeout_s=600, retry=NO_RETRIES) for side, address in addresses.items()
    }
    stats = {side: LoadStats() for side in addresses}

    def upserter(side: str) -> Callable[[tuple[int, int]], Any]:
        async def upsert(batch: tuple[int, int]) -> None:
            a, b = batch
            began = time.perf_counter()
            try:
                result = await clients[side].upsert(name, corpus.ids[a:b], vectors=corpus.documents[a:b])
            except sdk.FacetError as exc:
                raise UpsertFailed(
                    f"{side} store: Upsert of documents {a}..{b - 1} into {name!r} failed: {exc}"
                ) from exc
            stats[side].call_latencies_s.append(time.perf_counter() - began)
            stats[side].created += result.created

        return upsert

    try:
        for side in clients:  # warm-up: the first batch, not counted
            await upserter(side)(batches[0])
            stats[side].call_latencies_s.clear()
        rest = batches[1:]
        for turn, first in enumerate(range(0, len(rest), s.upsert_block)):
            block = rest[first : first + s.upsert_block]
            for side in rotated(list(clients), turn):
                stats[side].seconds += await drain(block, [upserter(side)] * s.in_flight)
                stats[side].documents += sum(b - a for a, b in block)
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    return stats


def load_collections(
    s: Settings, servers: Mapping[str, BenchmarkService], corpus: Corpus, out: Results
) -> dict[str, dict[str, LoadStats]]:
    """Create each collection on each store and fill it, the stores taking turns; check the counts."""
    dimension = corpus.documents.shape[1]
    loads: dict[str, dict[str, LoadStats]] = {}
    for kind, name in collections(s).items():
        for server in servers.values():
            with sdk.Client(retrieval=server.address, timeout_s=120, retry=NO_RETRIES) as client:
                client.create_collection(name, index_type=kind, dimension=dimension)
        start = time.perf_counter()
        loads[kind] = asyncio.run(_load_side_by_side(s, {k: v.address for k, v in servers.items()}, name, corpus))
        log(
            f"1. loaded {len(corpus.documents)} documents into {kind} on both stores in {time.perf_counter() - start:.0f} s: "
            + ", ".join(
                f"{side} {st.docs_per_s:.0f} docs/s (call p50 {percentile(st.call_latencies_s, 50):.2f} s)"
                for side, st in loads[kind].items()
            )  # fmt: skip
        )
        for side, server in servers.items():
            with sdk.Client(retrieval=server.address, timeout_s=120, retry=NO_RETRIES) as client:
                count = next(c.document_count for c in client.list_collections() if c.name == name)
            created = loads[kind][side].created
            if count != len(corpus.documents) or created != len(corpus.documents):
                out.raw.setdefault("wrong_counts", []).append(
                    f"{side} store, {kind}: ListCollections says {count} documents, Upserts created {created}; "
                    f"expected {len(corpus.documents)}"
                )
    return loads


def collections(s: Settings) -> dict[str, str]:
    return {k: v for k, v in COLLECTIONS.items() if s.flat or k == "hnsw"}


def wait_for_index_saves(
    server: BenchmarkService, s: Settings, calls_per_collection: int, timeout_s: float = 180.0
) -> float:
    """Wait until the embedded store has saved each index at its last write generation (it saves every
    `retrieval.index_save_interval_s`, on a thread of its own), so no save runs during the searches."""
    index_dir = server.data_dir / "retrieval" / "indexes"
    start = time.monotonic()
    while any(saved_generation(index_dir / f"{name}.json") != calls_per_collection for name in collections(s).values()):
        if time.monotonic() - start > timeout_s:
            server.problems.append(f"indexes not saved within {timeout_s:.0f} s of the last Upsert")
            break
        time.sleep(0.5)
    return time.monotonic() - start


# -- 2 and 3. Search -----------------------------------------------------------------------------


@dataclasses.dataclass
class SearchPhase:
    sequential: dict[str, dict[str, LoadResult]]  # store -> kind -> calls
    found: dict[str, dict[str, list[list[str]]]]  # store -> kind -> ids per query (first pass)
    concurrent: dict[str, LoadResult]  # store -> the HNSW collection under `callers` callers
    milvus_segments: dict[str, Any]


def sequential_searches(
    s: Settings, addresses: Mapping[str, str], queries: np.ndarray
) -> tuple[dict[str, dict[str, LoadResult]], dict[str, dict[str, list[list[str]]]]]:
    """One client per store, one call at a time; the stores take turns in blocks of `--search-block`
    calls per collection (first store rotating). The first len(queries) calls per store and
    collection go through the queries once: their hits are kept for recall."""
    kinds = list(collections(s))
    clients = {
        side: sdk.Client(retrieval=address, timeout_s=60, retry=NO_RETRIES) for side, address in addresses.items()
    }
    results = {side: {kind: LoadResult() for kind in kinds} for side in addresses}
    found: dict[str, dict[str, list[list[str]]]] = {side: {kind: [] for kind in kinds} for side in addresses}
    calls = max(s.plan.search_calls, len(queries))
    try:
        for client in clients.values():
            for kind in kinds:
                for q in queries[:WARMUP_SEARCHES]:
                    client.search(COLLECTIONS[kind], q, top_k=TOP_K)
        for turn in range(math.ceil(calls / s.search_block)):
            for side in rotated(list(clients), turn):
                for kind in kinds:
                    result = results[side][kind]
                    for i in range(turn * s.search_block, min(calls, (turn + 1) * s.search_block)):
                        began = time.perf_counter()
                        try:
                            hits = clients[side].search(COLLECTIONS[kind], queries[i % len(queries)], top_k=TOP_K)
                        except sdk.FacetError as exc:
                            result.errors += 1
                            result.first_error = (
                                result.first_error or f"Search({COLLECTIONS[kind]!r}, top_k={TOP_K}): {exc}"
                            )
                            hits = sdk.SearchResult()
                        else:
                            result.latencies_ms.append((time.perf_counter() - began) * 1e3)
                            result.calls += 1
                        result.seconds += time.perf_counter() - began
                        if i < len(queries):
                            found[side][kind].append([h.id for h in hits])
    finally:
        for client in clients.values():
            client.close()
    return results, found


async def _concurrent_searches(s: Settings, addresses: Mapping[str, str], queries: np.ndarray) -> dict[str, LoadResult]:
    clients = {
        side: sdk.AsyncClient(retrieval=address, timeout_s=60, retry=NO_RETRIES) for side, address in addresses.items()
    }

    def searcher(client: sdk.AsyncClient) -> Callable[[int], Any]:
        async def search(position: int) -> object:
            return await client.search(COLLECTIONS["hnsw"], queries[position % len(queries)], top_k=TOP_K)

        return search

    try:
        return await side_by_side(
            {side: searcher(c) for side, c in clients.items()},
            s.callers,
            s.plan.concurrent_seconds,
            s.plan.concurrent_rounds,
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))


def measure_searches(
    s: Settings, phase: str, addresses: Mapping[str, str], corpus: Corpus, milvus_uri: str
) -> SearchPhase:
    before = milvus_segments(milvus_uri, s)
    log(f"{phase}: Milvus segments before the searches: {segments_text(before)}")
    sequential, found = sequential_searches(s, addresses, corpus.queries)
    log(
        f"{phase}: sequential search p50 / p99 ms: "
        + "; ".join(
            f"{side} "
            + ", ".join(
                f"{kind} {percentile(r.latencies_ms, 50):.2f} / {percentile(r.latencies_ms, 99):.2f}"
                for kind, r in by_kind.items()
            )
            for side, by_kind in sequential.items()
        )  # fmt: skip
    )
    concurrent = asyncio.run(_concurrent_searches(s, addresses, corpus.queries))
    log(
        f"{phase}: {s.callers} concurrent callers, HNSW: "
        + "; ".join(
            f"{side} {r.per_second:.1f} searches/s, p50 {percentile(r.latencies_ms, 50):.2f} ms"
            + (f", {r.errors} failed" if r.errors else "")
            for side, r in concurrent.items()
        )  # fmt: skip
    )
    after = milvus_segments(milvus_uri, s)
    return SearchPhase(sequential, found, concurrent, {"before": before, "after": after})


# -- Milvus' own view (pymilvus, outside Facet) ----------------------------------------------------


@contextlib.contextmanager
def milvus_client(uri: str) -> Iterator[Any]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        yield client
    finally:
        client.close()


def milvus_segments(uri: str, s: Settings) -> dict[str, Any]:
    """Per collection: Milvus' index progress (describe_index: rows in flushed segments, of them indexed,
    pending) and the sealed segments its query node serves (rows; with an index or not). Rows not in a
    sealed segment are in growing ones, which Milvus searches with its interim IVF index, not HNSW.
    Read with pymilvus directly (`GetQuerySegmentInfo` through its connection); {"error": ...} on failure."""
    state: dict[str, Any] = {}
    try:
        with milvus_client(uri) as client:
            for kind, name in collections(s).items():
                target = milvus_name(name)
                index = client.describe_index(target, "vector")
                segments = client._get_connection().get_query_segment_info(target)
                state[kind] = {
                    "total_rows": int(index.get("total_rows", -1)),
                    "indexed_rows": int(index.get("indexed_rows", -1)),
                    "pending_index_rows": int(index.get("pending_index_rows", -1)),
                    "query_sealed_segments": len(segments),
                    "query_sealed_rows": sum(int(seg.num_rows) for seg in segments),
                    "query_indexed_rows": sum(int(seg.num_rows) for seg in segments if seg.indexID),
                    "query_segment_states": sorted({SEGMENT_STATES.get(seg.state, str(seg.state)) for seg in segments}),
                }
    except Exception as exc:  # noqa: BLE001 - informational: the benchmark goes on without it
        state["error"] = f"{type(exc).__name__}: {exc}"
    return state


def segments_text(state: Mapping[str, Any], documents: int | None = None) -> str:
    if "error" in state:
        return f"(not read: {state['error']})"
    parts = []
    for kind, st in state.items():
        indexed = f", {st['query_indexed_rows']} of them with the HNSW index" if kind == "hnsw" else ""
        growing = f", {documents - st['query_sealed_rows']} in growing segments" if documents is not None else ""
        parts.append(
            f"{kind}: query node serves {st['query_sealed_rows']} rows in {st['query_sealed_segments']} sealed segments"
            f"{indexed}{growing}; describe_index {st['indexed_rows']}/{st['total_rows']} indexed, "
            f"{st['pending_index_rows']} pending"
        )
    return "; ".join(parts)


def settled(state: Mapping[str, Any], documents: int) -> bool:
    return "error" not in state and all(
        st["total_rows"] == documents
        and st["indexed_rows"] == documents
        and st["pending_index_rows"] == 0
        and st["query_sealed_rows"] == documents
        and (kind != "hnsw" or st["query_indexed_rows"] == documents)
        for kind, st in state.items()
    )


def settle_milvus(uri: str, s: Settings, documents: int) -> tuple[float, bool]:
    """Flush the Milvus collections (pymilvus, outside Facet: it seals their growing segments) and wait
    until every row is indexed and served from sealed segments by the query node. Returns the seconds
    taken and whether that happened within `--settle-timeout`."""
    start = time.monotonic()
    with milvus_client(uri) as client:
        for name in collections(s).values():
            client.flush(milvus_name(name))
    log(f"settling: flushed the Milvus collections in {time.monotonic() - start:.1f} s; waiting for the index build")
    while not settled(milvus_segments(uri, s), documents):
        if time.monotonic() - start > s.settle_timeout_s:
            return time.monotonic() - start, False
        time.sleep(2.0)
    return time.monotonic() - start, True


def milvus_log_errors(path: Path, offset: int, limit: int = 5) -> tuple[int, list[str]]:
    """ERROR lines Milvus logged after `offset` (bytes): their count and the first distinct messages."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return 0, []
    lines = [line for line in text.splitlines() if "[ERROR]" in line]
    distinct: list[str] = []
    for line in lines:
        message = re.sub(r"^\[[^]]*\] \[ERROR\] ", "", line).split(" [stack=", 1)[0][:300]
        if message not in distinct:
            distinct.append(message)
    return len(lines), distinct[:limit]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    return float("nan")


def tree_mib(path: Path, skip: Sequence[str] = ()) -> float:
    total = 0
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not (root == str(path) and d in skip)]
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total / MIB


# -- the report ----------------------------------------------------------------------------------


def ratio_text(milvus: float, embedded: float, digits: int = 2) -> str:
    return f"{milvus / embedded:.{digits}f}x" if embedded and not math.isnan(embedded) else "n/a"


def failed(result: LoadResult) -> str:
    return f", {result.errors} failed" if result.errors else ""


def latency_cell(result: LoadResult) -> str:
    return f"{percentile(result.latencies_ms, 50):.2f} / {percentile(result.latencies_ms, 99):.2f}{failed(result)}"


def latency_ratio(milvus: LoadResult, embedded: LoadResult) -> str:
    return " / ".join(
        ratio_text(percentile(milvus.latencies_ms, q), percentile(embedded.latencies_ms, q), 1) for q in (50, 99)
    )


def concurrent_cell(result: LoadResult) -> str:
    return f"{result.per_second:.1f} (p50 / p99 {latency_cell(result)} ms)"


def load_cell(st: LoadStats) -> str:
    return (
        f"{st.docs_per_s:.0f} (call p50 {percentile(st.call_latencies_s, 50):.2f} s, "
        f"max {max(st.call_latencies_s, default=float('nan')):.2f} s)"
    )


def phase_rows(s: Settings, phase: str, p: SearchPhase, corpus: Corpus) -> tuple[list[Row], dict[str, Any]]:
    rows: list[Row] = []
    raw: dict[str, Any] = {"recall_at_10": {}, "sequential": {}, "concurrent": {}, "milvus_segments": p.milvus_segments}
    n = len(corpus.documents)
    for kind in collections(s):
        m, e = p.sequential[MILVUS][kind], p.sequential[EMBEDDED][kind]
        rows.append(Row(f"2. Search top-10 p50 / p99 (ms), {kind}, 1 client, {phase}", latency_cell(m), latency_cell(e),
                        latency_ratio(m, e)))  # fmt: skip
        if BOUNDED in p.sequential:
            b = p.sequential[BOUNDED][kind]
            rows.append(Row(f"   the same, Milvus Bounded reads (info), {kind}, {phase}", latency_cell(b), latency_cell(e),
                            latency_ratio(b, e)))  # fmt: skip
    m, e = p.concurrent[MILVUS], p.concurrent[EMBEDDED]
    rows.append(Row(f"2. Search, hnsw, {s.callers} callers, {phase} (searches/s)", concurrent_cell(m), concurrent_cell(e),
                    ratio_text(m.per_second, e.per_second)))  # fmt: skip
    if BOUNDED in p.concurrent:
        b = p.concurrent[BOUNDED]
        rows.append(Row(f"   the same, Milvus Bounded reads (info), {phase}", concurrent_cell(b), concurrent_cell(e),
                        ratio_text(b.per_second, e.per_second)))  # fmt: skip
    for kind in collections(s):
        recall = {side: recall_at_k(found[kind], corpus.truth) for side, found in p.found.items()}
        raw["recall_at_10"][kind] = recall
        rows.append(Row(f"3. recall@10 vs exact (numpy), {kind}, {len(corpus.truth)} queries, {phase}",
                        f"{recall[MILVUS]:.3f}", f"{recall[EMBEDDED]:.3f}", ratio_text(recall[MILVUS], recall[EMBEDDED], 3)))  # fmt: skip
    for side in p.sequential:
        raw["sequential"][side] = {
            kind: {"calls": r.calls, "errors": r.errors, "first_error": r.first_error,
                   "p50_ms": percentile(r.latencies_ms, 50), "p99_ms": percentile(r.latencies_ms, 99)}
            for kind, r in p.sequential[side].items()
        }  # fmt: skip
        raw["concurrent"][side] = {
            "calls": p.concurrent[side].calls, "errors": p.concurrent[side].errors, "first_error": p.concurrent[side].first_error,
            "searches_per_s": p.concurrent[side].per_second, "p50_ms": percentile(p.concurrent[side].latencies_ms, 50),
            "p99_ms": percentile(p.concurrent[side].latencies_ms, 99),
        }  # fmt: skip
    seen = [f"before the searches: {segments_text(p.milvus_segments['before'], n)}"]
    if p.milvus_segments["after"] != p.milvus_segments["before"]:
        seen.append(f"after them: {segments_text(p.milvus_segments['after'], n)}")
    raw["note"] = f"Milvus segments, {phase}: " + "; ".join(seen)
    return rows, raw


def search_errors(phases: Mapping[str, SearchPhase]) -> list[str]:
    errors = []
    for phase, p in phases.items():
        for side, by_kind in p.sequential.items():
            for kind, r in by_kind.items():
                if r.errors:
                    errors.append(f"{phase}, {side} store, {kind}, 1 client: {r.errors} failed; first: {r.first_error}")
        for side, r in p.concurrent.items():
            if r.errors:
                errors.append(
                    f"{phase}, {side} store, hnsw, concurrent callers: {r.errors} failed; first: {r.first_error}"
                )
    return errors


# -- the benchmark -------------------------------------------------------------------------------


def store_settings(s: Settings, store: str, uri: str = "", consistency: str = "Strong") -> dict[str, str]:
    settings = {**s.server_settings, "FACET_RETRIEVAL_STORE": store}
    if store == "milvus":
        settings |= {"FACET_RETRIEVAL_MILVUS_URI": uri, "FACET_RETRIEVAL_MILVUS_CONSISTENCY": consistency}
    return settings


def run_benchmark(s: Settings) -> Results:
    out = Results()
    try:
        ModelRepository(s.model_repository).get(MODEL)
    except LookupError as exc:
        raise SystemExit(f"bench_retrieval_stores: {exc}; build it with `make models`") from None
    milvus_dir = Path(tempfile.mkdtemp(prefix="facet-bench-milvus-"))
    milvus = LocalMilvus(milvus_dir)
    servers: dict[str, BenchmarkService] = {}
    phases: dict[str, SearchPhase] = {}
    try:
        log(f"starting a local Milvus standalone ({MILVUS_PACKAGE}) in {milvus_dir}")
        milvus.start()
        log(f"Milvus serving at {milvus.uri} (pid {milvus.process.pid if milvus.process else '?'})")
        sides = {EMBEDDED: store_settings(s, "embedded"), MILVUS: store_settings(s, "milvus", milvus.uri, "Strong")}
        if s.bounded:
            sides[BOUNDED] = store_settings(s, "milvus", milvus.uri, "Bounded")
        for side, settings in sides.items():
            servers[side] = BenchmarkService("retrieval", s.model_repository, settings, label=f"store-{side}")
            servers[side].spawn()
        for server in servers.values():
            server.wait_until_serving()
        log("serving: " + ", ".join(f"{side} at {srv.address} (pid {srv.pid})" for side, srv in servers.items()))
        corpus = build_corpus(s, servers[EMBEDDED])
        n = len(corpus.documents)
        log_offset = milvus.log_path.stat().st_size if milvus.log_path.exists() else 0
        loads = load_collections(s, {k: servers[k] for k in (EMBEDDED, MILVUS)}, corpus, out)
        saved_s = wait_for_index_saves(servers[EMBEDDED], s, math.ceil(n / s.batch))
        log(f"the embedded store saved its index files {saved_s:.0f} s after the load")
        memory = {
            EMBEDDED: rss_mib(servers[EMBEDDED].pid),
            MILVUS: rss_mib(servers[MILVUS].pid),
            "milvus_server": rss_mib(milvus.process.pid) if milvus.process else float("nan"),
        }
        disk = {EMBEDDED: tree_mib(servers[EMBEDDED].data_dir), MILVUS: tree_mib(milvus_dir, skip=("bin", "logs"))}
        addresses = {side: srv.address for side, srv in servers.items()}
        phases["loaded"] = measure_searches(s, "loaded", addresses, corpus, milvus.uri)
        settle_s, settle_ok = float("nan"), False
        if s.settle:
            settle_s, settle_ok = settle_milvus(milvus.uri, s, n)
            log(f"settling: Milvus {'settled' if settle_ok else 'NOT settled'} {settle_s:.0f} s after the flush")
            phases["settled"] = measure_searches(s, "settled", addresses, corpus, milvus.uri)
        error_lines, error_messages = milvus_log_errors(milvus.log_path, log_offset)
    finally:
        for server in servers.values():
            server.stop()
        process, began = milvus.process, time.perf_counter()
        milvus.stop()
        milvus_stop = (time.perf_counter() - began, process.returncode if process is not None else None)
        shutil.rmtree(milvus_dir, ignore_errors=True)
        log(f"stopped the services, and Milvus in {milvus_stop[0]:.1f} s (exit code {milvus_stop[1]})")

    scale = f"{n // 1000}k" if n % 1000 == 0 else str(n)
    for kind in collections(s):
        m, e = loads[kind][MILVUS], loads[kind][EMBEDDED]
        out.rows.append(Row(f"1. Upsert, {kind}, {scale} docs, {s.batch}/call, {s.in_flight} in flight (docs/s)",
                            load_cell(m), load_cell(e), ratio_text(m.docs_per_s, e.docs_per_s)))  # fmt: skip
    for phase, p in phases.items():
        rows, raw = phase_rows(s, phase, p, corpus)
        out.rows += rows
        out.raw[f"search_{phase}"] = raw
    if s.settle:
        out.rows.append(Row("   Milvus flush to every row indexed and served from sealed segments (s)",
                            f"{settle_s:.0f}" + ("" if settle_ok else " (timed out)"), "", ""))  # fmt: skip
    out.rows.append(Row("   resident memory after the load (MiB): service (+ Milvus server)",
                        f"{memory[MILVUS]:.0f} + {memory['milvus_server']:.0f}", f"{memory[EMBEDDED]:.0f}",
                        ratio_text(memory[MILVUS] + memory["milvus_server"], memory[EMBEDDED])))  # fmt: skip
    out.rows.append(Row("   data on disk after the load (MiB)", f"{disk[MILVUS]:.0f}", f"{disk[EMBEDDED]:.0f}",
                        ratio_text(disk[MILVUS], disk[EMBEDDED])))  # fmt: skip
    out.raw |= {
        "documents": n,
        "embed_seconds": corpus.embed_seconds,
        "load": {kind: {side: st.summary() for side, st in by_side.items()} for kind, by_side in loads.items()},
        "index_saved_after_load_s": saved_s,
        "settle_seconds": settle_s,
        "settled": settle_ok,
        "rss_mib": memory,
        "disk_mib": disk,
        "milvus_log_errors": {"lines": error_lines, "first": error_messages},
        "milvus_stop": {"seconds": milvus_stop[0], "exit_code": milvus_stop[1]},
        "search_errors": search_errors(phases),
        "servers": {
            srv.label: {"stop_seconds": srv.stop_seconds, "exit_code": srv.exit_code, "problems": srv.problems}
            for srv in servers.values()
        },
    }
    return out


def print_report(s: Settings, out: Results, wall: float) -> None:
    print()
    print(f"Facet retrieval stores: Milvus vs embedded ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s")
    print(
        table_text(
            ("measure", "milvus store", "embedded store", "milvus / embedded"), [r.cells()[:4] for r in out.rows]
        )
    )
    print()
    for note in out.notes:
        print(f"- {note}")
    for phase in ("loaded", "settled"):
        if f"search_{phase}" in out.raw:
            print(f"- {out.raw[f'search_{phase}']['note']}")
    wrong = out.raw.get("wrong_counts", []) + out.raw["search_errors"]
    print("- wrong counts / failed calls: " + ("none" if not wrong else ""))
    for line in wrong:
        print(f"  - {line}")
    errors = out.raw["milvus_log_errors"]
    print(f"- Milvus log ERROR lines from the first Upsert to the last search: {errors['lines']}")
    for message in errors["first"]:
        print(f"  - {message}")
    problems = [f"[{label}] {p}" for label, info in out.raw["servers"].items() for p in info["problems"]]
    print("- service problems seen in logs / exit codes: " + ("none" if not problems else ""))
    for problem in problems:
        print(f"  - {problem}")
    stops = [f"{label} {info['stop_seconds']:.1f} s (exit {info['exit_code']})" for label, info in out.raw["servers"].items()
             if info["stop_seconds"] is not None]  # fmt: skip
    print("- servers stopped after SIGTERM in: " + ", ".join(stops))
    stop = out.raw["milvus_stop"]
    print(
        f"- Milvus stopped in {stop['seconds']:.1f} s (exit code {stop['exit_code']}; LocalMilvus.stop: SIGTERM, then SIGKILL after its timeout)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    out = run_benchmark(s)
    wall = time.perf_counter() - began
    from importlib.metadata import version

    out.notes[:0] = [
        f"setup: {MILVUS_PACKAGE} standalone (embedded etcd, RocksMQ, local storage; Milvus' default config) on "
        f"this machine, pymilvus {version('pymilvus')}; services with their defaults (Milvus: consistency Strong, "
        f"retrieval.milvus_concurrency {RetrievalConfig().milvus_concurrency}); collections cosine, HNSW "
        f"M={DEFAULT_HNSW_M} efConstruction={HNSW_EF_CONSTRUCTION} efSearch={DEFAULT_HNSW_EF_SEARCH} on both stores; "
        f"{os.cpu_count()} CPUs shared by clients, services and Milvus; 1-min load average {load_before:.1f} at "
        f"start, {os.getloadavg()[0]:.1f} at end.",
        f"vectors: {s.plan.base_sentences} real RAR-b MCR sentences embedded by the service ({MODEL}, 384-d, "
        f"{out.raw['embed_seconds']:.0f} s), repeated to {out.raw['documents']} documents, each plus gaussian noise "
        f"(std {s.noise} per dimension), float32, sent in Upsert; queries: {s.plan.queries} other real sentences, "
        "sent as vectors. Exact top-10 by numpy (cosine) on the same vectors.",
        f"turns: Upsert blocks of {s.upsert_block} calls per store; sequential searches in blocks of {s.search_block} "
        f"per store and collection ({s.plan.search_calls} timed per store, collection and phase, after "
        f"{WARMUP_SEARCHES} warm-up calls); {s.callers} callers for {s.plan.concurrent_seconds:.0f} s per store in "
        f"{s.plan.concurrent_rounds} turns. Ratios are Milvus / embedded: compare them, not absolutes.",
        "loaded: right after the load (Milvus' growing segments are searched with its interim IVF index, nlist 128 "
        "nprobe 16, not HNSW); settled: after a flush (pymilvus, not Facet) and Milvus' index build.",
    ]
    print_report(s, out, wall)
    if s.json_path is not None:
        out.write_json(s.json_path, s, wall, mode="quick" if s.quick else "full",
                       columns={"facet": "milvus store", "baseline": "embedded store"})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
