"""Train the phenotype generator in ConfigNet's two stages on Facet's procedural faces.

Paper: Yucer et al., "Disentangling Racial Phenotypes" (§3), after ConfigNet (Kowalski et al.,
ECCV 2020, §3). Data: `training.phenotype.faces.make_faces` renders `train_faces` faces
(seed `face_seed`) and `validation_faces` others (seed `validation_seed`) once, kept in memory as
uint8; every face's factors are known.

- **Stage 1** (`stage1_steps`): the `FactorEncoder` and the `Generator` learn factors -> latent ->
  image on the rendered faces: ``l1_weight * L1 + ssim_weight * (1 - SSIM)`` (SSIM: Wang et al.,
  "Image Quality Assessment: From Error Visibility to Structural Similarity", IEEE TIP 2004, §III-B,
  an 11x11 Gaussian window of sigma 1.5, C1 = 0.01^2, C2 = 0.03^2, as the paper's §III-C) plus
  ``adversarial_weight`` times the hinge loss of a `PatchDiscriminator` (Lim & Ye, "Geometric GAN",
  2017; Miyato et al., ICLR 2018, eq. 16-17: D minimises E[relu(1 - D(x))] + E[relu(1 + D(G(z)))],
  G minimises -E[D(G(z))]). The L1 + adversarial mix is pix2pix's (Isola et al., CVPR 2017, eq. 4).
- **Stage 2** (`stage2_steps`): the `ImageEncoder` learns image -> latent with the generator and
  factor encoder frozen: ``latent_weight * MSE(E(x), FE(factors))`` (latent regression to the
  factor encoder's latent, ConfigNet §3) plus ``reconstruction_weight`` times the stage-1
  reconstruction loss of G(E(x)) against x.

Adam at constant rates (stage 1 with beta1 0.5, as DCGAN, Radford et al. 2016 §4; stage 2 with
Adam's defaults), every gradient norm clipped to `max_grad_norm`. Validation (every
`eval_every` steps and at the end of each stage, in eval mode on the validation faces): stage-1 L1
and SSIM of generated vs rendered faces (and the L1 of the training set's mean face, the baseline a
generator must beat), stage-2 latent MSE and encode -> decode reconstruction L1.

Deterministic: step i's batch (indices drawn with replacement) comes from a generator seeded with
(seed, i), and the models are initialised from `seed`; a resumed run (`resume=True` continues
from `work_dir`'s `state.pt`, written atomically at every evaluation) ends, on the CPU, with
bit-identical weights to an uninterrupted one.

Measured at 64x64 (the default `ModelConfig`), batch 16, one thread: see `TrainingConfig`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from training.device import AUTO, resolve_device
from training.options import known_fields
from training.phenotype.faces import FACTOR_NAMES, make_faces
from training.phenotype.model import FactorEncoder, Generator, ImageEncoder, ModelConfig, PatchDiscriminator
from training.resume import resumable_state

__all__ = [
    "CHECKPOINT_FILE",
    "STATE_FILE",
    "FinetuneConfig",
    "TrainResult",
    "TrainingConfig",
    "finetune_on_image",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "load_checkpoint",
    "reconstruction_loss",
    "ssim",
    "train",
]

STATE_FILE = "state.pt"  # the resumable checkpoint: weights, optimisers, step, history
CHECKPOINT_FILE = "phenotype.safetensors"  # the result: the three models' weights, configs in the metadata
EVAL_BATCH = 128  # validation faces per forward pass
SSIM_WINDOW = 11  # Wang et al. 2004 §III-C: an 11x11 circular-symmetric Gaussian window, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2  # (K1 L)^2 with K1 = 0.01 and the dynamic range L = 1
SSIM_C2 = 0.03**2  # (K2 L)^2 with K2 = 0.03
ADAM_BETAS = (0.5, 0.999)  # stage 1, adversarial: DCGAN (Radford et al. 2016, §4)
ENCODER_BETAS = (0.9, 0.999)  # stage 2, plain regression: Adam's defaults (Kingma & Ba 2015)
_ROLES = ("factor_encoder", "generator", "image_encoder")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """One training run: data, schedule, loss weights and the models' sizes.

    The defaults are the default model set's (64x64): 1,200 stage-1 and 600 stage-2 steps took
    631 s on one thread of a 2-core machine that a test suite shared (2026-11-30; an older, slower
    machine measured 0.73 CPU s per stage-1 step). The validation after it: stage-1 L1 0.028 (the
    mean face: 0.113), SSIM 0.772; encode -> decode L1 0.030, latent MSE 0.021. Faces are
    recognisable after ~200 stage-1 steps, with the right colours after ~600; at 600 stage-1 steps
    the small shapes (eye openness and size, nose width) hardly moved under an edit, at 1,200 they
    do (README, "Evaluation beside an unfactorised baseline"). Lip fullness still does not.

    Attributes:
        stage1_steps: optimiser steps of stage 1 (factor encoder + generator + discriminator).
        stage2_steps: optimiser steps of stage 2 (image encoder); >= 1, so no untrained encoder is returned.
        batch_size: faces per step.
        lr: Adam's rate for the factor encoder and generator (stage 1).
        discriminator_lr: Adam's rate for the patch discriminator.
        encoder_lr: Adam's rate for the image encoder (stage 2; at 1e-3 a 64x64 run diverged
            after 200 steps).
        max_grad_norm: every optimiser's gradient norm is clipped to this (stage 2 diverged
            without it at 64x64).
        l1_weight: weight of the mean absolute pixel error (images in [0, 1]).
        ssim_weight: weight of 1 - SSIM (Wang et al. 2004); 0 turns it off.
        adversarial_weight: weight of the generator's hinge loss; 0 trains no discriminator.
        latent_weight: stage 2, weight of the MSE between E(x) and the factor encoder's latent.
        reconstruction_weight: stage 2, weight of the reconstruction loss of G(E(x)) against x.
        train_faces: procedural faces rendered for training.
        validation_faces: other faces (another seed) for validation.
        face_seed: seed of the training faces (`faces.make_faces`).
        validation_seed: seed of the validation faces; must differ from `face_seed`.
        seed: initialisation and batch order.
        eval_every: steps between validations and resumable checkpoints.
        model: the models' sizes; `factor_count` must be `len(faces.FACTOR_NAMES)`.
    """

    stage1_steps: int = 1200
    stage2_steps: int = 600
    batch_size: int = 16
    lr: float = 5e-4
    discriminator_lr: float = 5e-4
    encoder_lr: float = 3e-4
    max_grad_norm: float = 1.0
    l1_weight: float = 1.0
    ssim_weight: float = 0.5
    adversarial_weight: float = 0.02
    latent_weight: float = 1.0
    reconstruction_weight: float = 1.0
    train_faces: int = 2000
    validation_faces: int = 256
    face_seed: int = 0
    validation_seed: int = 1
    seed: int = 0
    eval_every: int = 100
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"TrainingConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        for name in ("stage1_steps", "stage2_steps", "batch_size", "train_faces", "validation_faces", "eval_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "an integer >= 1")
        for name in ("face_seed", "validation_seed", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(name, "an integer >= 0")
        for name in ("lr", "discriminator_lr", "encoder_lr"):
            if not 0.0 < getattr(self, name) < 1.0:  # False for NaN too
                fail(name, "in (0, 1)")
        if not 0.0 < self.max_grad_norm < math.inf:
            fail("max_grad_norm", "a positive finite number")
        for name in ("l1_weight", "ssim_weight", "adversarial_weight", "latent_weight", "reconstruction_weight"):
            if not 0.0 <= getattr(self, name) < math.inf:
                fail(name, "a finite number >= 0")
        if self.l1_weight + self.ssim_weight <= 0.0:
            fail("l1_weight", "> 0 where ssim_weight is 0 (stage 1 needs a reconstruction loss)")
        if self.latent_weight + self.reconstruction_weight <= 0.0:
            fail("latent_weight", "> 0 where reconstruction_weight is 0 (stage 2 needs a loss)")
        if self.validation_seed == self.face_seed:
            fail("validation_seed", f"different from face_seed ({self.face_seed})")
        if not isinstance(self.model, ModelConfig):
            fail("model", "a ModelConfig")
        if self.model.factor_count != len(FACTOR_NAMES):
            raise ValueError(
                f"TrainingConfig.model.factor_count must be len(faces.FACTOR_NAMES) = {len(FACTOR_NAMES)}, "
                f"got {self.model.factor_count}"
            )

    @property
    def steps(self) -> int:
        """Both stages' steps."""
        return self.stage1_steps + self.stage2_steps

    def stage_of(self, step: int) -> int:
        """1 or 2: the stage global step `step` (0-based) belongs to."""
        return 1 if step < self.stage1_steps else 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        """The config of `to_dict` (or a partial dict: missing keys take their defaults).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        values = known_fields(cls, data)
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        factor_encoder, generator, image_encoder: the trained models, in eval mode, on the CPU.
        config: the run's config.
        history: one dict per evaluation: step, stage, the mean training losses since the last one,
            the validation metrics at that step, time_s.
        metrics: the final validation: ``stage1_l1`` and ``stage1_ssim`` (generated from the
            validation faces' factors vs the rendered faces), ``mean_face_l1`` (the training set's
            mean face vs the validation faces: the baseline), and ``stage2_latent_mse``
            (E(x) vs FE(factors), per latent unit) and ``stage2_reconstruction_l1`` (G(E(x)) vs x).
        time_s: wall time of the run (a resumed run counts its earlier part too).
        checkpoint: the three models' weights (safetensors; configs in the metadata, `load_checkpoint`).
    """

    factor_encoder: FactorEncoder
    generator: Generator
    image_encoder: ImageEncoder
    config: TrainingConfig
    history: list[dict[str, Any]]
    metrics: dict[str, float]
    time_s: float
    checkpoint: Path


