"""Benchmark Facet's Embed and Rerank against Infinity (`infinity-emb`), the server a user would pick
instead, and against in-process baselines: one table of ratios, measured side by side in one run.

    .venv/bin/python load/bench_rerank.py [--parts embed,rerank] [--callers 1,8,32] [--duration-s 20] [--quick]

Starts real `python -m services.retrieval` (and `services.rerank`) processes on the model repository,
and Infinity from `.venv-infinity` (`bash load/install_infinity.sh`) on the same local directories:
the packaged all-MiniLM-L6-v2 that Facet's `all-minilm-l6-v2` was exported from, and the reranker's
stored sentence-transformers CrossEncoder directory (`File.CROSS_ENCODER`). Both are called by the same
load generator (`load.harness.callers_for_duration`: N concurrent callers, each calling in a loop),
Facet through the SDK's AsyncClient (one client), Infinity over HTTP with httpx (one connection pool).

  embed:  texts/s and p50/p99 per call at each caller count; calls of `--embed-per-call` real RAR-b
          texts; Facet / Infinity per row (target >= 1.0x).
  rerank: pairs/s at each caller count, 32 documents per call (an RAR-b test-split query, its
          candidates, padded with other rows' candidates); Facet / Infinity (target >= 1.0x) and
          Facet / `CrossEncoder.predict` in this process on the same calls and threads (>= 1.5x);
          single-call p50, Facet vs the same ONNX session and tokenizer in this process (<= +1 ms).

Sides take turns in `--rounds` slices per row (the order swapped each round), so background load
hits them alike: read the ratios, not the absolute numbers. `--quick` (3 s per row, callers 1 and 8)
is a smoke run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

import sdk  # noqa: E402
from load.bench_infinity import (  # noqa: E402
    ENGINES,
    HTTP_TIMEOUT_S,
    INFINITY_VENV,
    InfinityClient,
    InfinityModel,
    InfinityServer,
)
from load.harness import (  # noqa: E402
    DEFAULT_DATA,
    BenchmarkService,
    Call,
    Results,
    Row,
    default_model_repository,
    load_summary,
    log,
    overhead_row,
    percentile,
    print_results,
    ratio_row,
    real_sentences,
    side_by_side,
    timed_ms,
)
from load.retrieval_embed import delta, histograms, mean_of  # noqa: E402

PARTS = ("embed", "rerank", "search")
EMBED_TARGET = 1.0  # Facet / Infinity, every row (issue 14, part 7)
RERANK_TARGET = 1.0
CROSS_ENCODER_TARGET = 1.5  # Facet / CrossEncoder.predict in-process
OVERHEAD_TARGET_MS = 1.0  # single-call p50, Facet minus the same ONNX session in-process
PARITY_MIN_COSINE = 0.999
PARITY_MAX_PROBABILITY_DIFF = 1e-3
SEARCH_CANDIDATES = 100
SEARCH_TOP_K = 10
INFINITY_EMBED_NAME = "minilm"
INFINITY_RERANK_NAME = "reranker"


# -- settings --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    parts: tuple[str, ...]
    callers: tuple[int, ...]
    duration_s: float  # per side per row, split over `rounds` slices
    rounds: int
    quick: bool
    model_repository: Path
    data: Path
    threads: int
    embed_per_call: int
    docs_per_call: int
    reranker: str
    embedding_model: str
    infinity_engine: str
    infinity_batch_size: int
    infinity_venv: Path
    infinity_embed_dir: Path | None  # default: the packaged all-MiniLM-L6-v2
    latency_calls: int
    search_documents: int  # the collection `search(rerank=True)` searches
    search_calls: int  # timed searches per side
    timeout_s: float  # every call's deadline, both sides
    server_settings: dict[str, str]  # FACET_* settings for Facet's services, on top of the thread count
    seed: int
    json_path: Path | None


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """Parse "1,8,32" into (1, 8, 32): positive integers, in the given order, duplicates dropped.

    Raises:
        ValueError: empty, not an integer, or below 1 (the message names `name`).
    """
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise ValueError(f"{name}: {part!r} is not an integer") from None
        if value < 1:
            raise ValueError(f"{name}: {value} is below 1")
        if value not in values:
            values.append(value)
    if not values:
        raise ValueError(f"{name}: give at least one value, e.g. 1,8,32")
    return tuple(values)


def parse_settings(argv: Sequence[str] | None) -> Settings:
    from services.rerank.config import RerankConfig
    from services.retrieval.config import RetrievalConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--parts",
        help="embed, rerank, search (search(rerank=True)), comma-separated (default all; search only once the SDK has it)",
    )
    parser.add_argument("--callers", help="concurrent callers per row (default 1,8,32; 1,8 with --quick)")
    parser.add_argument("--duration-s", type=float, help="seconds per side per row (default 20; 3 with --quick)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating slices per row (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per row, callers 1,8, 60 latency calls")
    parser.add_argument(
        "--model-repository", type=Path, default=None, help="default: $FACET_MODEL_REPOSITORY or the per-user one"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="RAR-b MCR CSV folder (real texts)")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="ONNX Runtime intra-op threads in Facet's services and in-process, torch threads in-process",
    )
    parser.add_argument("--embed-per-call", type=int, default=32, help="texts per Embed call (default 32)")
    parser.add_argument("--docs-per-call", type=int, default=32, help="documents per Rerank call (default 32)")
    parser.add_argument("--reranker", default=RerankConfig().model, help="the cross-encoder in the repository")
    parser.add_argument(
        "--infinity-engine", choices=ENGINES, default="torch", help="Infinity's --engine (default torch, its default)"
    )
    parser.add_argument(
        "--infinity-batch-size", type=int, default=32, help="Infinity's --batch-size (default 32, its default)"
    )
    parser.add_argument("--infinity-venv", type=Path, default=INFINITY_VENV)
    parser.add_argument(
        "--infinity-embed-dir",
        type=Path,
        help="the embedding model directory Infinity serves (default: the packaged all-MiniLM-L6-v2; "
        "with --infinity-engine optimum, an ONNX export of it)",
    )
    parser.add_argument(
        "--latency-calls", type=int, help="single Rerank calls per side for the overhead row (default 200)"
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=HTTP_TIMEOUT_S,
        help=f"every call's deadline, Facet's (SDK timeout_s) and Infinity's (httpx timeout) alike "
        f"(default {HTTP_TIMEOUT_S:g}: throughput, not admission; the SDK's own default is 30)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="FACET_KEY=VALUE",
        help="a setting for Facet's services (repeatable), e.g. FACET_ONNXRUNTIME_ALLOW_SPINNING=0",
    )
    parser.add_argument(
        "--search-documents",
        type=int,
        help="real RAR-b texts in the searched collection (default 1000; 300 with --quick)",
    )
    parser.add_argument("--search-calls", type=int, help="timed searches per side (default 40; 10 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    try:
        default_parts = ",".join(p for p in PARTS if p != "search" or search_rerank_available())
        parts = tuple(p.strip() for p in (args.parts or default_parts).split(",") if p.strip())
        unknown = sorted(set(parts) - set(PARTS))
        if unknown or not parts:
            raise ValueError(f"--parts: {', '.join(unknown) or 'none given'}; use {', '.join(PARTS)}")
        if "search" in parts and not search_rerank_available():
            raise ValueError("--parts search: the SDK's search has no `rerank` yet")
        callers = parse_int_list(args.callers or ("1,8" if args.quick else "1,8,32"), "--callers")
    except ValueError as exc:
        parser.error(str(exc))
    for name in (
        "threads",
        "embed_per_call",
        "docs_per_call",
        "rounds",
        "infinity_batch_size",
        "search_documents",
        "search_calls",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    duration = args.duration_s if args.duration_s is not None else (3.0 if args.quick else 20.0)
    if any("=" not in item or not item.startswith("FACET_") for item in args.server_env):
        parser.error("--server-env takes FACET_KEY=VALUE")
    if duration <= 0 or args.timeout_s <= 0:
        parser.error("--duration-s and --timeout-s must be > 0")
    return Settings(
        parts=parts,
        callers=callers,
        duration_s=duration,
        rounds=args.rounds,
        quick=args.quick,
        model_repository=args.model_repository or default_model_repository(),
        data=args.data,
        threads=args.threads,
        embed_per_call=args.embed_per_call,
        docs_per_call=args.docs_per_call,
        reranker=args.reranker,
        embedding_model=RetrievalConfig().embedding_model,
        infinity_engine=args.infinity_engine,
        infinity_batch_size=args.infinity_batch_size,
        infinity_venv=args.infinity_venv,
        infinity_embed_dir=args.infinity_embed_dir,
        latency_calls=args.latency_calls or (60 if args.quick else 200),
        search_documents=args.search_documents or (300 if args.quick else 1000),
        search_calls=args.search_calls or (10 if args.quick else 40),
        timeout_s=args.timeout_s,
        server_settings=dict(item.split("=", 1) for item in args.server_env),
        seed=args.seed,
        json_path=args.json,
    )


# -- inputs ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RerankCall:
    """One Rerank call's input: a query and its documents (its own candidates first, then padding)."""

    query: str
    documents: tuple[str, ...]


