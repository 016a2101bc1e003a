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
import ast
import asyncio
import collections
import csv
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from deploy.model_repository import ModelRepository, ModelVersion  # noqa: E402
from services.retrieval.store import DEFAULT_HNSW_EF_SEARCH, DEFAULT_HNSW_M, HNSW_EF_CONSTRUCTION  # noqa: E402
from services.retrieval.tokenization import TextTokenizer  # noqa: E402
from services.runtime.config import BatchingConfig, RetrievalConfig, load_config  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "rarb-mcr"
MODEL = RetrievalConfig().embedding_model
BATCHING = BatchingConfig()  # the service's defaults, which the "batching on" server runs with
SENTENCES_PER_CALL = 32
TOP_K = 10
UPSERT_BATCH = 1024
MIB = 1024 * 1024
HISTOGRAM_KEYS = {
    "facet_batch_size_sum": "batch_rows_sum",
    "facet_batch_size_count": "batches",
    "facet_queue_time_seconds_sum": "queue_s_sum",
    "facet_queue_time_seconds_count": "queued",
    "facet_request_latency_seconds_sum": "embed_s_sum",
    "facet_request_latency_seconds_count": "embeds",
}


# -- settings ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    throughput_batches: int  # batches of SENTENCES_PER_CALL sentences, the same for facet and ST
    latency_calls: int  # single-sentence calls per side (each text once per side)
    concurrent_slices: int  # alternating on/off time slices of the 32-caller load
    slice_seconds: float
    documents: int  # vectors per collection
    base_sentences: int  # real sentences embedded to make the documents
    queries: int  # held-out real sentences used as search queries
    search_calls: int  # timed searches per collection