# -- losses ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _gaussian_window(size: int, sigma: float) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()  # one window per RGB channel


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean structural similarity of each pair of images (Wang et al., IEEE TIP 2004, eq. 13 over
    an 11x11 Gaussian window of sigma 1.5, §III-C; computed per RGB channel, averaged over the
    valid window positions and the channels).

    Args:
        a, b: float32 [B, 3, S, S] in [0, 1], S >= 11.
    Returns:
        float32 [B], 1.0 for identical images.
    """
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(a.device)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=3)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_a**2 + mu_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    )
    return index.mean(dim=(1, 2, 3))


def reconstruction_loss(generated: Tensor, target: Tensor, l1_weight: float, ssim_weight: float) -> Tensor:
    """``l1_weight * mean |generated - target| + ssim_weight * mean(1 - SSIM)`` (a scalar).

    Args:
        generated, target: float32 [B, 3, S, S] in [0, 1].
    """
    loss = l1_weight * (generated - target).abs().mean()
    if ssim_weight:
        loss = loss + ssim_weight * (1.0 - ssim(generated, target)).mean()
    return loss


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))] (Lim & Ye 2017; Miyato et al. 2018, eq. 16)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))] (Miyato et al. 2018, eq. 17)."""
    return -fake_logits.mean()


# -- data -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _faces(count: int, seed: int, size: int, progress: bool) -> tuple[Tensor, Tensor]:
    """`make_faces` once per process: images uint8 [n, 3, S, S] (channels first) and factors float32 [n, F]."""
    faces = make_faces(count, seed, size, progress=progress)
    images = torch.from_numpy(np.ascontiguousarray(faces.images.transpose(0, 3, 1, 2)))
    return images, torch.from_numpy(np.asarray(faces.factors, dtype=np.float32))