def rerank_calls(rows: Sequence[tuple[str, Sequence[str]]], docs_per_call: int, seed: int) -> list[RerankCall]:
    """One call per (query, candidates) row: the row's candidates (its first `docs_per_call`), padded
    to `docs_per_call` documents with other rows' candidates, each document once per call; the
    padding is drawn with `random.Random(seed)`, so the same rows and seed give the same calls.

    Args:
        rows: (query, candidates) in order, e.g. RAR-b MCR rows.
        docs_per_call: documents per call.
        seed: the padding's seed.
    Returns:
        The calls, in the order of `rows` (rows with an empty query are dropped).
    Raises:
        ValueError: the rows hold fewer than `docs_per_call` distinct candidates in all.
    """
    pool = sorted({d for _, candidates in rows for d in candidates if d.strip()})
    if len(pool) < docs_per_call:
        raise ValueError(f"the rows hold {len(pool)} distinct candidates; a call needs {docs_per_call}")
    rng = random.Random(seed)
    calls: list[RerankCall] = []
    for query, candidates in rows:
        if not query.strip():
            continue
        documents = list(dict.fromkeys(d for d in candidates if d.strip()))[:docs_per_call]
        taken = set(documents)
        while len(documents) < docs_per_call:
            pick = pool[rng.randrange(len(pool))]
            if pick not in taken:
                taken.add(pick)
                documents.append(pick)
        calls.append(RerankCall(query, tuple(documents)))
    return calls


