"""What the retrieval benchmark's measurements get: how much work each does (`Plan`), the run's
settings, disjoint slices of the real sentences (`Workload`) and the servers' settings.

`load/bench_retrieval.py` reads the options into a `Settings`; `load/retrieval_embed.py` and
`load/retrieval_search.py` measure with it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from services.retrieval.config import RetrievalConfig
from services.runtime.config import BatchingConfig

MODEL = RetrievalConfig().embedding_model
BATCHING = BatchingConfig()  # the service's defaults, which the "batching on" server runs with
SENTENCES_PER_CALL = 32
TOP_K = 10
UPSERT_BATCH = 1024
CONCURRENT_SENTENCES = 2048  # the texts the concurrent single-sentence callers cycle through


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


@dataclasses.dataclass(frozen=True)
class Workload:
    """Disjoint slices of the real sentences, one per measurement."""

    batches: list[list[str]]
    singles: list[str]
    concurrent: list[str]
    base: list[str]
    queries: list[str]


def split_workload(texts: list[str], plan: Plan) -> Workload:
    """Cut `texts` into the slices `plan` needs. Raises SystemExit when there are too few."""
    sizes = [
        plan.throughput_batches * SENTENCES_PER_CALL,
        plan.latency_calls,
        CONCURRENT_SENTENCES,
        plan.base_sentences,
        plan.queries,
    ]
    if sum(sizes) > len(texts):
        raise SystemExit(f"need {sum(sizes)} unique sentences, the data has {len(texts)}")
    parts, start = [], 0
    for size in sizes:
        parts.append(texts[start : start + size])
        start += size
    batches = [parts[0][i : i + SENTENCES_PER_CALL] for i in range(0, len(parts[0]), SENTENCES_PER_CALL)]
    return Workload(batches, parts[1], parts[2], parts[3], parts[4])


def server_env(s: Settings, batching: bool) -> dict[str, str]:
    """The service's defaults, plus the thread count, the batching switch and any --server-env."""
    return {
        "FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(s.threads),
        **s.server_settings,
        "FACET_BATCHING_ENABLED": "1" if batching else "0",
    }