def _as_float(images: Tensor, device: torch.device) -> Tensor:
    return images.to(device).to(torch.float32) / 255.0


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step) % (2**63)


def _chunks(count: int, size: int = EVAL_BATCH) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


# -- the run --------------------------------------------------------------------------------------
class _Run:
    """The state of one `train` call: faces, models, optimisers."""

    def __init__(self, config: TrainingConfig, progress: bool, device: torch.device) -> None:
        self.config, self.device = config, device
        size = config.model.image_size
        self.images, self.factors = _faces(config.train_faces, config.face_seed, size, progress)
        self.valid_images, self.valid_factors = _faces(config.validation_faces, config.validation_seed, size, progress)
        self.mean_face = self.images.to(torch.float32).mean(dim=0) / 255.0  # [3, S, S], the baseline
        torch.manual_seed(config.seed)
        m = config.model
        self.factor_encoder = FactorEncoder(m).to(device)
        self.generator = Generator(m).to(device)
        self.discriminator = PatchDiscriminator(m).to(device)
        self.image_encoder = ImageEncoder(m).to(device)
        self.g_optimizer = torch.optim.Adam(
            [*self.factor_encoder.parameters(), *self.generator.parameters()], lr=config.lr, betas=ADAM_BETAS
        )
        self.d_optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=config.discriminator_lr, betas=ADAM_BETAS
        )
        self.e_optimizer = torch.optim.Adam(self.image_encoder.parameters(), lr=config.encoder_lr, betas=ENCODER_BETAS)

    def modules(self) -> dict[str, nn.Module]:
        return {"factor_encoder": self.factor_encoder, "generator": self.generator,
                "discriminator": self.discriminator, "image_encoder": self.image_encoder}  # fmt: skip

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.g_optimizer, "d": self.d_optimizer, "e": self.e_optimizer}

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """Step `step`'s faces (float32 [B, 3, S, S] in [0, 1]) and factors [B, F]."""
        generator = torch.Generator().manual_seed(_step_seed(self.config.seed, step))
        indices = torch.randint(len(self.images), (self.config.batch_size,), generator=generator)
        return _as_float(self.images[indices], self.device), self.factors[indices].to(self.device)

    def stage1_step(self, step: int) -> dict[str, float]:
        c = self.config
        images, factors = self.batch(step)
        generated = self.generator(self.factor_encoder(factors))
        losses: dict[str, float] = {}
        if c.adversarial_weight:
            d_loss = hinge_discriminator_loss(self.discriminator(images), self.discriminator(generated.detach()))
            self.d_optimizer.zero_grad(set_to_none=True)
            d_loss.backward()
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), c.max_grad_norm)
            self.d_optimizer.step()
            losses["discriminator"] = float(d_loss.detach())
        recon = reconstruction_loss(generated, images, c.l1_weight, c.ssim_weight)
        loss = recon
        if c.adversarial_weight:
            self.discriminator.requires_grad_(False)
            adversarial = hinge_generator_loss(self.discriminator(generated))
            self.discriminator.requires_grad_(True)
            loss = loss + c.adversarial_weight * adversarial
            losses["adversarial"] = float(adversarial.detach())
        self.g_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([*self.factor_encoder.parameters(), *self.generator.parameters()], c.max_grad_norm)
        self.g_optimizer.step()
        losses.update(reconstruction=float(recon.detach()), loss=float(loss.detach()))
        return losses

    def stage2_step(self, step: int) -> dict[str, float]:
        c = self.config
        images, factors = self.batch(step)
        with torch.no_grad():
            target = self.factor_encoder(factors)
        latent = self.image_encoder(images)
        latent_loss = F.mse_loss(latent, target)
        recon = reconstruction_loss(self.generator(latent), images, c.l1_weight, c.ssim_weight)
        loss = c.latent_weight * latent_loss + c.reconstruction_weight * recon
        self.e_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.image_encoder.parameters(), c.max_grad_norm)
        self.e_optimizer.step()
        return {
            "latent": float(latent_loss.detach()),
            "reconstruction": float(recon.detach()),
            "loss": float(loss.detach()),
        }

    @torch.no_grad()
    def validate(self, stage: int) -> dict[str, float]:
        """The validation metrics (module docstring), eval mode; the modes are restored."""
        modes = {name: module.training for name, module in self.modules().items()}
        for module in self.modules().values():
            module.eval()
        l1 = ssim_sum = mean_l1 = latent_se = recon_l1 = 0.0
        n = len(self.valid_images)
        mean_face = self.mean_face.to(self.device)
        for part in _chunks(n):
            images = _as_float(self.valid_images[part], self.device)
            factors = self.valid_factors[part].to(self.device)
            target = self.factor_encoder(factors)
            generated = self.generator(target)
            l1 += float((generated - images).abs().mean(dim=(1, 2, 3)).sum())
            ssim_sum += float(ssim(generated, images).sum())
            mean_l1 += float((mean_face - images).abs().mean(dim=(1, 2, 3)).sum())
            if stage == 2:
                latent = self.image_encoder(images)
                latent_se += float((latent - target).pow(2).mean(dim=1).sum())
                recon_l1 += float((self.generator(latent) - images).abs().mean(dim=(1, 2, 3)).sum())
        for name, module in self.modules().items():
            module.train(modes[name])
        metrics = {"stage1_l1": l1 / n, "stage1_ssim": ssim_sum / n, "mean_face_l1": mean_l1 / n}
        if stage == 2:
            metrics.update(stage2_latent_mse=latent_se / n, stage2_reconstruction_l1=recon_l1 / n)
        return metrics