def rarb_rerank_calls(data: Path, docs_per_call: int, seed: int) -> list[RerankCall]:
    """Rerank calls from the RAR-b test split (`training.retrieval.rarb.split_of`) of every MCR file
    in `data`, the files interleaved so every call count mixes the tasks."""
    from training.retrieval.rarb import data_files, load_rows, rows_of_split

    per_file = [rows_of_split(load_rows(path), "test") for path in data_files(data)]
    if not any(per_file):
        raise SystemExit(f"no RAR-b MCR rows in {data}; pass --data")
    interleaved = [rows[i] for i in range(max(len(r) for r in per_file)) for rows in per_file if i < len(rows)]
    calls = rerank_calls([(row.query, row.candidates) for row in interleaved], docs_per_call, seed)
    random.Random(seed).shuffle(calls)
    return calls


def embed_batches(data: Path, per_call: int, seed: int) -> list[list[str]]:
    """Calls of `per_call` real RAR-b texts (unique, <= 300 characters, shuffled with `seed`)."""
    texts = real_sentences(data, 300, seed)
    return [texts[i : i + per_call] for i in range(0, len(texts) - per_call + 1, per_call)]


# -- measuring -------------------------------------------------------------------------------


async def measure_embed(s: Settings, facet: BenchmarkService, infinity: InfinityServer, out: Results) -> None:
    """Embed: Facet's retrieval service vs Infinity on the same calls, at each caller count."""
    batches = embed_batches(s.data, s.embed_per_call, s.seed)
    http = InfinityClient(infinity.url, max_connections=max(s.callers) + 4, timeout_s=s.timeout_s)
    async with sdk.AsyncClient(retrieval=facet.address, timeout_s=s.timeout_s) as client:
        sides: dict[str, Call] = {
            "facet": lambda i: client.embed(batches[i % len(batches)]),
            "infinity": lambda i: http.embed(INFINITY_EMBED_NAME, batches[i % len(batches)]),
        }
        ours = await client.embed(batches[0])
        theirs = await http.embed(INFINITY_EMBED_NAME, batches[0])
        cosine = float(np.min(np.sum(ours * theirs, axis=1)))
        out.rows.append(
            Row(
                f"Embed parity: min cosine, Facet vs Infinity, {len(batches[0])} texts",
                f"{cosine:.6f}",
                "1.0",
                "",
                f">= {PARITY_MIN_COSINE}",
                cosine >= PARITY_MIN_COSINE,
            )
        )
        for side in sides.values():  # warm-up: connections, first-shape costs
            for i in range(3):
                await side(i)
        out.raw["embed"] = {
            "texts_per_call": s.embed_per_call,
            "calls_available": len(batches),
            "min_cosine": cosine,
            "rows": {},
        }
        for n in s.callers:
            slices: list[dict[str, Any]] = []
            before = histograms(facet)
            results = await side_by_side(sides, n, s.duration_s, s.rounds, slices=slices)
            batching = delta(histograms(facet), before)
            row = ratio_row(
                f"Embed {s.embed_per_call} texts/call, {n} caller{'s' if n > 1 else ''}: texts/s (p50 / p99 per call)",
                results["facet"],
                results["infinity"],
                s.embed_per_call,
                "Infinity",
                EMBED_TARGET,
            )
            out.rows.append(row)
            out.raw["embed"]["rows"][n] = {
                **{k: load_summary(v, s.embed_per_call) for k, v in results.items()},
                "slices": slices,
                "facet_rows_per_batch": mean_of(batching, "batch_rows_sum", "batches"),
                "facet_queue_ms": 1e3 * mean_of(batching, "queue_s_sum", "queued"),
            }
            log(
                f"embed, {n} callers: Facet {row.facet}; {row.baseline}; {row.ratio}; Facet "
                f"{out.raw['embed']['rows'][n]['facet_rows_per_batch']:.1f} rows/batch"
            )
    await http.close()


