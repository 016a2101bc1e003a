"""Benchmark Facet's phenotype service against the same models in PyTorch in-process: one table of
ratios, measured side by side in one run.

    .venv/bin/python load/bench_phenotype.py [--model configfaces-64] [--callers 1,8] [--duration-s 20] [--quick]

Starts a real `python -m services.phenotype` on the model repository and loads the same model set's
PyTorch weights (its stored checkpoint, `training.phenotype.export.load_pytorch_models`) in this
process. The in-process side runs the very edit the service runs (`services.phenotype.editing.edit`
over `TorchModelSet`: encode, slice surgery, decode, the report's regressor and identity runs), so
the two sides differ only in ONNX Runtime + gRPC + batching against PyTorch calls. Both get the
same faces (generated ones, seeds 0..15) and the same load generator (`load.harness.side_by_side`:
N concurrent callers, each calling in a loop, the sides taking turns):

  Edit: images/s and p50 / p99 of `edit_phenotype(face, {"skin_tone": v})` with the report, through
        the SDK's AsyncClient, against `editing.edit` in PyTorch on a thread pool as wide as the
        callers (what a user of the models in-process writes). With 1 caller and with N.
  Interpolate: 5 values per call, 1 caller.

Read the ratios, not the absolute numbers: background load hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `sdk`, `services`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

import sdk  # noqa: E402
from load.harness import (  # noqa: E402
    BenchmarkService,
    Results,
    default_model_repository,
    load_summary,
    log,
    print_results,
    ratio_row,
    side_by_side,
)

TARGET = 1.0  # Facet / PyTorch images per second: serving should cost nothing (information; the issue sets no number)
FACES = 16
STRIP = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
    repository: Path
    model: str
    callers: tuple[int, ...]
    duration_s: float
    rounds: int
    threads: int
    quick: bool
    json_path: Path | None


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="load/bench_phenotype.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=default_model_repository(), help="the model repository")
    parser.add_argument("--model", default="configfaces-64", help="the face generator (its companions beside it)")
    parser.add_argument("--callers", default="1,8", help="concurrent callers per Edit row, comma-separated")
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per side and row")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per row")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of ONNX Runtime and of torch")
    parser.add_argument("--quick", action="store_true", help="3 s per side, 2 slices: a smoke run")
    parser.add_argument("--json", type=Path, default=None, dest="json_path", help="also write the results here")
    a = parser.parse_args(argv)
    callers = tuple(int(c) for c in a.callers.split(","))
    if not callers or min(callers) < 1:
        parser.error("--callers must be positive integers, e.g. 1,8")
    duration, rounds = (3.0, 2) if a.quick else (a.duration_s, a.rounds)
    return Settings(a.repository, a.model, callers, duration, rounds, a.threads, a.quick, a.json_path)


class InProcessEditor:
    """The model set in PyTorch with `services.phenotype.editing` on top, run on a thread pool."""

    def __init__(self, entry: Any, threads: int, workers: int) -> None:
        import torch

        from training.phenotype.export import TorchModelSet, load_pytorch_models

        torch.set_num_threads(threads)
        self.models = TorchModelSet(load_pytorch_models(entry))
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)

    def _edit(self, image: np.ndarray, value: float) -> object:
        from services.phenotype import editing

        return asyncio.run(editing.edit(self.models, image, {"skin_tone": value}, {}))

    def _strip(self, image: np.ndarray) -> object:
        from services.phenotype import editing

        async def run() -> object:
            strip = await editing.interpolate(self.models, image, "skin_tone", STRIP)
            return await self.models.read_attributes(strip)

        return asyncio.run(run())

    async def edit(self, image: np.ndarray, value: float) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._edit, image, value)

    async def strip(self, image: np.ndarray) -> object:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._strip, image)


async def measure(s: Settings, address: str, local: InProcessEditor, out: Results) -> None:
    async with sdk.AsyncClient(phenotype=address, timeout_s=120) as client:
        faces = [await client.generate_face(seed=i, model=s.model) for i in range(FACES)]
        pixels = [np.ascontiguousarray(f.transpose(2, 0, 1), dtype=np.float32) / 255.0 for f in faces]
        values = [0.1 + 0.8 * (i % 9) / 8 for i in range(FACES)]

        async def facet_edit(i: int) -> object:
            return await client.edit_phenotype(faces[i % FACES], {"skin_tone": values[i % FACES]}, model=s.model)

        async def local_edit(i: int) -> object:
            return await local.edit(pixels[i % FACES], values[i % FACES])

        async def facet_strip(i: int) -> object:
            return await client.interpolate_phenotype(faces[i % FACES], "skin_tone", list(STRIP), model=s.model)

        async def local_strip(i: int) -> object:
            return await local.strip(pixels[i % FACES])

        for n in s.callers:
            log(f"Edit, {n} caller(s): {s.duration_s:g} s per side")
            results = await side_by_side({"facet": facet_edit, "pytorch": local_edit}, n, s.duration_s, s.rounds)
            out.rows.append(ratio_row(f"Edit with report, {n} caller(s), images/s", results["facet"], results["pytorch"], 1, "PyTorch", TARGET))
            out.raw[f"edit_{n}"] = {side: load_summary(r, 1) for side, r in results.items()}
        log(f"Interpolate ({len(STRIP)} values), 1 caller: {s.duration_s:g} s per side")
        results = await side_by_side({"facet": facet_strip, "pytorch": local_strip}, 1, s.duration_s, s.rounds)
        out.rows.append(ratio_row(f"Interpolate, {len(STRIP)} values, 1 caller, images/s", results["facet"], results["pytorch"], len(STRIP), "PyTorch", TARGET))
        out.raw["interpolate_1"] = {side: load_summary(r, len(STRIP)) for side, r in results.items()}


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    from services.model_repository import ModelRepository

    repository = ModelRepository(s.repository)
    if not repository.has(s.model):
        raise SystemExit(f"bench_phenotype: no face model {s.model!r} in {s.repository}; build it with `facet phenotype build`")
    entry = repository.get(s.model)
    log(f"loading {s.model} in PyTorch ({s.threads} threads) and starting the phenotype service")
    local = InProcessEditor(entry, s.threads, max(s.callers))
    service = BenchmarkService(
        "phenotype", s.repository, {"FACET_ONNXRUNTIME_INTRA_OP_NUM_THREADS": str(s.threads), "FACET_PHENOTYPE_MODEL": s.model}
    )
    out = Results()
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    try:
        service.start()
        asyncio.run(measure(s, service.address, local, out))
    finally:
        service.stop()
    wall = time.perf_counter() - began
    out.notes += [
        f"machine: {os.cpu_count()} CPUs shared by the load generator, the service and PyTorch; 1-minute load before {load_before:.2f}, after {os.getloadavg()[0]:.2f}.",
        f"model {s.model}: {entry.properties.get('image_size')} px, latent {entry.properties.get('latent_dim')}.",
        f"Facet: ONNX Runtime intra_op={s.threads}, the service's default batching; PyTorch: torch threads={s.threads}, "
        "the same edit code (services.phenotype.editing) on a thread pool as wide as the callers.",
        f"each row: {s.duration_s:g} s per side in {s.rounds} alternating slices; {FACES} generated faces.",
    ]
    print_results(f"Facet phenotype vs PyTorch in-process ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s", out, service.problems)
    if s.json_path is not None:
        out.write_json(s.json_path, s, wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