QUICK = Plan(
    throughput_batches=8,
    latency_calls=150,
    concurrent_slices=1,
    slice_seconds=4.0,
    documents=10_000,
    base_sentences=1_000,
    queries=100,
    search_calls=200,
)
FULL = Plan(
    throughput_batches=32,
    latency_calls=600,
    concurrent_slices=4,
    slice_seconds=5.0,
    documents=100_000,
    base_sentences=2_000,
    queries=200,
    search_calls=600,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    plan: Plan
    quick: bool
    model_repository: Path
    data: Path
    threads: int
    clients: int
    callers: int
    noise: float
    max_chars: int
    seed: int
    json_path: Path | None
    server_settings: dict[str, str]


def default_model_repository() -> Path:
    """The configured model repository (FACET_MODEL_REPOSITORY or the per-user default)."""
    return load_config().model_repository


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


# -- data ----------------------------------------------------------------------------------


def real_sentences(data_dir: Path, max_chars: int, seed: int) -> list[str]:
    """Unique queries and candidate answers of every RAR-b MCR file, shuffled with `seed`."""
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


@dataclasses.dataclass(frozen=True)
class Workload:
    """Disjoint slices of the real sentences, one per measurement."""

    batches: list[list[str]]
    singles: list[str]
    concurrent: list[str]
    base: list[str]
    queries: list[str]


def split_workload(texts: list[str], plan: Plan) -> Workload:
    sizes = [plan.throughput_batches * SENTENCES_PER_CALL, plan.latency_calls, 2048, plan.base_sentences, plan.queries]
    if sum(sizes) > len(texts):
        raise SystemExit(f"need {sum(sizes)} unique sentences, the data has {len(texts)}")
    parts, start = [], 0
    for size in sizes:
        parts.append(texts[start : start + size])
        start += size
    batches = [parts[0][i : i + SENTENCES_PER_CALL] for i in range(0, len(parts[0]), SENTENCES_PER_CALL)]
    return Workload(batches, parts[1], parts[2], parts[3], parts[4])


# -- server processes ----------------------------------------------------------------------


class ServerProcess:
    """One `python -m services.<service>` child with its own data dir; `stop()` cleans everything up."""

    def __init__(self, label: str, model_repository: Path, overrides: Mapping[str, str], service: str = "retrieval") -> None:
        self.label = label
        self.workdir = Path(tempfile.mkdtemp(prefix=f"facet-bench-{label}-"))
        self.data_dir = self.workdir / "data"
        self.port_file = self.workdir / "port.json"
        self.log_path = self.workdir / "server.log"
        self.address = ""
        self.metrics_port = 0
        self.problems: list[str] = []
        self.stop_seconds: float | None = None
        self.exit_code: int | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACET_")}
        env.update({"FACET_MODEL_REPOSITORY": str(model_repository), "FACET_DATA_DIR": str(self.data_dir)})
        env.update(overrides)
        self._log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}", "--port", "0", "--port-file", str(self.port_file)],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches only this script, which stops the server itself
            )
        except BaseException:
            self._log.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_serving(self, timeout_s: float = 300.0) -> str:
        """Wait for the port file (written once SERVING); return host:port."""
        deadline = time.monotonic() + timeout_s
        while not self.port_file.is_file():
            if self.process.poll() is not None:
                raise RuntimeError(f"server {self.label} exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {self.label} not serving after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        facts = json.loads(self.port_file.read_text())
        self.address = f"127.0.0.1:{facts['port']}"
        self.metrics_port = int(facts.get("metrics_port") or 0)
        return self.address

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def written_bytes(self) -> int:
        """Bytes this server process has written to storage (/proc/<pid>/io write_bytes)."""
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    def index_file_mib(self, collection: str) -> float:
        path = self.data_dir / "retrieval" / "indexes" / f"{collection}.faiss"
        return path.stat().st_size / MIB if path.is_file() else float("nan")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def histograms(self) -> dict[str, float]:
        """Sums and counts of the batch-size, queue-time and Embed-latency histograms on /metrics."""
        if not self.metrics_port:
            return {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        totals: dict[str, float] = collections.defaultdict(float)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = HISTOGRAM_KEYS.get(sample.name)
                if name and (
                    sample.name.startswith("facet_batch")
                    or sample.name.startswith("facet_queue")
                    or sample.labels.get("method", "").endswith("/Embed")
                ):
                    totals[name] += sample.value
        return dict(totals)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 120.0) -> None:
        """SIGTERM, wait (drain + index save), SIGKILL if needed; collect log problems; remove the data dir."""
        try:
            if self.process.poll() is None:
                start = time.perf_counter()
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                    self.stop_seconds = time.perf_counter() - start
                except subprocess.TimeoutExpired:
                    self.problems.append(f"did not stop within {timeout_s:.0f} s of SIGTERM; killed")
                    self.process.kill()
                    self.process.wait()
            self.exit_code = self.process.returncode
            if self.exit_code != 0:
                self.problems.append(f"exit code {self.exit_code} after SIGTERM")
            self._log.close()
            self.problems += log_problems(self.log_path)
        finally:
            if not self._log.closed:
                self._log.close()
            shutil.rmtree(self.workdir, ignore_errors=True)


def log_problems(log_path: Path, limit: int = 12) -> list[str]:
    """Warning/error log entries and any non-JSON output, deduplicated with counts."""
    counts: collections.Counter[str] = collections.Counter()
    for line in log_path.read_text(errors="replace").splitlines():
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
        text = json.dumps(detail, default=str) + (f" exc: {exc[-1]}" if exc else "")
        counts[text[:400]] += 1
    return [f"{text} (x{n})" if n > 1 else text for text, n in counts.most_common(limit)]


def server_env(s: Settings, batching: bool) -> dict[str, str]:
    """The service's defaults, plus the thread count, the batching switch and any --server-env."""
    return {
        "FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(s.threads),
        **s.server_settings,
        "FACET_BATCHING_ENABLED": "1" if batching else "0",
        "FACET_SERVER_METRICS_PORT": "0",  # any free port: batch sizes and queue times for the report
    }


# -- baselines in this process ---------------------------------------------------------------


class InProcessOnnx:
    """The model the service runs, in this process: same model.onnx, tokenizer and thread settings."""

    def __init__(self, entry: ModelVersion, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # the service's default
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(entry.model_file), options, providers=["CPUExecutionProvider"])
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


# -- calls over gRPC -----------------------------------------------------------------------


async def _facet_embed_seconds(address: str, batches: list[list[str]], clients: int) -> float:
    pool = [sdk.AsyncClient(retrieval=address) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.embed(batches[0][:1]) for c in pool))  # open the channels
        queue = iter(batches)

        async def drain(client: sdk.AsyncClient) -> None:
            for batch in queue:
                await client.embed(batch)

        start = time.perf_counter()
        await asyncio.gather(*(drain(c) for c in pool))
        return time.perf_counter() - start
    finally:
        await asyncio.gather(*(c.close() for c in pool))