class InProcessReranker:
    """The cross-encoder the rerank service runs, in this process: the same model.onnx, the service's
    pair tokenizer (`services.rerank.tokenization.PairTokenizer`, truncating) and its thread settings."""

    def __init__(self, entry: Any, threads: int) -> None:
        from services.backends.onnx_session import create_session
        from services.rerank.catalog import File, Prop, Tensor
        from services.rerank.tokenization import PairTokenizer

        self.session = create_session(
            entry.model_file, providers="cpu", intra_op_num_threads=threads, inter_op_num_threads=1
        )
        max_seq = int(entry.metadata["properties"][Prop.MAX_SEQ_LENGTH])
        self.tokenizer = PairTokenizer(entry.file(File.TOKENIZER), max_seq)
        self.inputs = (Tensor.INPUT_IDS, Tensor.ATTENTION_MASK, Tensor.TOKEN_TYPE_IDS)
        self.output = Tensor.LOGITS

    def fits(self, call: RerankCall) -> bool:
        """Whether every (query, document) pair of the call fits the model's max_seq_length whole,
        so no side truncates or windows it (their truncation rules differ: Facet keeps the query
        whole, sentence-transformers and Infinity cut the longest side, Infinity at the tokenizer's
        512 rather than the model's max_seq_length)."""
        from services.runtime.errors import InvalidArgument

        try:
            self.tokenizer(
                call.query,
                list(call.documents),
                truncate=False,
                windowing=False,
                overlap=0,
                max_pairs=len(call.documents),
            )
        except InvalidArgument:
            return False
        return True

    def logits(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """float32 [len(documents)]: each (query, document) pair's logit, documents cut to their first window."""
        batch = self.tokenizer(
            query, list(documents), truncate=True, windowing=False, overlap=0, max_pairs=len(documents)
        )
        feeds = {name: getattr(batch, name) for name in self.inputs}
        (logits,) = self.session.run([self.output], feeds)
        return np.asarray(logits, dtype=np.float32).reshape(-1)


def load_cross_encoder(path: Path, threads: int) -> Any:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(threads)
    return CrossEncoder(str(path), device="cpu", local_files_only=True)


def facet_scores(result: Any, count: int) -> np.ndarray:
    """float32 [count]: a RerankResult's scores in the order of the documents sent."""
    scores = np.full(count, np.nan, dtype=np.float32)
    for ranked in result:
        scores[ranked.index] = ranked.score
    return scores


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x.astype(np.float64))), dtype=np.float64)


