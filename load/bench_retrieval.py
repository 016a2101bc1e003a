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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from deploy.model_repository import ModelRepository, ModelVersion  # noqa: E402
from services.retrieval.tokenization import TextTokenizer  # noqa: E402
from services.runtime.config import RetrievalConfig, load_config  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "rarb-mcr"
PREBUILT_REPOSITORY = Path("/tmp/facet-models")
MODEL = RetrievalConfig().embedding_model
SENTENCES_PER_CALL = 32
TOP_K = 10
UPSERT_BATCH = 1024
MIB = 1024 * 1024


# -- settings ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much work each measurement does."""

    throughput_batches: int  # batches of SENTENCES_PER_CALL sentences, the same for facet and ST
    rounds: int  # alternating rounds of each side-by-side measurement
    latency_calls: int  # single-sentence calls per side per round
    concurrent_seconds: float  # per server per round, 32 callers
    documents: int  # vectors per collection
    base_sentences: int  # real sentences embedded to make the documents
    queries: int  # held-out real sentences used as search queries
    search_calls: int  # timed searches per collection


QUICK = Plan(throughput_batches=8, rounds=1, latency_calls=100, concurrent_seconds=4.0, documents=10_000,
             base_sentences=1_000, queries=100, search_calls=200)
FULL = Plan(throughput_batches=16, rounds=2, latency_calls=200, concurrent_seconds=10.0, documents=100_000,
            base_sentences=4_000, queries=200, search_calls=600)


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


