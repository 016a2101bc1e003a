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

import numpy as np
import torch

from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec
from services.nextframe.catalog import File, Kind, Prop
from services.nextframe.simulators import DATASETS
from training.device import CHOICES_HELP, resolve_device
from training.nextframe.datasets import VideoDataset, write_dataset
from training.nextframe.export import export_frame_model, export_probe
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit
from training.nextframe.probe import (
    EndToEndConfig,
    FittedProbe,
    ProbeConfig,
    end_to_end_loss,
    fit_probe_with_distribution,
    probe_comparison,
    video_features,
)
from training.nextframe.rollout_eval import plot_rollouts, score_rollouts
from training.nextframe.train import FrameTrainingConfig, evaluate, train_frame_model
from training.options import add_options, option, parse_options

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameBuildOptions:
    """What `build` simulates and trains; each field is also a flag of `python -m training.nextframe.build`."""

    datasets: tuple[str, ...] = option(tuple(DATASETS), choices=tuple(DATASETS), help="comma-separated datasets")
    videos: int = option(200, help="simulated videos per dataset (train/val/test 8:1:1)")
    frames: int = option(24, help="frames per video")
    steps: int = option(600, help="training steps of the frame model")
    batch: int = option(16)
    base_channels: int = option(12)
    depth: int = option(3)
    probe_steps: int = option(1500)
    random_inits: int = option(3, help="random-init control models (their probe losses averaged)")
    end_to_end_steps: int = option(400, help="steps of the end-to-end reference (0: skip)")
    seed: int = option(0)
    work_dir: Path | None = option(None, help="keep the simulated datasets and exports here (default: a temporary directory)")
    device: str = option("auto", help=f"where the frame model and the end-to-end reference train: {CHOICES_HELP}")
    ood_margin: float = option(3.0, help="ood_threshold = this × the 99th percentile of the held-out videos' ood_score")
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.datasets) - set(DATASETS))
        if unknown:
            raise ValueError(f"unknown datasets {unknown}; available: {', '.join(DATASETS)}")
        resolve_device(self.device)
        if not self.ood_margin > 0:
            raise ValueError(f"ood_margin must be > 0, got {self.ood_margin}")


def model_name(dataset: str) -> str:
    """The frame model of `dataset`; its probe features and probe are `features_model_name`, `probe_model_name`."""
    return f"nextframe-{dataset}"


def features_model_name(dataset: str) -> str:
    return model_name(dataset) + "-features"


def probe_model_name(dataset: str) -> str:
    return model_name(dataset) + "-probe"


def has_defaults(repository: ModelRepository) -> bool:
    """Whether every default dataset has its frame model in `repository`.

    Args:
        repository: the model repository.
    Returns:
        True when `model_name(dataset)` is there for every dataset of `FrameBuildOptions()`,
        each with a probe of the current format (out-of-distribution score and threshold).
    """
    return all(_is_current(repository, dataset) for dataset in FrameBuildOptions().datasets)


def _is_current(repository: ModelRepository, dataset: str) -> bool:
    """Whether `dataset`'s frame model is there with a probe of the current format (one that
    computes the out-of-distribution score and records its threshold); older builds are rebuilt."""
    if not repository.has(model_name(dataset)):
        return False
    probe = repository.get(model_name(dataset)).properties.get(Prop.PROBE_MODEL, "")
    return repository.has(probe) and Prop.OOD_THRESHOLD in repository.get(probe).properties


def build_defaults(repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None) -> list[ModelVersion]:
    """Build the default models of each dataset whose frame model `repository` lacks (or holds
    with a probe built before the out-of-distribution score: a new version is registered), one
    dataset at a time (`build` with the default options).

    Args:
        repository: the model repository to register into.
        work_dir: keeps the simulated datasets and the exports (e.g. `<data_dir>/nextframe-build`),
            so a dataset is simulated once.
        benchmark_data: unused: the datasets are simulated.
    Returns:
        the versions registered, three per dataset built (features, probe, frame model); [] when
        nothing was missing.
    """
    options = FrameBuildOptions(work_dir=work_dir)
    registered: list[ModelVersion] = []
    for dataset in options.datasets:
        if not _is_current(repository, dataset):  # missing, or built before the out-of-distribution score
            registered += build(repository, dataclasses.replace(options, datasets=(dataset,)))
    return registered