async def measure_rerank(
    s: Settings, facet: BenchmarkService, infinity: InfinityServer, entry: Any, cross_encoder_dir: Path, out: Results
) -> None:
    """Rerank: Facet vs Infinity vs CrossEncoder.predict in this process, pairs/s at each caller count;
    then single-call latency, Facet vs the same ONNX session in this process."""
    import torch

    n_docs = s.docs_per_call
    http = InfinityClient(infinity.url, max_connections=max(s.callers) + 4, timeout_s=s.timeout_s)
    log(f"rerank: loading CrossEncoder({cross_encoder_dir}) and the in-process ONNX session")
    cross_encoder = load_cross_encoder(cross_encoder_dir, s.threads)
    local = InProcessReranker(entry, s.threads)
    every_call = rarb_rerank_calls(s.data, s.docs_per_call, s.seed)
    calls = [call for call in every_call if local.fits(call)]  # the same work on every side: nothing cut
    if not calls:
        raise SystemExit(f"bench_rerank: no call of {n_docs} RAR-b documents fits {s.reranker}'s max_seq_length whole")
    log(f"rerank: {len(calls)} of {len(every_call)} calls have every pair within the model's max_seq_length")

    def predict(i: int) -> object:
        call = calls[i % len(calls)]
        return cross_encoder.predict(
            [(call.query, d) for d in call.documents],
            batch_size=n_docs,
            show_progress_bar=False,
            activation_fn=torch.nn.Identity(),  # logits, whatever activation the directory names
        )

    async with sdk.AsyncClient(rerank=facet.address, timeout_s=s.timeout_s) as client:

        def facet_call(i: int, raw: bool = False) -> Awaitable[Any]:
            call = calls[i % len(calls)]
            return client.rerank(call.query, list(call.documents), truncate=True, raw_scores=raw)

        sides: dict[str, Call] = {
            "facet": facet_call,
            "infinity": lambda i: http.rerank(
                INFINITY_RERANK_NAME, calls[i % len(calls)].query, calls[i % len(calls)].documents
            ),
        }
        # parity: the same model on every side (probabilities: sigmoid of the logit; Facet's raw logits, before temperature)
        first = calls[0]
        ours = sigmoid(facet_scores(await facet_call(0, raw=True), n_docs))
        theirs = (await http.rerank(INFINITY_RERANK_NAME, first.query, first.documents, raw_scores=True)).astype(
            np.float64
        )
        theirs = sigmoid(theirs)
        predicted = sigmoid(np.asarray(predict(0), dtype=np.float64).reshape(-1))
        in_process = sigmoid(local.logits(first.query, first.documents))
        diffs = {
            "infinity": float(np.max(np.abs(ours - theirs))),
            "cross_encoder": float(np.max(np.abs(ours - predicted))),
            "in_process_onnx": float(np.max(np.abs(ours - in_process))),
        }
        worst = max(diffs.values())
        out.rows.append(
            Row(
                f"Rerank parity: max |sigmoid(logit)| difference on {n_docs} pairs",
                f"vs Infinity {diffs['infinity']:.1e}",
                f"vs CrossEncoder.predict {diffs['cross_encoder']:.1e}, vs in-process ONNX {diffs['in_process_onnx']:.1e}",
                "",
                f"<= {PARITY_MAX_PROBABILITY_DIFF:g}",
                worst <= PARITY_MAX_PROBABILITY_DIFF,
            )
        )
        for side in sides.values():
            for i in range(3):
                await side(i)
        out.raw["rerank"] = {
            "docs_per_call": n_docs,
            "calls_available": len(calls),
            "calls_dropped_too_long": len(every_call) - len(calls),
            "parity_max_diff": diffs,
            "rows": {},
        }
        sides["cross_encoder"] = lambda i: asyncio.to_thread(predict, i)
        for n in s.callers:
            # in-process predict: one caller (a process runs one predict at a time), in every row's turns
            slices: list[dict[str, Any]] = []
            before = histograms(facet)
            results = await side_by_side(sides, n, s.duration_s, s.rounds, {"cross_encoder": 1}, slices)
            batching = delta(histograms(facet), before)
            label = f"{n} caller{'s' if n > 1 else ''}"
            out.rows.append(
                ratio_row(
                    f"Rerank {n_docs} docs/call, {label}: pairs/s (p50 / p99 per call)",
                    results["facet"],
                    results["infinity"],
                    n_docs,
                    "Infinity",
                    RERANK_TARGET,
                )
            )
            out.rows.append(
                ratio_row(
                    f"Rerank {n_docs} docs/call, {label} vs in-process: pairs/s",
                    results["facet"],
                    results["cross_encoder"],
                    n_docs,
                    "CrossEncoder.predict (1 caller)",
                    CROSS_ENCODER_TARGET,
                )
            )
            out.raw["rerank"]["rows"][n] = {
                **{k: load_summary(v, n_docs) for k, v in results.items()},
                "slices": slices,
                "facet_rows_per_batch": mean_of(batching, "batch_rows_sum", "batches"),
                "facet_queue_ms": 1e3 * mean_of(batching, "queue_s_sum", "queued"),
            }
            log(f"rerank, {n} callers: {out.rows[-2].facet} vs {out.rows[-2].baseline}; {out.rows[-2].ratio}")
    await http.close()

    # single-call latency: Facet over gRPC vs the same ONNX session in this process, blocks of 10 calls in turn
    latencies: dict[str, list[float]] = {"facet": [], "local": [], "floor": []}
    with sdk.Client(rerank=facet.address, timeout_s=s.timeout_s) as sync_client:
        runs: dict[str, Callable[[RerankCall], object]] = {
            "facet": lambda c: sync_client.rerank(c.query, list(c.documents), truncate=True),
            "local": lambda c: local.logits(c.query, c.documents),
            "floor": lambda c: sync_client.get_reranker(s.reranker),  # an RPC without model work
        }
        for run in runs.values():
            for call in calls[:5]:
                run(call)
        chosen = calls[: s.latency_calls]
        for b, start in enumerate(range(0, len(chosen), 10)):
            order = ["facet", "local", "floor"]
            for name in order[b % 3 :] + order[: b % 3]:
                latencies[name] += [timed_ms(functools.partial(runs[name], c)) for c in chosen[start : start + 10]]
    out.rows.append(
        overhead_row(
            f"Rerank 1 call of {n_docs} docs, 1 caller: p50 / p99 (ms)",
            latencies["facet"],
            latencies["local"],
            "same ONNX session in-process",
            OVERHEAD_TARGET_MS,
        )
    )
    out.rows.append(
        Row(
            "GetReranker round trip, no model work: p50 / p99 (ms)",
            f"{percentile(latencies['floor'], 50):.2f} / {percentile(latencies['floor'], 99):.2f}",
            "",
            "per-call floor of gRPC + SDK + interceptors",
        )
    )
    out.raw["rerank"]["single_call_ms"] = {
        k: {"p50": percentile(v, 50), "p99": percentile(v, 99), "calls": len(v)} for k, v in latencies.items()
    }