def facet_embed_seconds(address: str, batches: list[list[str]], clients: int) -> float:
    """Seconds for `clients` concurrent clients to embed every batch (one call per batch)."""
    return asyncio.run(_facet_embed_seconds(address, batches, clients))


def facet_embeddings(address: str, texts: list[str]) -> np.ndarray:
    with sdk.Client(retrieval=address) as client:
        return client.embed(texts)


def call_latency_ms(call: Callable[[list[str]], object], text: str) -> float:
    start = time.perf_counter()
    call([text])
    return (time.perf_counter() - start) * 1e3


@dataclasses.dataclass
class LoadResult:
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


async def _concurrent_single_calls(address: str, texts: list[str], callers: int, seconds: float) -> LoadResult:
    result = LoadResult()
    async with sdk.AsyncClient(retrieval=address) as client:
        await client.embed(texts[:1])
        deadline = time.perf_counter() + seconds

        async def caller(position: int) -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    await client.embed([texts[position % len(texts)]])
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


def concurrent_single_calls(address: str, texts: list[str], callers: int, seconds: float) -> LoadResult:
    """`callers` concurrent loops of single-sentence Embed calls for `seconds` (in-flight calls then finish)."""
    return asyncio.run(_concurrent_single_calls(address, texts, callers, seconds))


async def _embed_corpus(address: str, texts: list[str], per_call: int, clients: int) -> np.ndarray:
    chunks = [texts[i : i + per_call] for i in range(0, len(texts), per_call)]
    results: list[np.ndarray | None] = [None] * len(chunks)
    queue = iter(range(len(chunks)))
    pool = [sdk.AsyncClient(retrieval=address) for _ in range(clients)]

    async def drain(client: sdk.AsyncClient) -> None:
        for i in queue:
            results[i] = await client.embed(chunks[i])

    try:
        await asyncio.gather(*(drain(c) for c in pool))
    finally:
        await asyncio.gather(*(c.close() for c in pool))
    return np.concatenate([r for r in results if r is not None])


def embed_corpus(address: str, texts: list[str], per_call: int = SENTENCES_PER_CALL, clients: int = 2) -> np.ndarray:
    """Embeddings of `texts` from the service, in order."""
    return asyncio.run(_embed_corpus(address, texts, per_call, clients))