def default_model_repository() -> Path:
    """FACET_MODEL_REPOSITORY, else the prebuilt /tmp/facet-models when it holds the model, else the config default."""
    if os.environ.get("FACET_MODEL_REPOSITORY"):
        return Path(os.environ["FACET_MODEL_REPOSITORY"])
    if ModelRepository(PREBUILT_REPOSITORY).has(MODEL):
        return PREBUILT_REPOSITORY
    return load_config().model_repository


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10k documents, shorter runs (~2 minutes)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--model-repository", type=Path, default=None, help="model repository (default: see docs)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real sentences)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="ONNX Runtime intra-op threads in the server and in-process, and torch threads")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for Embed throughput")
    parser.add_argument("--callers", type=int, default=32, help="concurrent single-sentence callers (batching)")
    parser.add_argument("--documents", type=int, help="vectors per collection (default 100k, 10k with --quick)")
    parser.add_argument("--noise", type=float, default=0.02, help="gaussian noise std per dimension for documents")
    parser.add_argument("--max-chars", type=int, default=300, help="skip texts longer than this (paragraphs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
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
    """One `python -m services.retrieval` child with its own data dir; `stop()` cleans everything up."""

    def __init__(self, label: str, model_repository: Path, overrides: Mapping[str, str]) -> None:
        self.label = label
        self.workdir = Path(tempfile.mkdtemp(prefix=f"facet-bench-{label}-"))
        self.data_dir = self.workdir / "data"
        self.port_file = self.workdir / "port.json"
        self.log_path = self.workdir / "server.log"
        self.address = ""
        self.problems: list[str] = []
        self.stop_seconds: float | None = None
        self.exit_code: int | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACET_")}
        env.update({"FACET_MODEL_REPOSITORY": str(model_repository), "FACET_DATA_DIR": str(self.data_dir)})
        env.update(overrides)
        self._log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.retrieval", "--port", "0", "--port-file", str(self.port_file)],
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
        self.address = f"127.0.0.1:{json.loads(self.port_file.read_text())['port']}"
        return self.address

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

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


def server_env(threads: int, batching: bool) -> dict[str, str]:
    return {
        "FACET_BATCHING_ENABLED": "1" if batching else "0",
        "FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(threads),
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
        outputs = self.session.run(self.output_names, {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
        return outputs[self.output_names.index("sentence_embedding_normalized")]


def load_sentence_transformer(threads: int) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    from training.retrieval.export import packaged_minilm_dir

    torch.set_num_threads(threads)
    return SentenceTransformer(str(packaged_minilm_dir()), device="cpu", local_files_only=True)


def st_encode_seconds(model: Any, batches: list[list[str]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        model.encode(batch, batch_size=SENTENCES_PER_CALL, show_progress_bar=False)
    return time.perf_counter() - start


# -- measurements over gRPC ------------------------------------------------------------------


async def _facet_embed_seconds(address: str, batches: list[list[str]], clients: int) -> float:
    pool = [sdk.AsyncClient(retrieval=address) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.embed(batches[0]) for c in pool))  # warm channels
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


def call_latencies_ms(call: Callable[[list[str]], object], texts: list[str]) -> list[float]:
    """Latency of `call([text])` for each text, one after another."""
    latencies = []
    for text in texts:
        start = time.perf_counter()
        call([text])
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


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

        async def caller(index: int) -> None:
            position = index
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
    """`callers` concurrent loops of single-sentence Embed calls for `seconds`."""
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


def embed_corpus(address: str, texts: list[str], per_call: int = 64, clients: int = 4) -> np.ndarray:
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
    last_sent: float = 0.0  # time.time() when the last call was sent


async def _upsert_all(address: str, collection: str, vectors: np.ndarray, concurrency: int) -> UpsertStats:
    ids = document_ids(len(vectors))
    queue = iter(range(0, len(vectors), UPSERT_BATCH))
    stats = UpsertStats()
    async with sdk.AsyncClient(retrieval=address, timeout_s=600) as client:

        async def drain() -> None:
            for start in queue:
                stats.last_sent = time.time()
                began = time.perf_counter()
                await client.upsert(collection, ids[start : start + UPSERT_BATCH], vectors=vectors[start : start + UPSERT_BATCH])
                stats.latencies_s.append(time.perf_counter() - began)

        await asyncio.gather(*(drain() for _ in range(concurrency)))
    return stats


def upsert_all(address: str, collection: str, vectors: np.ndarray, concurrency: int = 2) -> UpsertStats:
    """Load `vectors` in UPSERT_BATCH-document calls (`concurrency` in flight); return each call's seconds."""
    return asyncio.run(_upsert_all(address, collection, vectors, concurrency))


def exact_top_ids(documents: np.ndarray, queries: np.ndarray, k: int) -> list[list[str]]:
    """Exact cosine top-k ids, computed here with numpy."""
    docs = documents / np.linalg.norm(documents, axis=1, keepdims=True)
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :k]
    ids = document_ids(len(documents))
    return [[ids[j] for j in row] for row in top]


def faiss_flat_latencies_ms(documents: np.ndarray, queries: np.ndarray, calls: int, threads: int) -> list[float]:
    """Single-query top-k latency of a FAISS flat inner-product index in this process (the service's flat index)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(documents.shape[1])
    index.add(documents / np.linalg.norm(documents, axis=1, keepdims=True))
    for q in queries[:20]:
        index.search(q[None, :], TOP_K)
    latencies = []
    for i in range(calls):
        q = queries[i % len(queries)][None, :]
        start = time.perf_counter()
        index.search(q, TOP_K)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def recall_at_k(found: list[list[str]], truth: list[list[str]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def wait_for_index_save(server: ServerProcess, written: Mapping[str, float], client: sdk.Client,
                        collection: str, query: np.ndarray, timeout_s: float = 120.0) -> list[float]:
    """Search continuously until each collection's index file was saved after its last write; return those
    searches' latencies (ms). The service saves indexes on its one store thread every few seconds, and
    searches queue behind a save.
    """
    index_dir = server.data_dir / "retrieval" / "indexes"
    deadline = time.monotonic() + timeout_s
    latencies = []
    while not all(index_saved_after(index_dir / f"{name}.json", since) for name, since in written.items()):
        if time.monotonic() > deadline:
            server.problems.append(f"indexes {sorted(written)} not saved within {timeout_s:.0f} s of the last upsert")
            break
        start = time.perf_counter()
        client.search(collection, query, top_k=TOP_K)
        latencies.append((time.perf_counter() - start) * 1e3)
    return latencies


def index_saved_after(meta_file: Path, since: float) -> bool:
    return meta_file.is_file() and meta_file.stat().st_mtime > since


# -- report --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Row:
    measure: str
    facet: str
    baseline: str
    ratio: str
    target: str
    met: bool | None = None  # None: no target, for information


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def table_text(rows: list[Row]) -> str:
    header = ("measure", "facet", "baseline", "ratio / overhead", "target")
    cells = [header] + [
        (r.measure, r.facet, r.baseline, r.ratio, r.target + ("" if r.met is None else (" met" if r.met else " MISSED")))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the benchmark -------------------------------------------------------------------------


@dataclasses.dataclass
class Results:
    rows: list[Row] = dataclasses.field(default_factory=list)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def measure_embed_throughput(s: Settings, work: Workload, on: ServerProcess, off: ServerProcess, st: Any,
                             out: Results) -> None:
    sentences = sum(len(b) for b in work.batches)
    seconds = {"on": 0.0, "off": 0.0, "st": 0.0}
    st_encode_seconds(st, work.batches[:2])  # warm-up
    sides: dict[str, Callable[[], float]] = {
        "on": lambda: facet_embed_seconds(on.address, work.batches, s.clients),
        "off": lambda: facet_embed_seconds(off.address, work.batches, s.clients),
        "st": lambda: st_encode_seconds(st, work.batches),
    }
    for r in range(s.plan.rounds):
        for side in (["on", "off", "st"] if r % 2 == 0 else ["st", "off", "on"]):
            seconds[side] += sides[side]()
    rate = {k: sentences * s.plan.rounds / v for k, v in seconds.items()}
    log(f"a. embed throughput (sentences/s): facet batching on {rate['on']:.1f}, off {rate['off']:.1f}, ST {rate['st']:.1f}")
    out.rows.append(Row(f"a. Embed throughput, {SENTENCES_PER_CALL}/call, {s.clients} clients, batching on (sent/s)",
                        f"{rate['on']:.1f}", f"ST encode {rate['st']:.1f}", f"{rate['on'] / rate['st']:.2f}x",
                        ">= 1.3x", rate["on"] / rate["st"] >= 1.3))
    out.rows.append(Row(f"a. Embed throughput, {SENTENCES_PER_CALL}/call, {s.clients} clients, batching off (sent/s)",
                        f"{rate['off']:.1f}", f"ST encode {rate['st']:.1f}", f"{rate['off'] / rate['st']:.2f}x",
                        ">= 1.3x", rate["off"] / rate["st"] >= 1.3))
    facet = facet_embeddings(on.address, work.batches[0])
    reference = st.encode(work.batches[0], batch_size=SENTENCES_PER_CALL, show_progress_bar=False)
    cosine = float(np.min(np.sum(facet * reference, axis=1)))
    out.rows.append(Row("a'. parity: min cosine facet vs ST (32 sentences)", f"{cosine:.6f}", "1", "", ">= 0.999",
                        cosine >= 0.999))
    out.raw["embed_throughput"] = {"sentences_per_side": sentences * s.plan.rounds, "seconds": seconds,
                                   "sentences_per_s": rate, "min_cosine_vs_st": cosine}


def measure_single_latency(s: Settings, work: Workload, on: ServerProcess, off: ServerProcess,
                           local: InProcessOnnx, out: Results) -> None:
    latencies: dict[str, list[float]] = {"off": [], "on": [], "local": []}
    with sdk.Client(retrieval=off.address) as c_off, sdk.Client(retrieval=on.address) as c_on:
        calls: dict[str, Callable[[list[str]], object]] = {"off": c_off.embed, "on": c_on.embed, "local": local.embed}
        for call in calls.values():
            call_latencies_ms(call, work.singles[:20])  # warm-up
        for r in range(s.plan.rounds * 2):
            for side in (["off", "on", "local"] if r % 2 == 0 else ["local", "on", "off"]):
                latencies[side] += call_latencies_ms(calls[side], work.singles)
    p50 = {k: percentile(v, 50) for k, v in latencies.items()}
    p99 = {k: percentile(v, 99) for k, v in latencies.items()}
    log("b. single-sentence latency p50/p99 (ms): " + ", ".join(f"{k} {p50[k]:.2f}/{p99[k]:.2f}" for k in latencies))
    for side, label in (("off", "batching off"), ("on", "batching on, 2000 us delay")):
        overhead = p50[side] - p50["local"]
        out.rows.append(Row(f"b. Embed 1 sentence p50, {label} (ms)", f"{p50[side]:.2f}",
                            f"in-process ORT {p50['local']:.2f}", f"+{overhead:.2f} ms", "<= 1 ms", overhead <= 1.0))
        out.rows.append(Row(f"b. Embed 1 sentence p99, {label} (ms)", f"{p99[side]:.2f}",
                            f"in-process ORT {p99['local']:.2f}", f"+{p99[side] - p99['local']:.2f} ms", "info"))
    out.raw["single_latency_ms"] = {"calls_per_side": len(latencies["local"]), "p50": p50, "p99": p99}


def measure_batching(s: Settings, work: Workload, on: ServerProcess, off: ServerProcess, out: Results) -> None:
    results = {"on": LoadResult(), "off": LoadResult()}
    servers = {"on": on, "off": off}
    for side in ("on", "off"):
        concurrent_single_calls(servers[side].address, work.concurrent, s.callers, 1.0)  # warm-up
    for r in range(s.plan.rounds):
        for side in (["on", "off"] if r % 2 == 0 else ["off", "on"]):
            results[side].add(concurrent_single_calls(servers[side].address, work.concurrent, s.callers,
                                                      s.plan.concurrent_seconds))
    for side, result in results.items():
        if result.errors:
            servers[side].problems.append(f"{result.errors} failed Embed calls under {s.callers} callers: {result.first_error}")
    ratio = results["on"].per_second / results["off"].per_second
    log(f"c. {s.callers} concurrent callers (calls/s): on {results['on'].per_second:.1f}, "
        f"off {results['off'].per_second:.1f}, ratio {ratio:.2f}")
    out.rows.append(Row(f"c. {s.callers} concurrent 1-sentence callers (calls/s)", f"on {results['on'].per_second:.1f}",
                        f"off {results['off'].per_second:.1f}", f"{ratio:.2f}x", ">= 3x", ratio >= 3.0))
    out.rows.append(Row(f"c. latency under {s.callers} callers p50/p99 (ms)",
                        f"on {percentile(results['on'].latencies_ms, 50):.1f}/{percentile(results['on'].latencies_ms, 99):.1f}",
                        f"off {percentile(results['off'].latencies_ms, 50):.1f}/{percentile(results['off'].latencies_ms, 99):.1f}",
                        "", "info"))
    out.raw["batching"] = {
        side: {"calls": r.calls, "errors": r.errors, "seconds": r.seconds, "calls_per_s": r.per_second,
               "p50_ms": percentile(r.latencies_ms, 50), "p99_ms": percentile(r.latencies_ms, 99)}
        for side, r in results.items()
    }


def measure_search(s: Settings, work: Workload, server: ServerProcess, out: Results) -> None:
    plan = s.plan
    base = embed_corpus(server.address, work.base)
    queries = embed_corpus(server.address, work.queries)
    documents = noisy_documents(base, plan.documents, s.noise, s.seed)
    out.notes.append(
        f"d. documents: {len(base)} real sentences embedded by the service, repeated to {plan.documents} vectors, "
        f"each plus gaussian noise (std {s.noise} per dimension, then L2-normalised by the cosine collection); "
        f"queries: {len(queries)} other real sentences embedded by the service."
    )
    scale = 100_000 / plan.documents
    rss: dict[str, float] = {}
    load: dict[str, dict[str, float]] = {}
    written: dict[str, float] = {}
    with sdk.Client(retrieval=server.address) as client:
        for kind in ("flat", "hnsw"):
            client.create_collection(f"bench_{kind}", index_type=kind, dimension=documents.shape[1])
        for kind in ("flat", "hnsw"):
            before = server.rss_bytes()
            start = time.perf_counter()
            stats = upsert_all(server.address, f"bench_{kind}", documents)
            seconds = time.perf_counter() - start
            written[f"bench_{kind}"] = stats.last_sent
            calls = stats.latencies_s
            rss[kind] = (server.rss_bytes() - before) / MIB
            load[kind] = {"seconds": seconds, "docs_per_s": plan.documents / seconds,
                          "upsert_p50_s": percentile(calls, 50), "upsert_max_s": max(calls)}
            log(f"d. loaded {plan.documents} docs into {kind} in {seconds:.1f} s "
                f"(upsert p50 {load[kind]['upsert_p50_s']:.2f} s, max {load[kind]['upsert_max_s']:.2f} s); "
                f"RSS +{rss[kind]:.1f} MiB")
        stall = wait_for_index_save(server, written, client, "bench_flat", queries[0])
        latencies, found = interleaved_searches(client, queries, plan.search_calls)
    truth = exact_top_ids(documents, queries, TOP_K)
    local = faiss_flat_latencies_ms(documents, queries, plan.search_calls, s.threads)
    recall = recall_at_k(found["hnsw"], found["flat"])
    flat_exact = recall_at_k(found["flat"], truth)
    p50 = {k: percentile(v, 50) for k, v in latencies.items()}
    p99 = {k: percentile(v, 99) for k, v in latencies.items()}
    local_p50 = percentile(local, 50)
    n = f"{plan.documents // 1000}k"
    log(f"d. search p50 flat {p50['flat']:.2f} ms, hnsw {p50['hnsw']:.2f} ms, in-process faiss flat {local_p50:.2f} ms; "
        f"recall@10 hnsw vs flat {recall:.3f}; flat vs exact {flat_exact:.3f}")
    out.rows += [
        Row(f"d. Search top-10 p50, flat, {n} docs (ms)", f"{p50['flat']:.2f}", f"in-process FAISS flat {local_p50:.2f}",
            f"+{p50['flat'] - local_p50:.2f} ms", "info"),
        Row(f"d. Search top-10 p50, HNSW, {n} docs (ms)", f"{p50['hnsw']:.2f}", f"facet flat {p50['flat']:.2f}",
            f"{p50['flat'] / p50['hnsw']:.2f}x faster", "info"),
        Row("d. Search top-10 p99 flat / HNSW (ms)", f"{p99['flat']:.2f} / {p99['hnsw']:.2f}", "", "", "info"),
        Row(f"d. HNSW recall@10 vs flat ({len(queries)} queries)", f"{recall:.3f}", f"flat vs exact {flat_exact:.3f}",
            "", "info"),
        Row("d. Server RSS per 100k docs, flat (MiB)", f"{rss['flat'] * scale:.1f}",
            f"raw float32 {100_000 * documents.shape[1] * 4 / MIB:.1f}",
            f"{rss['flat'] * scale / (100_000 * documents.shape[1] * 4 / MIB):.2f}x", "info"),
        Row("d. Server RSS per 100k docs, HNSW (MiB)", f"{rss['hnsw'] * scale:.1f}",
            f"raw float32 {100_000 * documents.shape[1] * 4 / MIB:.1f}",
            f"{rss['hnsw'] * scale / (100_000 * documents.shape[1] * 4 / MIB):.2f}x", "info"),
        Row(f"d. Upsert load, {UPSERT_BATCH}/call, flat / HNSW (docs/s)",
            f"{load['flat']['docs_per_s']:.0f} / {load['hnsw']['docs_per_s']:.0f}", "",
            f"max call {load['flat']['upsert_max_s']:.2f} / {load['hnsw']['upsert_max_s']:.2f} s", "info"),
    ]
    if stall:
        out.rows.append(Row("d. Search while the periodic index save runs, max (ms)", f"{max(stall):.1f}",
                            f"p50 after {p50['flat']:.2f}", f"{len(stall)} searches waited", "info"))
    out.raw["search"] = {"documents": plan.documents, "queries": len(queries), "p50_ms": p50, "p99_ms": p99,
                         "faiss_flat_p50_ms": local_p50, "recall_hnsw_vs_flat": recall, "recall_flat_vs_exact": flat_exact,
                         "rss_delta_mib": rss, "rss_per_100k_mib": {k: v * scale for k, v in rss.items()}, "load": load,
                         "search_during_save_ms": stall}


def interleaved_searches(client: sdk.Client, queries: np.ndarray, calls: int) -> tuple[dict[str, list[float]], dict[str, list[list[str]]]]:
    """Alternate flat and HNSW searches; return latencies (ms) and the ids found for each query (first pass)."""
    names = {"flat": "bench_flat", "hnsw": "bench_hnsw"}
    for q in queries[:20]:  # warm-up
        for name in names.values():
            client.search(name, q, top_k=TOP_K)
    latencies: dict[str, list[float]] = {k: [] for k in names}
    found: dict[str, list[list[str]]] = {k: [] for k in names}
    for i in range(max(calls, len(queries))):
        for kind in (("flat", "hnsw") if i % 2 == 0 else ("hnsw", "flat")):
            start = time.perf_counter()
            hits = client.search(names[kind], queries[i % len(queries)], top_k=TOP_K)
            latencies[kind].append((time.perf_counter() - start) * 1e3)
            if i < len(queries):
                found[kind].append([h.id for h in hits])
    return latencies, found


def run_benchmark(s: Settings) -> Results:
    out = Results()
    entry = ModelRepository(s.model_repository).get(MODEL)
    work = split_workload(real_sentences(s.data, s.max_chars, s.seed), s.plan)
    servers: list[ServerProcess] = []
    try:
        log(f"starting 2 retrieval servers (batching on / off, {s.threads} ORT threads) from {s.model_repository}")
        on = ServerProcess("batching-on", s.model_repository, server_env(s.threads, batching=True))
        servers.append(on)
        off = ServerProcess("batching-off", s.model_repository, server_env(s.threads, batching=False))
        servers.append(off)
        log("loading sentence-transformers and the in-process ONNX session")
        st = load_sentence_transformer(s.threads)
        local = InProcessOnnx(entry, s.threads)
        on.wait_serving()
        off.wait_serving()
        log(f"serving: on {on.address} (pid {on.pid}), off {off.address} (pid {off.pid})")
        measure_embed_throughput(s, work, on, off, st, out)
        measure_single_latency(s, work, on, off, local, out)
        measure_batching(s, work, on, off, out)
        for server in (on, off):
            server.stop()
        del st, local
        log("starting a fresh server (default batching) for the search measurements")
        search = ServerProcess("search", s.model_repository, server_env(s.threads, batching=True))
        servers.append(search)
        search.wait_serving()
        out.raw["search_server_idle_rss_mib"] = search.rss_bytes() / MIB
        measure_search(s, work, search, out)
    finally:
        for server in servers:
            if server.exit_code is None:
                server.stop()
    out.raw["servers"] = {
        srv.label: {"stop_seconds": srv.stop_seconds, "exit_code": srv.exit_code, "problems": srv.problems}
        for srv in servers
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    began = time.perf_counter()
    out = run_benchmark(s)
    wall = time.perf_counter() - began
    out.notes[:0] = [
        f"threads: server ONNX Runtime intra_op={s.threads} inter_op=1, in-process ONNX Runtime the same, "
        f"torch.set_num_threads({s.threads}) for sentence-transformers; {os.cpu_count()} CPUs visible.",
        f"texts: real RAR-b MCR queries/candidates from {s.data} (<= {s.max_chars} chars), shuffled with seed {s.seed}.",
        f"a/b/c run in {s.plan.rounds} alternating round(s) per side; the machine may be shared, so compare ratios.",
    ]
    print()
    print(f"Facet retrieval benchmark ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s")
    print(table_text(out.rows))
    print()
    for note in out.notes:
        print(f"- {note}")
    problems = [(label, p) for label, info in out.raw["servers"].items() for p in info["problems"]]
    print("- service problems seen: " + ("none" if not problems else ""))
    for label, problem in problems:
        print(f"  - [{label}] {problem}")
    for label, info in out.raw["servers"].items():
        if info["stop_seconds"] is not None:
            print(f"- server {label}: stopped {info['stop_seconds']:.1f} s after SIGTERM, exit code {info['exit_code']}")
    if s.json_path is not None:
        payload = {"mode": "quick" if s.quick else "full", "wall_seconds": wall, "settings": dataclasses.asdict(s),
                   "rows": [dataclasses.asdict(r) for r in out.rows], "notes": out.notes, "raw": out.raw}
        s.json_path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"- results written to {s.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
