"""The physical-constant probe, with the paper's protocol: freeze a next-frame model, and fit
one linear layer on its concatenated intermediate activations to predict each video's constant
(targets normalised by their standard deviation, SmoothL1). The same probe on a frozen,
randomly initialised model of the same architecture is the control; the ratio of their test
losses (random / pretrained) is what the paper reports (1.28× to 6.24×). The reference is a
model of the same architecture trained end to end from scratch to predict the constant (the
same features and linear head, every weight trained): what supervision reaches.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from training.nextframe.datasets import VideoDataset
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-3
    windows_per_video: int = 4  # feature = mean over evenly spaced context windows of the clip
    seed: int = 0


@torch.no_grad()
def video_features(model: FrameUNet, frames: np.ndarray, windows_per_video: int, batch: int = 32) -> torch.Tensor:
    """[n, features]: probe features averaged over evenly spaced CONTEXT windows of each video."""
    model.eval()
    n, t = frames.shape[:2]
    starts = np.unique(np.linspace(0, t - CONTEXT, windows_per_video).round().astype(int))
    out = []
    for lo in range(0, n, batch):
        clip = to_unit(torch.from_numpy(np.array(frames[lo : lo + batch])))  # a copy: frames may be read-only
        feats = [model.probe_features(clip[:, s : s + CONTEXT]) for s in starts]
        out.append(torch.stack(feats).mean(0))
    return torch.cat(out)


@dataclasses.dataclass
class LinearProbe:
    """One linear layer on standardised features, predicting the standardised constant."""

    layer: torch.nn.Linear
    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    target_mean: float
    target_std: float

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Constants in their own units."""
        with torch.no_grad():
            z = self.layer((features - self.feature_mean) / self.feature_std).squeeze(1)
        return z * self.target_std + self.target_mean

    def loss(self, features: torch.Tensor, constants: torch.Tensor) -> float:
        """SmoothL1 on targets normalised by the training standard deviation (the paper's metric)."""
        z = (self.predict(features) - self.target_mean) / self.target_std
        target = (constants - self.target_mean) / self.target_std
        return float(torch.nn.functional.smooth_l1_loss(z, target))