def noisy_documents(base: np.ndarray, count: int, noise: float, seed: int) -> np.ndarray:
    """`count` vectors: the real embeddings in turn, each plus gaussian noise (std `noise` per dimension)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(count) % len(base)
    return (base[rows] + rng.normal(0.0, noise, size=(count, base.shape[1]))).astype(np.float32)


def document_ids(count: int) -> list[str]:
    return [f"doc-{i:07d}" for i in range(count)]


@dataclasses.dataclass
class UpsertStats:
    latencies_s: list[float] = dataclasses.field(default_factory=list)
    lowest_rss: int = 2**62  # the server's lowest RSS seen after a call returned


async def _upsert_all(
    address: str, collection: str, vectors: np.ndarray, first: int, concurrency: int, rss: Callable[[], int]
) -> UpsertStats:
    ids = document_ids(first + len(vectors))[first:]
    queue = iter(range(0, len(vectors), UPSERT_BATCH))
    stats = UpsertStats()
    async with sdk.AsyncClient(retrieval=address, timeout_s=600) as client:

        async def drain() -> None:
            for start in queue:
                end = start + UPSERT_BATCH
                began = time.perf_counter()
                await client.upsert(collection, ids[start:end], vectors=vectors[start:end])
                stats.latencies_s.append(time.perf_counter() - began)
                stats.lowest_rss = min(stats.lowest_rss, rss())

        await asyncio.gather(*(drain() for _ in range(concurrency)))
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
    server: ServerProcess,
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


def recall_at_k(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


# -- report --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    measure: str
    facet: str
    baseline: str
    ratio: str
    target: str = "info"
    met: bool | None = None  # None: no target, for information


@dataclasses.dataclass
class Results:
    rows: list[Row] = dataclasses.field(default_factory=list)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def mean_of(totals: Mapping[str, float], total: str, count: str) -> float:
    return totals.get(total, 0.0) / totals[count] if totals.get(count) else float("nan")


def table_text(rows: list[Row]) -> str:
    header = ("measure", "facet", "baseline", "ratio / overhead", "target")
    cells = [header] + [
        (
            r.measure,
            r.facet,
            r.baseline,
            r.ratio,
            r.target + ("" if r.met is None else (" met" if r.met else " MISSED")),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the measurements ------------------------------------------------------------------------


def measure_embed_throughput(
    s: Settings, work: Workload, on: ServerProcess, off: ServerProcess, st: Any, out: Results
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
    s: Settings, work: Workload, on: ServerProcess, off: ServerProcess, local: InProcessOnnx, out: Results
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
                call_latency_ms(call, text)
        before = {"on": on.histograms(), "off": off.histograms()}
        order = list(calls)
        for b, start in enumerate(range(0, len(work.singles), 10)):
            for side in order[b % len(order) :] + order[: b % len(order)]:
                latencies[side] += [call_latency_ms(calls[side], t) for t in work.singles[start : start + 10]]
        server_mean = {
            k: 1e3 * mean_of(delta(srv.histograms(), before[k]), "embed_s_sum", "embeds")
            for k, srv in (("on", on), ("off", off))
        }
    p50 = {k: percentile(v, 50) for k, v in latencies.items()}
    p99 = {k: percentile(v, 99) for k, v in latencies.items()}
    mean = {k: float(np.mean(v)) for k, v in latencies.items()}
    log("b. 1-sentence latency p50/p99 (ms): " + ", ".join(f"{k} {p50[k]:.2f}/{p99[k]:.2f}" for k in latencies))
    for side, label in (("off", "batching off"), ("on", f"batching on, {BATCHING.max_queue_delay_microseconds} us delay")):
        overhead = p50[side] - p50["local"]
        out.rows.append(
            Row(
                f"b. Embed 1 sentence p50, {label} (ms)",
                f"{p50[side]:.2f}",
                f"in-process ORT {p50['local']:.2f}",
                f"{overhead:+.2f} ms",
                "<= +1 ms",
                overhead <= 1.0,
            )
        )
        out.rows.append(
            Row(
                f"b. Embed 1 sentence p99, {label} (ms)",
                f"{p99[side]:.2f}",
                f"in-process ORT {p99['local']:.2f}",
                f"{p99[side] - p99['local']:+.2f} ms",
            )
        )
        out.rows.append(
            Row(
                f"b. Embed 1 sentence mean, {label}: client vs server-side (ms)",
                f"{mean[side]:.2f}",
                f"server handler {server_mean[side]:.2f}",
                f"{mean[side] - server_mean[side]:+.2f} ms outside the handler",
            )
        )
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


def measure_batching(s: Settings, work: Workload, on: ServerProcess, off: ServerProcess, out: Results) -> None:
    """c. `callers` concurrent single-sentence loops against batching on and off, in alternating time slices."""
    servers = {"on": on, "off": off}
    results = {"on": LoadResult(), "off": LoadResult()}
    for server in servers.values():
        concurrent_single_calls(server.address, work.concurrent, s.callers, 1.0)  # warm-up
    before = {k: (srv.histograms(), srv.cpu_seconds()) for k, srv in servers.items()}
    for r in range(s.plan.concurrent_slices):
        for side in ("on", "off") if r % 2 == 0 else ("off", "on"):
            results[side].add(
                concurrent_single_calls(servers[side].address, work.concurrent, s.callers, s.plan.slice_seconds)
            )
    stats = {k: delta(srv.histograms(), before[k][0]) for k, srv in servers.items()}
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


@dataclasses.dataclass
class Corpus:
    documents: np.ndarray
    queries: np.ndarray
    base: int


def build_corpus(s: Settings, work: Workload, server: ServerProcess) -> Corpus:
    """Documents: real-sentence embeddings from the service, repeated with gaussian noise; queries: held-out sentences."""
    start = time.perf_counter()
    base = embed_corpus(server.address, work.base)
    queries = embed_corpus(server.address, work.queries)
    log(f"d. embedded {len(base) + len(queries)} sentences for the corpus in {time.perf_counter() - start:.1f} s")
    return Corpus(noisy_documents(base, s.plan.documents, s.noise, s.seed), queries, len(base))


def load_collections(
    server: ServerProcess, corpus: Corpus, names: Mapping[str, str]
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


def load_collection(server: ServerProcess, client: sdk.Client, name: str, docs: np.ndarray) -> dict[str, Any]:
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


def measure_search(s: Settings, corpus: Corpus, server: ServerProcess, out: Results) -> None:
    """d. Flat vs HNSW collections of the same vectors: latency, recall, memory, load speed."""
    names = {"flat": "bench_flat", "hnsw": "bench_hnsw"}
    load, upsert_calls = load_collections(server, corpus, names)
    with sdk.Client(retrieval=server.address) as client:
        stall = searches_until_saved(server, upsert_calls, client, names["flat"], corpus.queries[0])
        index_mib = {kind: server.index_file_mib(name) for kind, name in names.items()}
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


# -- the benchmark -------------------------------------------------------------------------


def run_benchmark(s: Settings) -> Results:
    out = Results()
    try:
        entry = ModelRepository(s.model_repository).get(MODEL)
    except LookupError as exc:
        raise SystemExit(f"bench_retrieval: {exc}; build it with `make models`") from None
    work = split_workload(real_sentences(s.data, s.max_chars, s.seed), s.plan)
    servers: list[ServerProcess] = []
    try:
        log(f"starting 2 retrieval servers (batching on / off, {s.threads} ORT threads) from {s.model_repository}")
        on = ServerProcess("batching-on", s.model_repository, server_env(s, batching=True))
        servers.append(on)
        off = ServerProcess("batching-off", s.model_repository, server_env(s, batching=False))
        servers.append(off)
        log("loading sentence-transformers and the in-process ONNX session")
        st = load_sentence_transformer(s.threads)
        local = InProcessOnnx(entry, s.threads)
        on.wait_serving()
        off.wait_serving()
        log(f"serving: batching on at {on.address} (pid {on.pid}), off at {off.address} (pid {off.pid})")
        measure_embed_throughput(s, work, on, off, st, out)
        measure_single_latency(s, work, on, off, local, out)
        measure_batching(s, work, on, off, out)
        corpus = build_corpus(s, work, on)  # here, so the search server's memory holds only the collections
        on.stop()
        off.stop()
        del st, local
        log("starting a fresh server (default batching) for the search measurements")
        search = ServerProcess("search", s.model_repository, server_env(s, batching=True))
        servers.append(search)
        search.wait_serving()
        measure_search(s, corpus, search, out)
    finally:
        for server in servers:
            if server.exit_code is None:
                server.stop()
    out.raw["servers"] = {
        srv.label: {"stop_seconds": srv.stop_seconds, "exit_code": srv.exit_code, "problems": srv.problems}
        for srv in servers
    }
    return out


def print_report(s: Settings, out: Results, wall: float) -> None:
    print()
    print(f"Facet retrieval benchmark ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s")
    print(table_text(out.rows))
    print()
    for note in out.notes:
        print(f"- {note}")
    problems = [(label, p) for label, info in out.raw["servers"].items() for p in info["problems"]]
    print("- service problems seen in logs / exit codes: " + ("none" if not problems else ""))
    for label, problem in problems:
        print(f"  - [{label}] {problem}")
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
        payload = {
            "mode": "quick" if s.quick else "full",
            "wall_seconds": wall,
            "settings": dataclasses.asdict(s),
            "rows": [dataclasses.asdict(r) for r in out.rows],
            "notes": out.notes,
            "raw": out.raw,
        }
        s.json_path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"- results written to {s.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
