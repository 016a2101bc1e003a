"""Build next-frame models with their probes into the model repository, one per dataset.

    facet nextframe build [--datasets pendulum,moon_orbit] [--videos 200] [--steps 600]

Per dataset: simulate (train/val/test 8:1:1), train the frame model on next-frame prediction
only, score it (next-frame loss vs copy-last; rollout MSE/SSIM vs baselines, and a PNG of
rollouts beside the truth), fit the linear probe on the frozen model and on frozen random-init
ones (the paper's comparison), train the end-to-end reference, export the frame model, its
probe features and the probe to ONNX (parity-checked), and register them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from deploy.model_repository import ModelRepository, ModelVersion
from training.nextframe.datasets import VideoDataset, write_dataset
from training.nextframe.export import export_frame_model, export_probe
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit
from training.nextframe.probe import (
    EndToEndConfig,
    ProbeConfig,
    end_to_end_loss,
    fit_probe,
    probe_comparison,
    video_features,
)
from training.nextframe.rollout_eval import plot_rollouts, score_rollouts
from training.nextframe.simulators import DATASETS
from training.nextframe.train import FrameTrainingConfig, evaluate, train_frame_model

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameBuildOptions:
    datasets: tuple[str, ...] = tuple(DATASETS)
    videos: int = 200
    frames: int = 24
    steps: int = 600
    batch: int = 16
    base_channels: int = 12
    depth: int = 3
    probe_steps: int = 1500
    random_inits: int = 3  # random-init control models, their probe losses averaged
    end_to_end_steps: int = 400  # the reference trained end to end on the constant (0: skip)
    seed: int = 0
    work_dir: Path | None = None
    progress: bool = True


def model_name(dataset: str) -> str:
    return f"nextframe-{dataset}"


def build(repo: ModelRepository, options: FrameBuildOptions = FrameBuildOptions()) -> list[ModelVersion]:  # noqa: B008 - frozen
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="facet-nextframe-"))
    registered = []
    config = FrameModelConfig(base_channels=options.base_channels, depth=options.depth)
    probe_config = ProbeConfig(steps=options.probe_steps, seed=options.seed)
    for dataset in options.datasets:
        started = time.monotonic()
        data_dir = work / "data" / dataset
        if not (data_dir / "manifest.json").is_file():
            write_dataset(dataset, data_dir, videos=options.videos, frames=options.frames, seed=options.seed, progress=options.progress)
        train, val, test = (VideoDataset(data_dir, split) for split in ("train", "val", "test"))
        training = FrameTrainingConfig(steps=options.steps, batch=options.batch, seed=options.seed)
        model = train_frame_model(train, config, training, progress=options.progress)
        scores = evaluate(model, val)
        random_inits = []
        for i in range(options.random_inits):
            torch.manual_seed(options.seed + 1 + i)
            random_inits.append(FrameUNet(config))
        probes = probe_comparison(model, random_inits, train, test, probe_config)
        end_to_end = None
        if options.end_to_end_steps > 0:
            reference = EndToEndConfig(steps=options.end_to_end_steps, batch=options.batch, seed=options.seed)
            end_to_end = end_to_end_loss(config, train, test, probe_config.windows_per_video, reference, progress=options.progress)
        length = test.frames.shape[1] - CONTEXT
        horizon = min(10, length)
        rollouts = score_rollouts(model, test.frames, horizon)
        probe = fit_probe(video_features(model, train.frames, probe_config.windows_per_video), torch.from_numpy(train.constants).float(), probe_config)
        out = work / "export" / dataset
        out.mkdir(parents=True, exist_ok=True)
        figure = plot_rollouts(model, test.frames, length, out / f"{model_name(dataset)}-rollouts.png", every=max(1, length // 8))
        parity = export_frame_model(model, out, to_unit(torch.from_numpy(val.frames[:4, :CONTEXT])))
        features = video_features(model, val.frames[:4], probe_config.windows_per_video)
        parity["probe_max_abs_error"] = export_probe(probe, out / "probe.onnx", features)
        torch.save(model.state_dict(), out / "frame_model.pt")  # the PyTorch weights, for research use and benchmarks
        spec = DATASETS[dataset]
        metrics = {
            "next_frame_loss": scores["loss"],
            "copy_last_loss": scores["copy_last_loss"],
            "probe_loss_pretrained": probes.pretrained_loss,
            "probe_loss_random_init": probes.random_loss,
            "probe_loss_random_init_min": min(probes.random_losses),
            "probe_loss_random_init_max": max(probes.random_losses),
            "probe_ratio": probes.ratio,
            "probe_loss_predict_mean": probes.predict_mean_loss,
            **({"probe_loss_end_to_end": end_to_end} if end_to_end is not None else {}),
            **{f"rollout_mse_{k}_step{horizon}": float(v[-1]) for k, v in rollouts.mse.items()},
            **{f"rollout_ssim_{k}_step{horizon}": float(v[-1]) for k, v in rollouts.ssim.items()},
            "build_s": round(time.monotonic() - started, 1),
        }
        name = model_name(dataset)
        common = {"dataset": dataset, "constant": spec.constant, "units": spec.units, "low": spec.low, "high": spec.high}
        frame_spec = {"name": "context", "dtype": "float32", "shape": [CONTEXT, 64, 64]}
        registered.append(repo.register(name + "-features", out / "features.onnx", {
            "kind": "frame-features", "source": name, "parity": parity, "inputs": [frame_spec],
            "outputs": [{"name": "features", "dtype": "float32", "shape": [-1]}], "properties": common}))  # fmt: skip
        registered.append(repo.register(name + "-probe", out / "probe.onnx", {
            "kind": "constant-probe", "source": name, "parity": parity,
            "inputs": [{"name": "features", "dtype": "float32", "shape": [-1]}],
            "outputs": [{"name": "constant", "dtype": "float32", "shape": []}], "properties": common}))  # fmt: skip
        registered.append(repo.register(name, out / "frame.onnx", {
            "kind": "frame-model", "source": f"trained by training.nextframe.build on {options.videos} simulated videos",
            "parity": parity, "inputs": [frame_spec], "outputs": [{"name": "next_frame", "dtype": "float32", "shape": [1, 64, 64]}],
            "properties": {**common, "metrics": metrics, "features_model": name + "-features", "probe_model": name + "-probe",
                           "windows_per_video": probe_config.windows_per_video,
                           "rollout_curves": {"mse": {k: v.round(6).tolist() for k, v in rollouts.mse.items()},
                                              "ssim": {k: v.round(4).tolist() for k, v in rollouts.ssim.items()}}, "model": config.to_dict(),
                           "training": dataclasses.asdict(training), "videos": options.videos, "frames": options.frames}},
            extra_files={"weights": out / "frame_model.pt", "rollouts": figure}))  # fmt: skip
        log.info("%s: %s", name, metrics)
    if options.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return registered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.nextframe.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = FrameBuildOptions()
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    parser.add_argument("--datasets", default=",".join(d.datasets))
    parser.add_argument("--videos", type=int, default=d.videos)
    parser.add_argument("--frames", type=int, default=d.frames)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--base-channels", type=int, default=d.base_channels)
    parser.add_argument("--depth", type=int, default=d.depth)
    parser.add_argument("--probe-steps", type=int, default=d.probe_steps)
    parser.add_argument("--random-inits", type=int, default=d.random_inits, help="random-init control models (their probe losses averaged)")
    parser.add_argument("--end-to-end-steps", type=int, default=d.end_to_end_steps, help="steps of the end-to-end reference (0: skip)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.repository is None:
        from services.runtime.config import load_config

        args.repository = load_config().model_repository
    unknown = sorted(set(args.datasets.split(",")) - set(DATASETS))
    if unknown:
        parser.error(f"unknown datasets {unknown}; available: {', '.join(DATASETS)}")
    options = FrameBuildOptions(datasets=tuple(args.datasets.split(",")), videos=args.videos, frames=args.frames, steps=args.steps,
                                batch=args.batch, base_channels=args.base_channels, depth=args.depth, probe_steps=args.probe_steps,
                                random_inits=args.random_inits, end_to_end_steps=args.end_to_end_steps, seed=args.seed,
                                work_dir=args.work_dir)  # fmt: skip
    for entry in build(ModelRepository(args.repository), options):
        line = f"{entry.name} v{entry.version} ({entry.kind})"
        metrics = entry.metadata.get("properties", {}).get("metrics")
        if metrics:
            line += "  " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("probe_") or k == "next_frame_loss")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
