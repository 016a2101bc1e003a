"""Benchmark Facet's paraphrase service against the same model's PyTorch generation in-process:
one table of ratios, measured side by side in one run.

    .venv/bin/python load/bench_paraphrase.py [--model ddl-vsar-quora] [--callers 1,8] [--duration-s 20] [--quick]

Starts a real `python -m services.paraphrase` on the model repository and loads the same
paraphraser's PyTorch weights (its stored checkpoint, `training.paraphrase.export.load_pytorch_model`)
in this process. Both sides get real Quora test-split questions and the same load generator
(`load.harness.side_by_side`: N concurrent callers, each calling in a loop, the sides taking turns):

  greedy: generated tokens/s. Facet: `ParaphraseStream` (greedy), every token as decoded, through the
          SDK's AsyncClient. PyTorch: `training.paraphrase.generate.greedy` on the one question per
          call (KV cache), N calls at a time on a thread pool (what a user of the model in-process
          writes). Target Facet / PyTorch >= 1.5x (issue #15, part 7).
  beam:   the same with beam search (width 4; the reference searched with the service's scoring,
          length_penalty 1.0: the mean log-prob per token, so both sides run the same search). Facet: `Paraphrase(n=1, strategy="beam")`; its tokens are those of the
          paraphrase it returns (a beam equal to the source is skipped for the next one: the
          service's guarantee), PyTorch's those of its best beam.
  first token: p50 / p99 time to the first streamed token (one caller), beside PyTorch's time to
          its first token in-process (encoder plus one step), for information.

Read the ratios, not the absolute numbers: background load hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import os
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load.harness import (  # noqa: E402
    BenchmarkService,
    LoadResult,
    Results,
    Row,
    default_model_repository,
    load_summary,
    log,
    p50_p99_text,
    percentile,
    print_results,
    side_by_side,
)
from load.scenarios._data import quora_questions  # noqa: E402

GENERATION_TARGET = 1.5  # Facet / PyTorch generated tokens per second (issue #15, part 7)
BEAM_WIDTH = 4
# the service's beam scoring (services.paraphrase.decoding.DecodingOptions' default; not a request field)
SERVICE_LENGTH_PENALTY = 1.0
TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str
    repository: Path
    callers: tuple[int, ...]
    duration_s: float
    rounds: int
    threads: int
    questions: int
    quick: bool
    json_path: Path | None


def parse_settings(argv: Sequence[str] | None) -> Settings:
    from services.paraphrase.config import ParaphraseConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=ParaphraseConfig().model, help="the paraphraser in the repository")
    parser.add_argument(
        "--repository",
        type=Path,
        default=None,
        help="model repository (default: FACET_MODEL_REPOSITORY or the per-user default)",
    )
    parser.add_argument("--callers", default="1,8", help="concurrent callers per row, comma-separated (default 1,8)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per side and row (default 20)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per row (default 4)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 2,
        help="ONNX Runtime intra-op threads in the service, torch threads in-process",
    )
    parser.add_argument(
        "--questions", type=int, default=500, help="distinct Quora test questions the calls cycle through"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per side, callers 1 and 8, 1 round")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="write the rows and raw numbers here")
    args = parser.parse_args(argv)
    try:
        callers = tuple(int(c) for c in args.callers.split(",") if c.strip())
    except ValueError:
        parser.error(f"--callers must be comma-separated integers, got {args.callers!r}")
    if not callers or min(callers) < 1:
        parser.error("--callers needs at least one count, each >= 1")
    for name in ("duration_s", "rounds", "threads", "questions"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    return Settings(
        model=args.model,
        repository=args.repository or default_model_repository(),
        callers=(1, 8) if args.quick else callers,
        duration_s=3.0 if args.quick else args.duration_s,
        rounds=1 if args.quick else args.rounds,
        threads=args.threads,
        questions=args.questions,
        quick=args.quick,
        json_path=args.json_path,
    )


class InProcessGenerator:
    """The paraphraser's PyTorch weights in this process, decoding one question per call on a
    thread pool of `callers` threads (torch releases the GIL inside its kernels)."""

    def __init__(self, entry: Any, threads: int, callers: int) -> None:
        import torch

        from training.paraphrase.export import load_pytorch_model
        from training.paraphrase.generate import encode_sources

        torch.set_num_threads(threads)
        self.model, tokenizer = load_pytorch_model(entry)
        self.max_length = int(entry.properties["max_length"])
        self.encode = lambda text: encode_sources(tokenizer, [text], self.max_length)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=callers)

    def greedy_tokens(self, text: str) -> int:
        import torch

        from training.paraphrase.generate import greedy

        with torch.inference_mode():
            return len(greedy(self.model, self.encode(text), self.max_length)[0])

    def beam_tokens(self, text: str) -> int:
        import torch

        from training.paraphrase.generate import beam_search

        with torch.inference_mode():
            return len(beam_search(self.model, self.encode(text), BEAM_WIDTH, self.max_length, length_penalty=SERVICE_LENGTH_PENALTY)[0])

    def first_token_ms(self, text: str) -> float:
        import torch

        from training.paraphrase.generate import greedy

        start = time.perf_counter()
        with torch.inference_mode():
            greedy(self.model, self.encode(text), 1)
        return (time.perf_counter() - start) * 1e3

    async def run(self, fn: Any, text: str) -> int:
        return int(await asyncio.get_running_loop().run_in_executor(self.pool, fn, text))


def tokens_per_s(result: LoadResult, tokens: int) -> float:
    return tokens / result.seconds if result.seconds else 0.0


def generation_cell(result: LoadResult, tokens: int) -> str:
    """Tokens/s and per-call latency: "412.3 tok/s (p50 / p99 20.11 / 40.20 ms per call)", with ", N failed" when calls failed."""
    failed = f", {result.errors} failed" if result.errors else ""
    return (
        f"{tokens_per_s(result, tokens):.1f} tok/s (p50 / p99 {p50_p99_text(result.latencies_ms)} ms per call{failed})"
    )


def generation_row(measure: str, results: dict[str, LoadResult], tokens: dict[str, int]) -> Row:
    """Facet's and PyTorch's generated tokens/s, their ratio, and whether it meets the target
    (never met when a side had failed calls or none)."""
    facet, local = results["facet"], results["pytorch"]
    local_rate = tokens_per_s(local, tokens["pytorch"])
    ratio = tokens_per_s(facet, tokens["facet"]) / local_rate if local_rate else float("nan")
    met = bool(ratio >= GENERATION_TARGET) and not facet.errors and not local.errors and facet.calls > 0
    return Row(
        measure,
        generation_cell(facet, tokens["facet"]),
        "PyTorch in-process " + generation_cell(local, tokens["pytorch"]),
        f"{ratio:.2f}x",
        f">= {GENERATION_TARGET:.1f}x",
        met,
    )


async def measure(
    s: Settings, service: BenchmarkService, local: InProcessGenerator, questions: list[str], out: Results
) -> None:
    async with sdk.AsyncClient(paraphrase=service.address, timeout_s=TIMEOUT_S) as client:

        async def facet_greedy(i: int) -> int:
            count = 0
            async for _ in client.paraphrase_stream(questions[i % len(questions)], truncate=True):
                count += 1
            return count

        async def facet_beam(i: int) -> int:
            result = await client.paraphrase(
                questions[i % len(questions)], n=1, strategy="beam", beam_width=BEAM_WIDTH, truncate=True
            )
            return sum(p.tokens for p in result)

        for strategy, facet_call, local_fn in (
            ("greedy", facet_greedy, local.greedy_tokens),
            ("beam", facet_beam, local.beam_tokens),
        ):
            for callers in s.callers:
                counted = {"facet": 0, "pytorch": 0}

                def counting(side: str, call: Any, counted: dict[str, int] = counted) -> Any:
                    async def wrapped(i: int) -> None:
                        tokens = await call(i)  # not `+= await`: that reads the count before awaiting and loses updates
                        counted[side] += tokens

                    return wrapped

                log(f"{strategy}: {callers} caller(s), {s.duration_s:g} s per side")
                results = await side_by_side(
                    {
                        "facet": counting("facet", facet_call),
                        "pytorch": counting(
                            "pytorch", lambda i, fn=local_fn: local.run(fn, questions[i % len(questions)])
                        ),
                    },
                    callers,
                    s.duration_s,
                    s.rounds,
                )
                out.rows.append(
                    generation_row(f"{strategy}, {callers} caller(s): generated tokens/s", results, counted)
                )
                out.raw[f"{strategy}_{callers}"] = {
                    side: {
                        **load_summary(results[side], 1),
                        "tokens": counted[side],
                        "tokens_per_s": tokens_per_s(results[side], counted[side]),
                    }
                    for side in results
                }

        log("first streamed token: one caller")
        first_ms: list[float] = []
        for i in range(20 if s.quick else 100):
            start = time.perf_counter()
            # an async generator: closing it cancels the call
            stream = cast(
                AsyncGenerator[Any, None], client.paraphrase_stream(questions[i % len(questions)], truncate=True)
            )
            async for _ in stream:
                first_ms.append((time.perf_counter() - start) * 1e3)
                break
            await stream.aclose()
        local_ms = [local.first_token_ms(questions[i % len(questions)]) for i in range(20 if s.quick else 100)]
        out.rows.append(
            Row(
                "time to first streamed token, p50 / p99 ms",
                p50_p99_text(first_ms),
                f"PyTorch in-process first token {p50_p99_text(local_ms)}",
                f"{percentile(first_ms, 50) - percentile(local_ms, 50):+.2f} ms",
            )
        )
        out.raw["first_token_ms"] = {"facet": first_ms, "pytorch": local_ms}


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    from services.model_repository import ModelRepository

    repository = ModelRepository(s.repository)
    if not repository.has(s.model):
        raise SystemExit(
            f"bench_paraphrase: no paraphraser {s.model!r} in {s.repository}; build it with `facet paraphrase build`"
        )
    entry = repository.get(s.model)
    questions = list(quora_questions())[: s.questions]
    log(f"loading {s.model} in PyTorch ({s.threads} threads) and starting the paraphrase service")
    local = InProcessGenerator(entry, s.threads, max(s.callers))
    service = BenchmarkService(
        "paraphrase",
        s.repository,
        {"FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(s.threads), "FACET_PARAPHRASE_MODEL": s.model},
    )
    out = Results()
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    try:
        service.start()
        asyncio.run(measure(s, service, local, questions, out))
    finally:
        service.stop()
    wall = time.perf_counter() - began
    out.notes += [
        f"machine: {os.cpu_count()} CPUs shared by the load generator, the service and PyTorch; 1-minute load before {load_before:.2f}, after {os.getloadavg()[0]:.2f}.",
        f"model {s.model}: {json.dumps(entry.properties.get('architecture', {}))}; max_length {entry.properties.get('max_length')} tokens.",
        f"Facet: ONNX Runtime intra_op={s.threads}, the service's default batching (every call's decoder steps go through the dynamic batcher); "
        f"PyTorch: torch threads={s.threads}, calls on a thread pool as wide as the callers.",
        f"each row: {s.duration_s:g} s per side in {s.rounds} alternating slices; {len(questions)} Quora test-split questions.",
    ]
    print_results(f"Facet paraphrase vs PyTorch in-process ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s", out, service.problems)
    if s.json_path is not None:
        out.write_json(s.json_path, s, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
