"""The unfactorised baseline of the phenotype evaluation: an autoencoder with InterFaceGAN-style
linear edit directions (issue #16, part 4).

Paper: Shen, Gu, Tang and Zhou, "Interpreting the Latent Space of GANs for Semantic Face Editing"
(InterFaceGAN, CVPR 2020, §2.1-2.2). They fit a linear model of an attribute over a generator's
latent codes (a linear SVM for binary labels) and edit by moving a code along the model's normal
n: z' = z + alpha n. Here the attributes are continuous, so the linear model is least squares,
a(z) ~ w.z + b. An edit to target t moves along n = w / ||w|| by exactly as much as makes the
regression predict t. InterFaceGAN's latent is the generator's isotropic prior z ~ N(0, I) (§2.1),
where the regression's normal is also the direction along which the attribute varies. An
autoencoder's latent is not isotropic, so the fit and the move are made in whitened coordinates
(z - mu) C^(-1/2), C the training latents' covariance. Mapped back, the move is along C w: the
latent's covariance with the predicted attribute, the "pattern" of the linear model (Haufe et al.,
NeuroImage 2014). z' = z + (t - w.z - b) C w / (w' C w), and then w.z' + b = t exactly. (Along w
itself the first trained baseline moved the latent by 2% of its norm, and the decoded face by 0.001
on average: the decoder barely uses the directions in which the latent varies least, and those
dominate w.) This is InterFaceGAN's single ("unconditional") direction; its conditional
manipulation (§2.2, projecting one direction off another) is not done.

The model: the same `Generator` and `ImageEncoder` as the factorised set (`training.phenotype.model`,
the same `ModelConfig`, so the latent has the same width). There is no factor encoder and no
slices: the latent is unstructured. Both are trained together as an autoencoder, image -> latent ->
image, on the factorised generator's training faces (`face_seed`, `train_faces`). The loss is the
same reconstruction loss, L1 + SSIM (`training.phenotype.train.reconstruction_loss`), with Adam and
gradient clipping; there is no adversarial term. The directions are then fitted on the training
faces' latents against their known attribute values.

`BaselineEditor` is an `training.phenotype.evaluate.Editor`, so `evaluate` measures it on the same
test faces, with the same readers, as the factorised editor:

    python -m training.phenotype.baseline --work-dir runs/baseline [--steps 900] [--faces 200] [--json out.json]
        (trains or resumes the autoencoder, fits the directions, then evaluates it with the readers
         of --readers-checkpoint, default <build work dir>/readers/readers.safetensors)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from services.phenotype.catalog import ATTRIBUTE_NAMES
from training.device import AUTO, CHOICES_HELP, resolve_device
from training.phenotype.faces import make_faces
from training.phenotype.model import Generator, ImageEncoder, ModelConfig
from training.phenotype.train import TrainingConfig, reconstruction_loss

__all__ = [
    "CHECKPOINT_FILE",
    "BaselineConfig",
    "BaselineEditor",
    "fit_directions",
    "load_baseline",
    "main",
    "train_baseline",
]

CHECKPOINT_FILE = "baseline.safetensors"
ENCODE_BATCH = 128


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The autoencoder's training. The defaults match the factorised set's
    (`training.phenotype.train.TrainingConfig`): the same faces, batch, rate, clipping and
    reconstruction loss, and as many steps as its two stages together (600 + 300).

    Attributes:
        steps: Adam steps of the autoencoder.
        batch_size: faces per step.
        lr: Adam's rate (betas 0.9, 0.999).
        max_grad_norm: the gradient norm is clipped to this.
        l1_weight, ssim_weight: the reconstruction loss's weights.
        train_faces: procedural faces rendered for training; the directions are fitted on them too.
        face_seed: their seed (the factorised generator's, 0).
        seed: initialisation and batch order.
        model: the architecture (`ModelConfig`; the factor encoder's fields are unused).
    """

    steps: int = 900
    batch_size: int = 16
    lr: float = 5e-4
    max_grad_norm: float = 1.0
    l1_weight: float = 1.0
    ssim_weight: float = 0.5
    train_faces: int = 2000
    face_seed: int = 0
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "train_faces"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BaselineConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.lr < 1.0:
            raise ValueError(f"BaselineConfig.lr must be in (0, 1), got {self.lr!r}")
        if not 0.0 < self.max_grad_norm < math.inf:
            raise ValueError(
                f"BaselineConfig.max_grad_norm must be a positive finite number, got {self.max_grad_norm!r}"
            )
        if self.l1_weight < 0 or self.ssim_weight < 0 or self.l1_weight + self.ssim_weight <= 0:
            raise ValueError("BaselineConfig.l1_weight and ssim_weight must be >= 0 and not both 0")

    @classmethod
    def matching(cls, training: TrainingConfig, **changes: Any) -> BaselineConfig:
        """The baseline of a factorised run: its faces, batch, rate, clipping, loss weights,
        architecture and both stages' steps, then `changes`."""
        values: dict[str, Any] = dict(steps=training.steps, batch_size=training.batch_size, lr=training.lr,
                                      max_grad_norm=training.max_grad_norm, l1_weight=training.l1_weight,
                                      ssim_weight=training.ssim_weight, train_faces=training.train_faces,
                                      face_seed=training.face_seed, seed=training.seed, model=training.model)  # fmt: skip
        values.update(changes)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        values = dict(data)
        if isinstance(values.get("model"), dict):
            values["model"] = ModelConfig.from_dict(values["model"])
        return cls(**values)