def build(repo: ModelRepository, options: FrameBuildOptions = FrameBuildOptions()) -> list[ModelVersion]:  # noqa: B008 - frozen
    """Simulate, train, score, probe, export and register the models of each dataset of `options`.

    Args:
        repo: the model repository to register into.
        options: what to simulate and train; `options.device` trains the frame model and the
            end-to-end reference (probes, scores and the ONNX exports with their parity checks
            run on the CPU).
    Returns:
        per dataset, the registered probe-feature model, probe and frame model, in that order.
    Raises:
        ValueError: videos too short for the model's context and the rollout horizon.
    """
    device = resolve_device(options.device)
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
        model = train_frame_model(train, config, training, progress=options.progress, device=device)
        scores = evaluate(model, val)
        random_inits = []
        for i in range(options.random_inits):
            torch.manual_seed(options.seed + 1 + i)
            random_inits.append(FrameUNet(config))
        probes = probe_comparison(model, random_inits, train, test, probe_config)
        end_to_end = None
        if options.end_to_end_steps > 0:
            reference = EndToEndConfig(steps=options.end_to_end_steps, batch=options.batch, seed=options.seed)
            end_to_end = end_to_end_loss(config, train, test, probe_config.windows_per_video, reference, progress=options.progress, device=device)
        length = test.frames.shape[1] - CONTEXT
        horizon = min(10, length)
        rollouts = score_rollouts(model, test.frames, horizon)
        train_features = video_features(model, train.frames, probe_config.windows_per_video)
        probe = fit_probe_with_distribution(train_features, torch.from_numpy(train.constants).float(), probe_config)
        ood = ood_calibration(probe, train_features, video_features(model, np.concatenate([val.frames, test.frames]), probe_config.windows_per_video), options.ood_margin)
        out = work / "export" / dataset
        out.mkdir(parents=True, exist_ok=True)
        figure = plot_rollouts(model, test.frames, length, out / f"{model_name(dataset)}-rollouts.png", every=max(1, length // 8))
        parity = export_frame_model(model, out, to_unit(torch.from_numpy(val.frames[:4, :CONTEXT])))
        features = video_features(model, val.frames[:4], probe_config.windows_per_video)
        parity.update(export_probe(probe, out / "probe.onnx", features))
        torch.save(model.state_dict(), out / "frame_model.pt")  # the PyTorch weights, for research use and benchmarks
        probe.save(out / "probe.pt")
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
        common = {Prop.DATASET: dataset, Prop.CONSTANT: spec.constant, Prop.UNITS: spec.units, Prop.LOW: spec.low, Prop.HIGH: spec.high}
        context = TensorSpec("context", "float32", (CONTEXT, 64, 64)).to_dict()
        features_spec = TensorSpec("features", "float32", (-1,)).to_dict()
        registered.append(repo.register(features_model_name(dataset), out / "features.onnx", {
            Key.KIND: Kind.FRAME_FEATURES, Key.SOURCE: name, Key.PARITY: parity, Key.INPUTS: [context],
            Key.OUTPUTS: [features_spec], Key.PROPERTIES: common}))  # fmt: skip
        registered.append(repo.register(probe_model_name(dataset), out / "probe.onnx", {
            Key.KIND: Kind.CONSTANT_PROBE, Key.SOURCE: name, Key.PARITY: parity, Key.INPUTS: [features_spec],
            Key.OUTPUTS: [TensorSpec("constant", "float32", ()).to_dict(), TensorSpec("ood_score", "float32", ()).to_dict()],
            Key.PROPERTIES: {**common, Prop.TRAINED_LOW: float(train.constants.min()), Prop.TRAINED_HIGH: float(train.constants.max()),
                             Prop.OOD_THRESHOLD: ood["threshold"], Prop.OOD_CALIBRATION: ood}},
            extra_files={File.PROBE_WEIGHTS: out / "probe.pt"}))  # fmt: skip
        registered.append(repo.register(name, out / "frame.onnx", {
            Key.KIND: Kind.FRAME_MODEL, Key.SOURCE: f"trained by training.nextframe.build on {options.videos} simulated videos",
            Key.PARITY: parity, Key.INPUTS: [context], Key.OUTPUTS: [TensorSpec("next_frame", "float32", (1, 64, 64)).to_dict()],
            Key.PROPERTIES: {**common, Prop.METRICS: metrics, Prop.FEATURES_MODEL: features_model_name(dataset),
                             Prop.PROBE_MODEL: probe_model_name(dataset), Prop.WINDOWS_PER_VIDEO: probe_config.windows_per_video,
                             Prop.ROLLOUT_CURVES: {"mse": {k: v.round(6).tolist() for k, v in rollouts.mse.items()},
                                                   "ssim": {k: v.round(4).tolist() for k, v in rollouts.ssim.items()}},
                             "model": config.to_dict(), "training": dataclasses.asdict(training), "videos": options.videos,
                             "frames": options.frames}},
            extra_files={File.WEIGHTS: out / "frame_model.pt", File.ROLLOUTS: figure}))  # fmt: skip
        log.info("%s: %s", name, metrics)
    if options.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return registered


def ood_calibration(probe: FittedProbe, train_features: torch.Tensor, held_out_features: torch.Tensor, margin: float) -> dict[str, float]:
    """The out-of-distribution threshold of a probe: `margin` × the 99th percentile of the
    ood_score of held-out videos of the training distribution (val and test; training videos
    score lower, as the distribution was fitted on them). With the default margin of 3, blank,
    white, noise and other datasets' videos tried scored 5-25x above it; unseen videos of the
    training distribution rarely do (1 of 12 with the tests' 16-video models).

    Args:
        probe: the probe with its feature distribution.
        train_features: float [n, D], the training videos' probe features.
        held_out_features: float [m, D], those of videos the probe was not fitted on (m = 0: the
            training videos' scores stand in).
        margin: > 0.
    Returns:
        {"threshold", "held_out_p50", "held_out_p99", "held_out_max", "train_p99", "held_out_videos"}.
    """
    train = probe.predict(train_features)[1].numpy().astype(np.float64)
    held_out = probe.predict(held_out_features)[1].numpy().astype(np.float64) if len(held_out_features) else train
    p99 = float(np.quantile(held_out, 0.99))
    return {"threshold": margin * p99, "held_out_p50": float(np.median(held_out)), "held_out_p99": p99,
            "held_out_max": float(held_out.max()), "train_p99": float(np.quantile(train, 0.99)), "held_out_videos": float(len(held_out))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """`facet nextframe build`: build models into the model repository and print what was registered."""
    parser = argparse.ArgumentParser(prog="facet nextframe build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    add_options(parser, FrameBuildOptions)
    options, args = parse_options(parser, FrameBuildOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.repository is None:
        from services.runtime.config import load_config

        args.repository = load_config().model_repository
    for entry in build(ModelRepository(args.repository), options):
        line = f"{entry.name} v{entry.version} ({entry.kind})"
        metrics = entry.properties.get(Prop.METRICS)
        if metrics:
            line += "  " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("probe_") or k == "next_frame_loss")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
