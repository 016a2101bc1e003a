"""Physics video datasets on disk: train/val/test shards (8:1:1) with a manifest.

    facet data simulate pendulum --videos 1000 --frames 40 --out data/pendulum
    ds = VideoDataset("data/pendulum", "train")    # frames uint8 [n, t, 64, 64], constants [n]

Each split is simulated from its own seed (derived from --seed), so the splits share no video
and a dataset is reproduced exactly by the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.nextframe.simulators import DATASETS, FRAME_DT, SIZE, simulate

MANIFEST_FILE = "manifest.json"
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclasses.dataclass(frozen=True)
class DatasetManifest:
    dataset: str
    constant: str
    units: str
    constant_range: tuple[float, float]
    frames: int
    size: int
    frame_dt: float
    seed: int
    videos: dict[str, int]  # per split
    shards: dict[str, list[str]]  # per split, relative paths

    @classmethod
    def read(cls, directory: Path) -> DatasetManifest:
        data = json.loads((directory / MANIFEST_FILE).read_text())
        data["constant_range"] = tuple(data["constant_range"])
        return cls(**data)


def split_counts(videos: int) -> dict[str, int]:
    """8:1:1, with at least one video in val and test when there are 3 or more."""
    val = max(1, round(videos * SPLITS["val"])) if videos >= 3 else 0
    test = max(1, round(videos * SPLITS["test"])) if videos >= 3 else 0
    return {"train": videos - val - test, "val": val, "test": test}


def write_dataset(
    name: str, out_dir: str | Path, *, videos: int, frames: int, seed: int = 0, shard_videos: int = 256, progress: bool = True
) -> DatasetManifest:
    from tqdm import tqdm

    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if videos < 1 or frames < 1 or shard_videos < 1:
        raise ValueError("videos, frames and shard_videos must be >= 1")
    spec = DATASETS[name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = split_counts(videos)
    shards: dict[str, list[str]] = {}
    with tqdm(total=videos, unit="video", desc=f"simulate {name}", disable=not progress) as bar:
        for index, (split, count) in enumerate(counts.items()):
            rng = np.random.default_rng([seed, index])
            (out / split).mkdir(exist_ok=True)
            shards[split] = []
            for start in range(0, count, shard_videos):
                n = min(shard_videos, count - start)
                constants = spec.random_constants(n, rng)
                result = simulate(name, constants, frames, int(rng.integers(2**31)))
                rel = f"{split}/shard-{len(shards[split]):05d}.npz"
                np.savez(out / rel, frames=result.frames, constants=result.constants)
                shards[split].append(rel)
                bar.update(n)
    manifest = DatasetManifest(
        dataset=name,
        constant=spec.constant,
        units=spec.units,
        constant_range=(spec.low, spec.high),
        frames=frames,
        size=SIZE,
        frame_dt=FRAME_DT,
        seed=seed,
        videos=counts,
        shards=shards,
    )
    (out / MANIFEST_FILE).write_text(json.dumps(dataclasses.asdict(manifest), indent=2) + "\n")
    return manifest


class VideoDataset:
    """One split of a dataset written by `write_dataset`, loaded into memory."""

    def __init__(self, directory: str | Path, split: str) -> None:
        self.directory = Path(directory)
        self.manifest = DatasetManifest.read(self.directory)
        if split not in self.manifest.shards:
            raise KeyError(f"no split {split!r}; have {list(self.manifest.shards)}")
        parts: list[Any] = [np.load(self.directory / rel) for rel in self.manifest.shards[split]]
        empty = np.zeros((0, self.manifest.frames, SIZE, SIZE), np.uint8)
        self.frames = np.concatenate([p["frames"] for p in parts]) if parts else empty
        self.constants = np.concatenate([p["constants"] for p in parts]) if parts else np.zeros(0)

    def __len__(self) -> int:
        return len(self.frames)


def main(argv: list[str] | None = None) -> int:
    """`facet data simulate`."""
    parser = argparse.ArgumentParser(prog="facet data simulate", description="Simulate a physics video dataset to disk.")
    parser.add_argument("dataset", help=f"one of {', '.join(DATASETS)}, or all")
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="directory (with `all`: one subdirectory per dataset)")
    args = parser.parse_args(argv)
    names = list(DATASETS) if args.dataset == "all" else [args.dataset]
    if any(n not in DATASETS for n in names):
        print(f"facet data simulate: unknown dataset {args.dataset!r}; available: {', '.join(DATASETS)}, all", file=sys.stderr)
        return 2
    for name in names:
        out = args.out / name if args.dataset == "all" else args.out
        m = write_dataset(name, out, videos=args.videos, frames=args.frames, seed=args.seed)
        print(f"{name}: {m.videos} videos of {m.frames} frames, {m.constant} in {list(m.constant_range)} {m.units} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