async def measure_search(s: Settings, retrieval: BenchmarkService, out: Results) -> None:
    """`search(rerank=True, candidates=100)` top-10 p50 / p99 against a collection of real RAR-b texts,
    beside the same searches without rerank (blocks of 10 calls in turn), one caller."""
    texts = real_sentences(s.data, 300, s.seed)
    documents, queries = texts[: s.search_documents], texts[s.search_documents :][: s.search_calls]
    if len(documents) < s.search_documents or len(queries) < s.search_calls:
        raise SystemExit(
            f"bench_rerank: the data has {len(texts)} texts; search needs {s.search_documents + s.search_calls}"
        )
    candidates = min(SEARCH_CANDIDATES, s.search_documents)
    async with sdk.AsyncClient(retrieval=retrieval.address, timeout_s=s.timeout_s) as async_client:
        client: Any = async_client  # `search(rerank=..., candidates=...)` per issue 14, part 5
        await client.create_collection("bench")
        for start in range(0, len(documents), 256):
            chunk = documents[start : start + 256]
            await client.upsert("bench", [f"d{start + i}" for i in range(len(chunk))], texts=chunk)
        log(f"search: {len(documents)} documents stored; {len(queries)} searches per side")
        runs: dict[str, Callable[[str], Awaitable[object]]] = {
            "rerank": lambda q: client.search("bench", q, top_k=SEARCH_TOP_K, rerank=True, candidates=candidates),
            "plain": lambda q: client.search("bench", q, top_k=SEARCH_TOP_K),
        }
        for run in runs.values():
            await run(queries[0])
        latencies: dict[str, list[float]] = {"rerank": [], "plain": []}
        for b, start in enumerate(range(0, len(queries), 10)):
            for name in ("rerank", "plain") if b % 2 == 0 else ("plain", "rerank"):
                for query in queries[start : start + 10]:
                    began = time.perf_counter()
                    await runs[name](query)
                    latencies[name].append((time.perf_counter() - began) * 1e3)
    rerank_ms, plain_ms = latencies["rerank"], latencies["plain"]
    out.rows.append(
        Row(
            f"search(rerank=True, candidates={candidates}) top-{SEARCH_TOP_K}, {len(documents)} docs: p50 / p99 (ms)",
            f"{percentile(rerank_ms, 50):.1f} / {percentile(rerank_ms, 99):.1f}",
            f"search without rerank {percentile(plain_ms, 50):.1f} / {percentile(plain_ms, 99):.1f}",
            f"{percentile(rerank_ms, 50) - percentile(plain_ms, 50):+.1f} ms for the rerank",
        )
    )
    out.raw["search"] = {
        "documents": len(documents),
        "candidates": candidates,
        "top_k": SEARCH_TOP_K,
        **{
            f"{k}_ms": {"p50": percentile(v, 50), "p99": percentile(v, 99), "calls": len(v)}
            for k, v in latencies.items()
        },
    }