def fit_directions(latents: np.ndarray, attributes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares linear models of each attribute over the latents, a ~ w.z + b, and each
    model's edit direction C w / (w' C w) (C: the latents' covariance; module docstring).

    Args:
        latents: float [N, L].
        attributes: float [N, A], the known values.
    Returns:
        (weights float32 [A, L], intercepts float32 [A], directions float32 [A, L] with w_a . d_a = 1).
    Raises:
        ValueError: mismatched rows, or fewer rows than L + 1.
    """
    n, width = latents.shape
    if attributes.shape[0] != n or n < width + 1:
        raise ValueError(
            f"need [N, L] latents and [N, A] attributes with N > L, got {latents.shape}, {attributes.shape}"
        )
    design = np.concatenate([np.asarray(latents, np.float64), np.ones((n, 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, np.asarray(attributes, np.float64), rcond=None)
    weights = solution[:-1].T  # [A, L]
    pattern = weights @ np.cov(np.asarray(latents, np.float64), rowvar=False)  # C w per attribute (C symmetric)
    directions = pattern / (pattern * weights).sum(axis=1, keepdims=True)
    return weights.astype(np.float32), solution[-1].astype(np.float32), directions.astype(np.float32)


@dataclasses.dataclass
class BaselineEditor:
    """An autoencoder with one linear direction per attribute (module docstring).

    Attributes:
        generator, image_encoder: the trained autoencoder.
        weights: float32 [A, L]; intercepts: float32 [A]; directions: float32 [A, L] (`fit_directions`).
    """

    generator: Generator
    image_encoder: ImageEncoder
    weights: Tensor
    intercepts: Tensor
    directions: Tensor
    name: str = "unfactorised baseline (autoencoder + InterFaceGAN-style linear directions)"

    @property
    def image_size(self) -> int:
        return int(self.generator.config.image_size)

    def encode(self, images: Tensor) -> Tensor:
        return self.image_encoder(images)

    def decode(self, latent: Tensor) -> Tensor:
        return self.generator(latent)

    def predict(self, latent: Tensor) -> Tensor:
        """The linear models' attributes of latents [B, L] -> [B, A]."""
        w, b = self.weights.to(latent.device), self.intercepts.to(latent.device)
        return latent @ w.T + b

    def set_attribute(self, latent: Tensor, attribute: str, value: float) -> Tensor:
        a = ATTRIBUTE_NAMES.index(attribute)
        direction = self.directions[a].to(latent.device)
        return latent + (value - self.predict(latent)[:, a])[:, None] * direction[None, :]

    def generate(self, factors: Tensor) -> Tensor | None:
        return None  # no factor encoder


def _encode_all(encoder: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    out = []
    with torch.no_grad():
        for start in range(0, len(images), ENCODE_BATCH):
            chunk = torch.from_numpy(images[start : start + ENCODE_BATCH].transpose(0, 3, 1, 2).copy())
            out.append(encoder(chunk.to(device, torch.float32) / 255.0).cpu().numpy())
    return np.concatenate(out)


def train_baseline(config: BaselineConfig, work_dir: Path, progress: bool = True, device: str = AUTO) -> BaselineEditor:
    """Train the autoencoder, fit the directions, save `CHECKPOINT_FILE` in `work_dir`.

    A `work_dir` that already holds a checkpoint of this config is loaded instead of trained again.

    Returns:
        the editor, in eval mode on the CPU.
    Raises:
        ValueError: a device torch cannot use here.
    """
    work_dir = Path(work_dir)
    path = work_dir / CHECKPOINT_FILE
    if path.is_file():
        editor, saved = load_baseline(path)
        if saved == config:
            return editor
    torch_device = resolve_device(device)
    started = time.perf_counter()
    faces = make_faces(config.train_faces, seed=config.face_seed, size=config.model.image_size, progress=progress)
    torch.manual_seed(config.seed)
    generator, encoder = Generator(config.model).to(torch_device), ImageEncoder(config.model).to(torch_device)
    parameters = [*generator.parameters(), *encoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    images = torch.from_numpy(faces.images.transpose(0, 3, 1, 2).copy())
    generator.train()
    encoder.train()
    losses: list[float] = []
    for step in tqdm(range(config.steps), desc="train baseline autoencoder", disable=not progress, leave=False):
        rows = np.random.default_rng([config.seed, step]).integers(0, config.train_faces, config.batch_size)
        batch = images[rows].to(torch_device, torch.float32) / 255.0
        loss = reconstruction_loss(generator(encoder(batch)), batch, config.l1_weight, config.ssim_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        losses.append(loss.item())
    generator.to("cpu").eval().requires_grad_(False)
    encoder.to("cpu").eval().requires_grad_(False)
    latents = _encode_all(encoder, faces.images, torch.device("cpu"))
    weights, intercepts, directions = fit_directions(latents, faces.factors[:, : len(ATTRIBUTE_NAMES)])
    editor = BaselineEditor(
        generator, encoder, torch.from_numpy(weights), torch.from_numpy(intercepts), torch.from_numpy(directions)
    )
    fit = np.abs(latents @ weights.T + intercepts - faces.factors[:, : len(ATTRIBUTE_NAMES)]).mean(axis=0)
    metrics = {"final_loss": float(np.mean(losses[-50:])), "time_s": time.perf_counter() - started,
               "direction_fit_mae": dict(zip(ATTRIBUTE_NAMES, fit.round(4).tolist(), strict=True))}  # fmt: skip
    _save(editor, config, metrics, path)
    return editor


def _save(editor: BaselineEditor, config: BaselineConfig, metrics: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"generator.{k}": v.contiguous() for k, v in editor.generator.state_dict().items()}
    tensors.update({f"image_encoder.{k}": v.contiguous() for k, v in editor.image_encoder.state_dict().items()})
    tensors.update({k: getattr(editor, k).contiguous() for k in ("weights", "intercepts", "directions")})
    tmp = path.with_suffix(".tmp")
    save_file(
        tensors, str(tmp), metadata={"baseline_config": json.dumps(config.to_dict()), "metrics": json.dumps(metrics)}
    )
    tmp.replace(path)


def load_baseline(path: Path) -> tuple[BaselineEditor, BaselineConfig]:
    """The editor (eval mode, CPU) and config of a `CHECKPOINT_FILE`.

    Raises:
        FileNotFoundError: no such file. ValueError: not a baseline checkpoint.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"no baseline checkpoint at {path}")
    with safe_open(str(path), framework="pt") as fh:
        metadata = dict(fh.metadata() or {})
    if "baseline_config" not in metadata:
        raise ValueError(f"{path} is not a baseline checkpoint")
    config = BaselineConfig.from_dict(json.loads(metadata["baseline_config"]))
    tensors = load_file(str(path))
    generator, encoder = Generator(config.model), ImageEncoder(config.model)
    for prefix, module in (("generator.", generator), ("image_encoder.", encoder)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        module.eval().requires_grad_(False)
    return BaselineEditor(generator, encoder, tensors["weights"], tensors["intercepts"], tensors["directions"]), config


def main(argv: list[str] | None = None) -> int:
    """Train (or load) the baseline matching a factorised build, evaluate it, print its table.

    Returns:
        0 when evaluated; 1 when the factorised build's checkpoints are missing; 2 for bad options.
    """
    from training.phenotype.evaluate import DEFAULT_FACES, TEST_SEED, evaluate, load_set

    parser = argparse.ArgumentParser(prog="python -m training.phenotype.baseline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--build-dir", type=Path, required=True, help="the factorised build's work dir (its config and readers)"
    )
    parser.add_argument("--work-dir", type=Path, required=True, help="the baseline's checkpoint goes (or is) here")
    parser.add_argument(
        "--steps", type=int, default=None, help="autoencoder steps (default: both stages' of the build)"
    )
    parser.add_argument("--faces", type=int, default=DEFAULT_FACES)
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--device", default=AUTO, help=CHOICES_HELP)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1 or args.faces < 2:
        print("--steps must be >= 1 and --faces >= 2", file=sys.stderr)
        return 2
    try:
        _, readers = load_set(work_dir=args.build_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"{exc}; build the factorised set first with `facet phenotype build --work-dir DIR`", file=sys.stderr)
        return 1
    from training.phenotype.build import GENERATOR_DIR
    from training.phenotype.train import CHECKPOINT_FILE as GENERATOR_FILE
    from training.phenotype.train import load_checkpoint

    training = load_checkpoint(args.build_dir / GENERATOR_DIR / GENERATOR_FILE)[3]
    changes = {} if args.steps is None else {"steps": args.steps}
    baseline = train_baseline(BaselineConfig.matching(training, **changes), args.work_dir, device=args.device)
    evaluation = evaluate(baseline, readers, faces=args.faces, seed=args.seed, device=args.device, progress=True)
    print(evaluation.markdown())
    if args.json is not None:
        args.json.write_text(json.dumps(evaluation.to_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