def _set_stage(run: _Run, stage: int) -> None:
    """Train mode and gradients for the stage's models: stage 2 freezes the generator and factor encoder."""
    trainable = {
        "factor_encoder": stage == 1,
        "generator": stage == 1,
        "discriminator": stage == 1,
        "image_encoder": stage == 2,
    }
    for name, module in run.modules().items():
        module.train(trainable[name])
        module.requires_grad_(trainable[name])


def train(config: TrainingConfig, work_dir: Path, progress: bool = True, resume: bool = True, device: str = AUTO, *,
          on_checkpoint: Callable[[Path, dict[str, Any]], None] | None = None) -> TrainResult:  # fmt: skip
    """Train the factor encoder and generator (stage 1), then the image encoder (stage 2).

    Args:
        config: the run (module docstring).
        work_dir: `state.pt` (every `eval_every` steps and at each stage's end) and the result
            (`phenotype.safetensors`).
        progress: tqdm bars (face rendering and steps).
        resume: continue from `work_dir`'s checkpoint when it holds one of this config (False:
            start over, discarding it).
        device: where the steps run (`training.device`: "auto", the default, is CUDA when torch has
            a GPU; "cpu", "cuda", "cuda:N"). Checkpoints are device-free; bit-identical resumes are
            a CPU property (CUDA kernels are not bitwise deterministic).
        on_checkpoint: called after each checkpoint with (`work_dir`, {"step", "stage", metrics..., "time_s"}).
    Returns:
        `TrainResult` with the models in eval mode on the CPU.
    Raises:
        ValueError: `work_dir` holds a checkpoint of another config and `resume` is True, or
            `device` is not one torch can use here (`resolve_device`).
    """
    torch_device = resolve_device(device)
    started = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / STATE_FILE
    state = resumable_state(state_path, config, resume, [work_dir / name for name in (CHECKPOINT_FILE,)])

    run = _Run(config, progress, torch_device)
    history: list[dict[str, Any]] = []
    step, elapsed_before = 0, 0.0
    if state is not None:
        for name, module in run.modules().items():
            module.load_state_dict(state["models"][name])
        for name, optimizer in run.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        history, step, elapsed_before = state["history"], state["step"], state["time_s"]

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - started

    def checkpoint(at: int, entry: dict[str, Any]) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save({"config": config.to_dict(), "step": at, "history": history, "time_s": elapsed(),
                    "models": {k: m.state_dict() for k, m in run.modules().items()},
                    "optimizers": {k: o.state_dict() for k, o in run.optimizers().items()}}, tmp)  # fmt: skip
        tmp.replace(state_path)
        if on_checkpoint is not None:
            on_checkpoint(work_dir, dict(entry))

    window: list[dict[str, float]] = []
    with tqdm(total=config.steps, initial=step, desc="train phenotype generator", unit="step",
              disable=not progress, leave=False) as bar:  # fmt: skip
        _set_stage(run, config.stage_of(min(step, config.steps - 1)))
        while step < config.steps:
            stage = config.stage_of(step)
            if step == config.stage1_steps:
                _set_stage(run, 2)
            torch.manual_seed(_step_seed(config.seed, step))
            window.append(run.stage1_step(step) if stage == 1 else run.stage2_step(step))
            step += 1
            bar.update(1)
            bar.set_postfix(stage=stage, **{k: f"{v:.4f}" for k, v in window[-1].items() if k != "loss"})
            if step % config.eval_every == 0 or step in (config.stage1_steps, config.steps):
                entry: dict[str, Any] = {"step": step, "stage": stage}
                for key in sorted({k for w in window for k in w}):
                    entry[key] = sum(w[key] for w in window if key in w) / sum(1 for w in window if key in w)
                entry.update(run.validate(stage))
                entry["time_s"] = elapsed()
                history.append(entry)
                window = []
                checkpoint(step, entry)

    metrics = run.validate(2)
    models = {role: getattr(run, role).to("cpu").eval() for role in _ROLES}
    for module in models.values():
        module.requires_grad_(False)
    checkpoint_path = work_dir / CHECKPOINT_FILE
    _save_models(models, checkpoint_path, config, metrics)
    return TrainResult(models["factor_encoder"], models["generator"], models["image_encoder"], config, history,
                       metrics, elapsed(), checkpoint_path)  # fmt: skip


