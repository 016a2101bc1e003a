"""Overload figures per service: a burst of large calls far above what the service can do before
their deadline, against each service in the registry, one at a time (issue #13, part 4).

    python load/bench_overload.py --services all [--calls 60] [--deadline-s 5] \\
        [--repository retrieval=/path] [--repository sae=/path] [--repository nextframe=/path]

For each service: a fresh service process on its models (service defaults, /metrics on), warmed
up with one small and one large call; then `--calls` large calls sent at once, each with a
deadline of `--deadline-s` and no retries (`sdk.RetryPolicy(max_attempts=1)`); the burst ends
when every one of them has an answer. From then, one small call every `--probe-interval-s`
(deadline `--probe-deadline-s`, no retries) until one succeeds. Measured:

- share refused: RESOURCE_EXHAUSTED answers / calls sent (and DEADLINE_EXCEEDED, other errors);
- time to rejection: from sending a refused call to its RESOURCE_EXHAUSTED, p50 and p95;
- p99 latency of the admitted calls (those answered OK);
- recovery time: from the burst's last answer to the answer of the first small call that
  succeeds after it;
- peak server memory: the service process's VmRSS (/proc), sampled every 50 ms from before the
  burst until recovery, next to its value before the burst.

A service's large and small calls are its entry in `CALLS` below (one function per capability,
as each capability's calls differ); a capability in the registry without one is refused with a
message naming this file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import sdk
from load.harness import MIB, BenchmarkService, log, percentile, real_sentences, table_text
from services import registry
from services.phenotype.config import PhenotypeConfig

# DEADLINE_EXCEEDED before running: deadline admission found the call too large for its deadline
# even on an idle service (not an overload: a retry cannot help)
OUTCOMES = ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED before running", "DEADLINE_EXCEEDED", "other")
BEFORE_RUNNING = "refused before running"
NO_RETRY = sdk.RetryPolicy(max_attempts=1)
RSS_SAMPLE_S = 0.05
RECOVERY_TIMEOUT_S = 300.0

# one call with a deadline (seconds); what it returns does not matter
Call = Callable[[sdk.AsyncClient, float], Awaitable[object]]


@dataclasses.dataclass(frozen=True)
class ServiceCalls:
    """A service's calls for the burst: `large` is the i-th large call (varied inputs), `small` the
    probe; `describe` says what they are, for the report."""

    large: Callable[[int], Call]
    small: Call
    describe: str


async def retrieval_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """Embed of 8 texts of ~1,000 characters of real sentences; the probe embeds one sentence."""
    sentences = real_sentences(data)
    texts = [" ".join(sentences[i : i + 8])[:1000] for i in range(0, 8 * 64, 8)]

    def large(i: int) -> Call:
        batch = [texts[(i * 7 + j) % len(texts)] for j in range(8)]
        return lambda c, deadline_s: c.embed(batch, timeout_s=deadline_s)

    return ServiceCalls(
        large, lambda c, deadline_s: c.embed([sentences[0]], timeout_s=deadline_s), "Embed of 8 texts x 1,000 chars"
    )


async def sae_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """EncodeText of a ~2,000-character text (the default `sae.max_text_chars` is 4,096) with
    the first SAE the service lists; the probe encodes one sentence."""
    sae = (await client.list_saes())[0].id
    sentences = real_sentences(data)
    texts = [" ".join(sentences[i : i + 16])[:2000] for i in range(0, 16 * 32, 16)]

    def large(i: int) -> Call:
        text = texts[i % len(texts)]
        return lambda c, deadline_s: c.encode_text(sae, text, timeout_s=deadline_s)

    return ServiceCalls(large, lambda c, deadline_s: c.encode_text(sae, sentences[0], timeout_s=deadline_s),
                        f"EncodeText of 2,000 chars ({sae})")  # fmt: skip


async def nextframe_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """EstimateConstant of a 64-frame simulated pendulum clip (the default `nextframe.max_frames`):
    the features model on its 60 windows and the probe; the probe call predicts one frame."""
    model = next(m for m in await client.list_frame_models() if m.dataset == "pendulum")
    low, high = model.constant_range
    clips = [
        await client.simulate("pendulum", constant=low + (high - low) * k / 7, frames=64, seed=k) for k in range(8)
    ]

    def large(i: int) -> Call:
        clip = clips[i % len(clips)]
        return lambda c, deadline_s: c.estimate_constant(model.id, clip, timeout_s=deadline_s)

    first: np.ndarray = clips[0][:5]
    return ServiceCalls(large, lambda c, deadline_s: c.predict_next(model.id, first, timeout_s=deadline_s),
                        f"EstimateConstant of 64 frames ({model.id})")  # fmt: skip


async def rerank_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """Rerank of 32 real sentences (a search's hits) with the service's default reranker; the
    probe reranks one sentence."""
    sentences = real_sentences(data)
    queries = sentences[:64]
    candidates = sentences[64 : 64 + 32 * 8]

    def large(i: int) -> Call:
        query, documents = queries[i % len(queries)], [candidates[(i * 7 + j) % len(candidates)] for j in range(32)]
        return lambda c, deadline_s: c.rerank(query, documents, timeout_s=deadline_s)

    return ServiceCalls(large, lambda c, deadline_s: c.rerank(queries[0], [candidates[0]], timeout_s=deadline_s),
                        "Rerank of 32 sentences")  # fmt: skip


async def paraphrase_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """Paraphrase of a real sentence into 4 diverse paraphrases (8 beams in 4 groups, each step a
    decoder call for 8 rows, plus the similarity embeddings); the probe is one greedy paraphrase."""
    sentences = real_sentences(data)

    def large(i: int) -> Call:
        text = sentences[i % 256]
        return lambda c, deadline_s: c.paraphrase(text, n=4, strategy="diverse_beam", truncate=True, timeout_s=deadline_s)

    return ServiceCalls(large, lambda c, deadline_s: c.paraphrase(sentences[0], strategy="greedy", truncate=True, timeout_s=deadline_s),
                        "Paraphrase n=4, diverse beam")  # fmt: skip


async def phenotype_calls(client: sdk.AsyncClient, data: Path) -> ServiceCalls:
    """Interpolate of a generated face over the most values a call may ask for (the default
    `phenotype.max_interpolation_values`, 16: a generator run and a regressor run per value, after
    the image encoder), one attribute after another; the probe generates one face."""
    n_values = PhenotypeConfig().max_interpolation_values
    attributes = (await client.list_attributes()).names
    faces = [await client.generate_face(seed=seed) for seed in range(8)]
    values = [k / (n_values - 1) for k in range(n_values)] if n_values > 1 else [0.5]

    def large(i: int) -> Call:
        face, attribute = faces[i % len(faces)], attributes[i % len(attributes)]
        return lambda c, deadline_s: c.interpolate_phenotype(face, attribute, values, timeout_s=deadline_s)

    return ServiceCalls(large, lambda c, deadline_s: c.generate_face(seed=0, timeout_s=deadline_s),
                        f"Interpolate of {n_values} values")  # fmt: skip


CALLS: dict[str, Callable[[sdk.AsyncClient, Path], Awaitable[ServiceCalls]]] = {
    "retrieval": retrieval_calls,
    "sae": sae_calls,
    "nextframe": nextframe_calls,
    "rerank": rerank_calls,
    "paraphrase": paraphrase_calls,
    "phenotype": phenotype_calls,
}


@dataclasses.dataclass(frozen=True)
class OverloadSettings:
    services: tuple[str, ...]
    calls: int
    deadline_s: float
    probe_interval_s: float
    probe_deadline_s: float
    repositories: dict[str, Path]
    data: Path


@dataclasses.dataclass
class ServiceOverload:
    """One service's burst: each large call's outcome and milliseconds to its answer, the recovery
    time, and the server's memory."""

    name: str
    describe: str = ""
    ms: dict[str, list[float]] = dataclasses.field(default_factory=lambda: {o: [] for o in OUTCOMES})
    examples: dict[str, str] = dataclasses.field(default_factory=dict)
    burst_s: float = 0.0
    recovery_ms: float = float("nan")
    probes_failed: int = 0
    rss_before: int = 0
    rss_peak: int = 0

    @property
    def sent(self) -> int:
        return sum(len(v) for v in self.ms.values())

    def share(self, outcome: str) -> str:
        return f"{len(self.ms[outcome])} / {self.sent} ({100 * len(self.ms[outcome]) / max(self.sent, 1):.0f} %)"


def outcome_of(error: sdk.FacetError) -> str:
    name = error.code.name
    if name == "DEADLINE_EXCEEDED" and BEFORE_RUNNING in error.message:
        return "DEADLINE_EXCEEDED before running"
    return name if name in OUTCOMES else "other"


async def _timed(call: Call, client: sdk.AsyncClient, deadline_s: float, into: ServiceOverload) -> None:
    began = time.perf_counter()
    try:
        await call(client, deadline_s)
        outcome = "OK"
    except sdk.FacetError as exc:
        outcome = outcome_of(exc)
        into.examples.setdefault(outcome, str(exc)[:240])
    into.ms[outcome].append((time.perf_counter() - began) * 1e3)


async def _sample_rss(server: BenchmarkService, result: ServiceOverload) -> None:
    while True:
        result.rss_peak = max(result.rss_peak, server.rss_bytes())
        await asyncio.sleep(RSS_SAMPLE_S)


async def measure(name: str, s: OverloadSettings) -> ServiceOverload:
    """Start service `name`, burst it, wait for its recovery, stop it."""
    result = ServiceOverload(name)
    server = BenchmarkService(name, s.repositories[name], label=f"overload-{name}", metrics_port=0)
    try:
        server.spawn()
        await asyncio.to_thread(server.wait_until_serving)
        addresses: dict[str, Any] = {name: server.address}
        async with sdk.AsyncClient(timeout_s=120.0, retry=NO_RETRY, **addresses) as client:
            calls = await CALLS[name](client, s.data)
            result.describe = calls.describe
            await calls.small(client, 120.0)  # warm: models loaded, first-call costs paid
            await calls.large(0)(client, 120.0)
            result.rss_before = result.rss_peak = server.rss_bytes()
            sampler = asyncio.ensure_future(_sample_rss(server, result))
            log(f"{name}: {s.calls} concurrent {calls.describe}, deadline {s.deadline_s:g} s")
            began = time.perf_counter()
            try:
                await asyncio.gather(*(_timed(calls.large(i), client, s.deadline_s, result) for i in range(s.calls)))
                ended = time.perf_counter()
                result.burst_s = ended - began
                while time.perf_counter() - ended < RECOVERY_TIMEOUT_S:
                    try:
                        await calls.small(client, s.probe_deadline_s)
                        result.recovery_ms = (time.perf_counter() - ended) * 1e3
                        break
                    except sdk.FacetError:
                        result.probes_failed += 1
                        await asyncio.sleep(s.probe_interval_s)
            finally:
                sampler.cancel()
        log(
            f"{name}: burst answered in {result.burst_s:.1f} s; "
            + ", ".join(f"{o} {len(v)}" for o, v in result.ms.items())
        )
    finally:
        server.stop()
    return result


def _ms(values: Sequence[float], q: float) -> str:
    return "-" if not values else f"{percentile(values, q):.0f}"


def service_table(r: ServiceOverload) -> str:
    refused = r.ms["RESOURCE_EXHAUSTED"]
    rows = [
        ("large call", r.describe),
        ("calls sent at once", str(r.sent)),
        ("refused (RESOURCE_EXHAUSTED)", r.share("RESOURCE_EXHAUSTED")),
        ("DEADLINE_EXCEEDED: too large even when idle", r.share("DEADLINE_EXCEEDED before running")),
        ("DEADLINE_EXCEEDED: ran out of time", r.share("DEADLINE_EXCEEDED")),
        ("other errors", r.share("other")),
        ("admitted and answered OK", r.share("OK")),
        ("time to rejection p50 / p95, ms", f"{_ms(refused, 50)} / {_ms(refused, 95)}"),
        ("admitted calls' latency p50 / p99, ms", f"{_ms(r.ms['OK'], 50)} / {_ms(r.ms['OK'], 99)}"),
        ("burst answered in, s", f"{r.burst_s:.1f}"),
        (
            "recovery: first OK small call after the burst, ms",
            "-" if r.recovery_ms != r.recovery_ms else f"{r.recovery_ms:.0f}",
        ),
        ("small calls failed before it", str(r.probes_failed)),
        ("server RSS before / peak, MiB", f"{r.rss_before / MIB:.0f} / {r.rss_peak / MIB:.0f}"),
    ]
    return table_text(("measure", r.name), rows)


def check_services(names: Sequence[str]) -> None:
    """Raise SystemExit for a name not in the registry or without calls in `CALLS`."""
    for name in names:
        if name not in registry.BY_NAME:
            raise SystemExit(f"bench_overload: unknown service {name!r}; available: {', '.join(registry.names())}")
        if name not in CALLS:
            raise SystemExit(f"bench_overload: no overload calls for {name!r}: add its entry to CALLS in {__file__}")


def run(s: OverloadSettings) -> list[ServiceOverload]:
    check_services(s.services)
    load_before = os.getloadavg()[0]
    results = [asyncio.run(measure(name, s)) for name in s.services]
    print()
    print(
        f"Facet overload per service: {s.calls} large calls at once, deadline {s.deadline_s:g} s, no retries; "
        f"then one small call every {s.probe_interval_s:g} s (deadline {s.probe_deadline_s:g} s) until one succeeds."
    )
    for r in results:
        print()
        print(service_table(r))
        for outcome, example in r.examples.items():
            print(f"- {r.name}, {outcome}: {example}")
    print()
    print(
        f"- {os.cpu_count()} CPUs, client on the same machine, service defaults (ONNX Runtime backend); "
        f"1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end."
    )
    return results