def search_rerank_available() -> bool:
    """Whether the SDK's `search` takes `rerank=` yet (the retrieve-then-rerank path of issue 14, part 5)."""
    import inspect

    return "rerank" in inspect.signature(sdk.Client.search).parameters


# -- the run ---------------------------------------------------------------------------------


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def run_benchmark(s: Settings) -> Results:
    from services.model_repository import ModelRepository
    from training.retrieval.export import packaged_minilm_dir

    out = Results()
    repository = ModelRepository(s.model_repository)
    try:
        if "embed" in s.parts:
            repository.get(s.embedding_model)
        rerank_entry = repository.get(s.reranker) if "rerank" in s.parts else None
    except LookupError as exc:
        raise SystemExit(
            f"bench_rerank: {exc}; build the models (`facet models build`), or leave that part out (--parts)"
        ) from None
    models: list[InfinityModel] = []
    if "embed" in s.parts:
        models.append(InfinityModel(s.infinity_embed_dir or packaged_minilm_dir(), INFINITY_EMBED_NAME))
    cross_encoder_dir: Path | None = None
    if rerank_entry is not None:
        from services.rerank.catalog import File

        cross_encoder_dir = rerank_entry.file(File.CROSS_ENCODER)
        models.append(InfinityModel(cross_encoder_dir, INFINITY_RERANK_NAME))
    env = {"FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(s.threads), **s.server_settings}
    services: dict[str, BenchmarkService] = {}
    infinity = (
        InfinityServer(models, engine=s.infinity_engine, batch_size=s.infinity_batch_size, venv=s.infinity_venv)
        if models
        else None
    )
    try:
        wanted = {"retrieval": bool({"embed", "search"} & set(s.parts)), "rerank": "rerank" in s.parts}
        for capability in (c for c, on in wanted.items() if on):
            services[capability] = BenchmarkService(
                capability, s.model_repository, env, label=capability, metrics_port=0
            ).spawn()  # /metrics: the batcher's rows per batch and queue time, for the report
        if infinity is not None:
            log(
                f"starting Infinity ({s.infinity_engine} engine, batch size {s.infinity_batch_size}): "
                + ", ".join(str(m.path) for m in models)
            )
            infinity.start()
            log(f"Infinity serving at {infinity.url} after {infinity.startup_seconds:.1f} s")
            out.raw["infinity"] = {
                "argv": infinity.argv,
                "startup_s": infinity.startup_seconds,
                "versions": infinity.versions(),
            }
        for service in services.values():
            service.wait_until_serving()
        log("Facet serving: " + ", ".join(f"{k} at {v.address}" for k, v in services.items()))
        if infinity is not None and "embed" in s.parts:
            asyncio.run(measure_embed(s, services["retrieval"], infinity, out))
        if infinity is not None and rerank_entry is not None and cross_encoder_dir is not None:
            asyncio.run(measure_rerank(s, services["rerank"], infinity, rerank_entry, cross_encoder_dir, out))
        if "search" in s.parts:
            asyncio.run(measure_search(s, services["retrieval"], out))
    finally:
        if infinity is not None:
            infinity.stop()
            out.raw.setdefault("infinity", {}).update(exit_code=infinity.exit_code, problems=infinity.problems)
        for service in services.values():
            service.stop()
    out.raw["servers"] = {
        label: {"stop_seconds": srv.stop_seconds, "exit_code": srv.exit_code, "problems": srv.problems}
        for label, srv in services.items()
    }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    if {"embed", "rerank"} & set(s.parts) and not (s.infinity_venv / "bin" / "infinity_emb").is_file():
        raise SystemExit(
            f"bench_rerank: no Infinity in {s.infinity_venv}; make it with `bash load/install_infinity.sh`"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = uptime()
    began = time.perf_counter()
    out = run_benchmark(s)
    wall = time.perf_counter() - began
    out.notes[:0] = [
        f"machine: {os.cpu_count()} CPUs, load generator, Facet and Infinity on the same cores; before: {load_before}; "
        f"after: {uptime()}.",
        f"Facet: ONNX Runtime intra_op={s.threads} inter_op=1, the services' default batching"
        + "".join(f", {k}={v}" for k, v in s.server_settings.items())
        + f"; calls through sdk.AsyncClient (one client, one channel). Every call's deadline {s.timeout_s:g} s.",
    ]
    if "infinity" in out.raw:
        versions = out.raw["infinity"]["versions"]
        out.notes.append(
            f"Infinity {versions.get('infinity-emb')} (torch {versions.get('torch')}, sentence-transformers "
            f"{versions.get('sentence-transformers')}, transformers {versions.get('transformers')}): "
            f"`--engine {s.infinity_engine} --batch-size {s.infinity_batch_size} --device cpu --no-vector-disk-cache`, "
            f"its other defaults; started in {out.raw['infinity']['startup_s']:.0f} s (load + its warm-up); "
            "calls over HTTP/1.1 with httpx (one keep-alive pool), the same deadline."
        )
    if {"embed", "rerank"} & set(s.parts):
        out.notes.append(
            f"each row: {s.duration_s:g} s per side in {s.rounds} alternating slices; real RAR-b texts from {s.data} "
            "(Embed: unique texts <= 300 characters; Rerank: test-split queries, each with its candidates padded "
            f"to {s.docs_per_call} documents with other rows' candidates, only calls whose every pair fits the "
            "model's max_seq_length whole, so every side runs the same tokens)."
        )
    if "search" not in s.parts and not search_rerank_available():
        out.notes.append("search(rerank=True, candidates=100) p50: not measured, the SDK's search has no `rerank` yet.")
    problems = [f"[{label}] {p}" for label, info in out.raw["servers"].items() for p in info["problems"]]
    print_results(f"Facet vs Infinity ({'quick' if s.quick else 'full'}: parts {', '.join(s.parts)}), wall time {wall:.0f} s", out, problems,
                  "Facet service problems seen in logs / exit codes")  # fmt: skip
    if "infinity" in out.raw:
        infinity_problems = out.raw["infinity"].get("problems", [])
        print(
            f"- Infinity stopped with exit code {out.raw['infinity'].get('exit_code')} after SIGTERM; warnings/errors "
            "in its log: " + ("none" if not infinity_problems else "")
        )
        for problem in infinity_problems:
            print(f"  - {problem}")
    if s.json_path is not None:
        out.write_json(s.json_path, s, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