# -- one-shot fine-tuning -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    """One-shot fine-tuning of the generator on one image (`finetune_on_image`).

    Attributes:
        steps: Adam steps on the one image.
        lr: Adam's rate (small: the generator must keep what stage 1 taught it).
        l1_weight, ssim_weight: the reconstruction loss's weights (as `TrainingConfig`).
    """

    steps: int = 50
    lr: float = 1e-4
    l1_weight: float = 1.0
    ssim_weight: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"FinetuneConfig.steps must be an integer >= 1, got {self.steps!r}")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"FinetuneConfig.lr must be in (0, 1), got {self.lr!r}")
        for name in ("l1_weight", "ssim_weight"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"FinetuneConfig.{name} must be a finite number >= 0, got {getattr(self, name)!r}")
        if self.l1_weight + self.ssim_weight <= 0.0:
            raise ValueError("FinetuneConfig.l1_weight must be > 0 where ssim_weight is 0")


def finetune_on_image(generator: Generator, image_encoder: ImageEncoder, image: Tensor,
                      config: FinetuneConfig | None = None) -> tuple[Generator, Tensor]:  # fmt: skip
    """Fine-tune a copy of the generator to reproduce one image (the one-shot step of ConfigNet,
    Kowalski et al. 2020, that Yucer et al. apply before editing real faces).

    The latent stays the image encoder's, so its slices keep their meaning and an edit (overwrite
    a slice, decode with the returned generator) still moves its attribute; only the generator's
    weights adapt to the details the encoder missed. Deterministic on the CPU (no randomness).

    Args:
        generator: the trained generator (not modified).
        image_encoder: the trained image encoder.
        image: float32 [1, 3, S, S] in [0, 1].
        config: steps, rate and loss weights (`FinetuneConfig()` by default).
    Returns:
        (the fine-tuned generator in eval mode, the image's latent float32 [1, L]), on the image's device.
    Raises:
        ValueError: `image` is not [1, 3, S, S] at the generator's size.
    """
    import copy

    config = config or FinetuneConfig()
    size = generator.config.image_size
    if tuple(image.shape) != (1, 3, size, size):
        raise ValueError(f"image must be float32 [1, 3, {size}, {size}], got {list(image.shape)}")
    with torch.no_grad():
        latent = image_encoder(image).detach()
    tuned = copy.deepcopy(generator).train().requires_grad_(True)
    optimizer = torch.optim.Adam(tuned.parameters(), lr=config.lr, betas=ADAM_BETAS)
    for _ in range(config.steps):
        loss = reconstruction_loss(tuned(latent), image, config.l1_weight, config.ssim_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return tuned.eval().requires_grad_(False), latent


# -- the result file ------------------------------------------------------------------------------
def _save_models(models: dict[str, nn.Module], path: Path, config: TrainingConfig, metrics: dict[str, float]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{role}.{k}": v.detach().contiguous() for role, m in models.items() for k, v in m.state_dict().items()}
    metadata = {"training_config": json.dumps(config.to_dict()), "metrics": json.dumps(metrics)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_checkpoint(path: Path) -> tuple[FactorEncoder, Generator, ImageEncoder, TrainingConfig]:
    """The factor encoder, generator and image encoder (eval mode, CPU) and the training config of a
    `TrainResult.checkpoint`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a phenotype checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no phenotype checkpoint at {path}")
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    if "training_config" not in metadata:
        raise ValueError(f"{path} is not a phenotype checkpoint (no training_config metadata)")
    config = TrainingConfig.from_dict(json.loads(metadata["training_config"]))
    tensors = load_file(str(path))
    models: list[nn.Module] = []
    for role, cls in zip(_ROLES, (FactorEncoder, Generator, ImageEncoder), strict=True):
        module = cls(config.model)
        prefix = f"{role}."
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        models.append(module.eval())
    factor_encoder, generator, image_encoder = models
    assert isinstance(factor_encoder, FactorEncoder) and isinstance(generator, Generator)
    assert isinstance(image_encoder, ImageEncoder)
    return factor_encoder, generator, image_encoder, config