def fit_probe(features: torch.Tensor, constants: torch.Tensor, config: ProbeConfig) -> LinearProbe:
    torch.manual_seed(config.seed)
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    x = (features - mean) / std
    t_mean, t_std = float(constants.mean()), float(constants.std().clamp(min=1e-6))
    y = (constants - t_mean) / t_std
    layer = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for _ in range(config.steps):
        loss = torch.nn.functional.smooth_l1_loss(layer(x).squeeze(1), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return LinearProbe(layer.eval(), mean, std, t_mean, t_std)


@dataclasses.dataclass
class FeatureDistribution:
    """Where the training videos' probe features lie, to tell how unlike them a new video is.

    The score of a video is its Mahalanobis distance from the training videos' mean feature,
    divided by the square root of the feature count D (an RMS per feature, so that scores of
    models of different widths are alike; videos like the training ones score below 1), under
    the covariance C + αI: C is the training
    features' covariance (after standardising each feature by its training std, as the probe
    does) and α = `shrinkage` = 1 stands in for the directions the few training videos do not
    span (4,000+ features, a few hundred videos). With C's top `components` eigenpairs (V, λ):

        z = (f − mean) / std − centre,   p = Vᵀz,   score = √((Σ pᵢ²/(λᵢ + α) + (‖z‖² − ‖p‖²)/α) / D)

    Attributes:
        centre: float [D], the standardised features' mean.
        components: float [D, k], the top eigenvectors V of their covariance.
        variances: float [k], the eigenvalues λ (standardised units²).
        shrinkage: α.
    """

    centre: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    shrinkage: float = 1.0

    def score(self, standardised: torch.Tensor) -> torch.Tensor:
        """Per video, the score above. standardised float [n, D] (features minus the probe's
        feature mean, over its feature std) -> float [n], dimensionless."""
        z = standardised - self.centre
        p = z @ self.components
        residual = (z * z).sum(1) - (p * p).sum(1)
        d2 = (p * p / (self.variances + self.shrinkage)).sum(1) + residual.clamp(min=0) / self.shrinkage
        return torch.sqrt(d2 / z.shape[1])


def fit_feature_distribution(standardised: torch.Tensor, components: int = 64, shrinkage: float = 1.0) -> FeatureDistribution:
    """Fit `FeatureDistribution` on the training videos' features.

    Args:
        standardised: float [n, D], n >= 2: the training videos' probe features, standardised
            by the probe's feature mean and std.
        components: k, the most eigenpairs kept (at most n − 1 exist).
        shrinkage: α, added to every variance (standardised units²).
    Returns:
        The distribution, whose `score` is dimensionless.
    """
    centre = standardised.mean(0)
    _, s, vt = torch.linalg.svd(standardised - centre, full_matrices=False)
    k = max(1, min(components, len(standardised) - 1, len(s)))
    return FeatureDistribution(centre, vt[:k].T.contiguous(), s[:k] ** 2 / max(len(standardised) - 1, 1), shrinkage)


@dataclasses.dataclass(frozen=True)
class FittedProbe:
    """A probe with the feature distribution of the videos it was fitted on: what the probe
    model in the repository computes (the constant and the out-of-distribution score)."""

    probe: LinearProbe
    distribution: FeatureDistribution

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features float [n, D] -> (constants [n] in the constant's units, scores [n])."""
        with torch.no_grad():
            standardised = (features - self.probe.feature_mean) / self.probe.feature_std
            return self.probe.predict(features), self.distribution.score(standardised)

    def save(self, path: Path) -> None:
        """Write the probe and the distribution as PyTorch tensors (read back by `load`)."""
        p, d = self.probe, self.distribution
        torch.save({"weight": p.layer.weight.detach(), "bias": p.layer.bias.detach(), "feature_mean": p.feature_mean,
                    "feature_std": p.feature_std, "target_mean": p.target_mean, "target_std": p.target_std,
                    "centre": d.centre, "components": d.components, "variances": d.variances, "shrinkage": d.shrinkage}, path)  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> FittedProbe:
        """Read what `save` wrote."""
        s = torch.load(path, weights_only=True)
        layer = torch.nn.Linear(s["weight"].shape[1], 1)
        with torch.no_grad():
            layer.weight.copy_(s["weight"])
            layer.bias.copy_(s["bias"])
        probe = LinearProbe(layer.eval(), s["feature_mean"], s["feature_std"], float(s["target_mean"]), float(s["target_std"]))
        return cls(probe, FeatureDistribution(s["centre"], s["components"], s["variances"], float(s["shrinkage"])))


def fit_probe_with_distribution(features: torch.Tensor, constants: torch.Tensor, config: ProbeConfig) -> FittedProbe:
    """`fit_probe` and `fit_feature_distribution` on the same training videos' features [n, D]."""
    probe = fit_probe(features, constants, config)
    return FittedProbe(probe, fit_feature_distribution((features - probe.feature_mean) / probe.feature_std))


@dataclasses.dataclass(frozen=True)
class EndToEndConfig:
    steps: int = 400
    batch: int = 32  # windows, each of a random train video
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0


def end_to_end_loss(
    config: FrameModelConfig,
    train: VideoDataset,
    test: VideoDataset,
    windows_per_video: int,
    training: EndToEndConfig,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> float:
    """The reference: a fresh model of the same architecture, its probe features and one linear
    layer trained together on the constant (SmoothL1 on normalised targets, random CONTEXT
    windows); its test loss with the probe's protocol (features averaged over windows). Trained
    on `device`, scored on the CPU."""
    from tqdm import tqdm

    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    model = FrameUNet(config)
    with torch.no_grad():
        width = model.probe_features(torch.zeros(1, config.context, 64, 64)).shape[1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 1))
    model, head = model.to(device), head.to(device)
    constants = torch.from_numpy(train.constants).float()
    t_mean, t_std = float(constants.mean()), float(constants.std().clamp(min=1e-6))
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=training.lr, weight_decay=training.weight_decay)
    n, t = train.frames.shape[:2]
    model.train()
    for _ in tqdm(range(training.steps), unit="step", desc=f"end-to-end ({train.manifest.dataset})", disable=not progress):
        videos = rng.integers(n, size=training.batch)
        starts = rng.integers(t - CONTEXT + 1, size=training.batch)
        clip = to_unit(torch.from_numpy(np.stack([train.frames[v, s : s + CONTEXT] for v, s in zip(videos, starts, strict=True)])))
        target = (constants[videos] - t_mean) / t_std
        loss = torch.nn.functional.smooth_l1_loss(head(model.probe_features(clip.to(device))).squeeze(1), target.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model, head = model.cpu(), head.cpu()
    with torch.no_grad():
        head.eval()
        z = head(video_features(model, test.frames, windows_per_video)).squeeze(1)
    target = (torch.from_numpy(test.constants).float() - t_mean) / t_std
    return float(torch.nn.functional.smooth_l1_loss(z, target))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    pretrained_loss: float  # test SmoothL1 of the probe on the trained model
    random_loss: float  # the same on randomly initialised models of the same architecture (mean)
    ratio: float  # random / pretrained: > 1 means next-frame training put the constant in the features
    predict_mean_loss: float  # always predicting the training mean, for scale
    random_losses: tuple[float, ...] = ()  # one per random-init model


def probe_loss(model: FrameUNet, train: VideoDataset, test: VideoDataset, config: ProbeConfig) -> float:
    """Fit the probe on `train`'s features of frozen `model`; its loss on `test`."""
    f_train = video_features(model, train.frames, config.windows_per_video)
    f_test = video_features(model, test.frames, config.windows_per_video)
    probe = fit_probe(f_train, torch.from_numpy(train.constants).float(), config)
    return probe.loss(f_test, torch.from_numpy(test.constants).float())


def probe_comparison(
    pretrained: FrameUNet, random_inits: list[FrameUNet], train: VideoDataset, test: VideoDataset, config: ProbeConfig
) -> ProbeResult:
    """The probe on the pretrained model against the mean over random-init models (one random
    model's features vary a lot from seed to seed, so several are averaged)."""
    pretrained_loss = probe_loss(pretrained, train, test, config)
    random_losses = tuple(probe_loss(m, train, test, config) for m in random_inits)
    random_loss = float(np.mean(random_losses))
    c_train, c_test = torch.from_numpy(train.constants).float(), torch.from_numpy(test.constants).float()
    baseline = float(torch.nn.functional.smooth_l1_loss((c_test - c_train.mean()) / c_train.std(), torch.zeros_like(c_test)))
    return ProbeResult(pretrained_loss, random_loss, random_loss / max(pretrained_loss, 1e-12), baseline, random_losses)
