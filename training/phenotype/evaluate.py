"""The evaluation table of a phenotype editor (issue #16, part 4), and `facet eval phenotype`.

    facet eval phenotype [--model configfaces-64] [--repository DIR] | [--work-dir DIR]
                         | [--generator-checkpoint FILE --readers-checkpoint FILE]
                         [--faces 200] [--seed 777] [--targets 0.1,0.5,0.9] [--tolerance 0.1]
                         [--device auto] [--json out.json]

The models run in PyTorch. Test faces: `faces` procedural faces drawn from `seed` (777 by default;
the generator trains on seeds 0/1, the readers on 1001/1002, the export's parity check uses 4242),
so no model saw them. For every attribute and every target value, every test face is edited exactly
as the service edits it (`services.phenotype.editing.edit`: encode the image, overwrite the
attribute's slice with the factor encoder's slice for the value, the other factors at 0.5, decode).
Each figure below is read by the readers trained apart from the generator
(`training.phenotype.readers`), as in the service's edit report:

- ``error``: mean |achieved - target|: the attribute as the regressor reads it off the edited face,
  against the target. ``within``: the share of edits with |achieved - target| <= `tolerance`.
- ``no_edit_error``: the same error for the unedited reconstruction decode(encode(x)). This is what
  an editor that does nothing scores, so a useful edit must beat it.
- ``drift``: mean |reading after the edit - reading of the unedited reconstruction| over every other
  attribute. This is the service report's `drift`, in absolute value.
- ``identity``: mean cosine of the identity embeddings of the input and the edited face (the
  service report's `identity_similarity`). ``identity_edit``: the same against the unedited
  reconstruction instead of the input, which isolates the edit's own effect from what encoding
  and decoding lose.
- ``pixel_inside`` / ``pixel_outside``: mean |edited - reconstruction| (0-1 scale) inside / outside
  the attribute's catalog region box (`services.phenotype.editing.region_mask`).
- ``frechet``: the Fréchet distance of the edited faces (one target at a time, averaged over the
  targets) against real faces rendered with the attribute at that target. The other factors of
  those real faces are drawn from `seed + 1`. A perfect editor scores the real-vs-real floor.

Overall: ``reconstruction_error`` (mean |decode(encode(x)) - x|, 0-1 scale) and
``reconstruction_identity`` (its identity cosine). The Fréchet distances of the same `seed + 1`
reference set against: real test faces (``frechet_real``, the floor: two independent real samples
of the same size); faces generated from the test faces' factors through the factor encoder and the
generator (``frechet_generated``; none for an editor without a factor encoder); and the
reconstructions (``frechet_reconstruction``).

**The Fréchet distance** (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to
a Local Nash Equilibrium", NeurIPS 2017, §"Fréchet Inception Distance"; the distance between two
Gaussians, Dowson & Landau 1982) is ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)). Here it is
taken over the attribute regressor's penultimate features: the ReLU output of its head's hidden
layer, 128-d for the default set. That network was trained here on procedural faces. **This is not
Inception-FID, and it is not comparable to the paper's numbers.** It is also a small-sample
estimate: 200 faces for 128 dimensions is biased upwards, so compare figures only at the same
`faces`.

An editor is anything with `encode`, `decode`, `set_attribute` and `generate` (`Editor`):
`FactorisedEditor` is the paper's, and `training.phenotype.baseline` holds the unfactorised
InterFaceGAN-style baseline. Both are evaluated by the same `evaluate` on the same faces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from services.phenotype.catalog import ATTRIBUTE_NAMES
from services.phenotype.editing import region_mask
from training.device import AUTO, CHOICES_HELP, resolve_device
from training.phenotype.faces import FACTOR_NAMES, render, sample_factors

__all__ = [
    "DEFAULT_FACES",
    "DEFAULT_TARGETS",
    "DEFAULT_TOLERANCE",
    "TEST_SEED",
    "AttributeRow",
    "Editor",
    "Evaluation",
    "FactorisedEditor",
    "Readers",
    "evaluate",
    "frechet_distance",
    "load_set",
    "main",
    "regressor_features",
]

TEST_SEED = 777  # a face seed no training uses (generator 0/1, readers 1001/1002, parity 4242)
DEFAULT_FACES = 200
DEFAULT_TARGETS = (0.1, 0.5, 0.9)
DEFAULT_TOLERANCE = 0.1  # on the attributes' [0, 1] scale: ~2x the default regressor's mean error (0.057)
BATCH = 100  # images per forward pass
FEATURES = "the attribute regressor's penultimate layer (ReLU of its head's hidden layer)"
PROG = "facet eval phenotype"
BUILD_HINT = "build one with `facet phenotype build` (or pass --work-dir of a build, or both checkpoints)"


class Editor(Protocol):
    """An attribute editor over a latent space. Images are float32 [B, 3, S, S] in [0, 1] on the
    editor's device; latents float32 [B, L]."""

    name: str

    @property
    def image_size(self) -> int: ...

    def encode(self, images: Tensor) -> Tensor: ...

    def decode(self, latent: Tensor) -> Tensor: ...

    def set_attribute(self, latent: Tensor, attribute: str, value: float) -> Tensor:
        """A copy of `latent` with `attribute` set to `value` (in [0, 1]) in every row."""
        ...

    def generate(self, factors: Tensor) -> Tensor | None:
        """Faces from factors [B, F] (`FACTOR_NAMES` order), or None when the editor cannot."""
        ...


@dataclasses.dataclass
class FactorisedEditor:
    """The paper's edit (Yucer et al. §3; ConfigNet, Kowalski et al. 2020 §3.3), as
    `services.phenotype.editing.edit` does it: overwrite the attribute's slice of the image
    encoder's latent with the factor encoder's slice for the value (the other factors at 0.5,
    `editing.value_slices`), then decode.

    Attributes:
        factor_encoder, generator, image_encoder: a trained set (`training.phenotype.train`).
        layout: {slice name: (start, stop)} (`ModelConfig.latent_layout()`).
    """

    factor_encoder: nn.Module
    generator: nn.Module
    image_encoder: nn.Module
    layout: Mapping[str, tuple[int, int]]
    name: str = "factorised (ConfigNet / Yucer et al.)"

    @property
    def image_size(self) -> int:
        config: Any = getattr(self.generator, "config")  # noqa: B009 - nn.Module's typing hides it
        return int(config.image_size)

    def encode(self, images: Tensor) -> Tensor:
        return self.image_encoder(images)

    def decode(self, latent: Tensor) -> Tensor:
        return self.generator(latent)

    def set_attribute(self, latent: Tensor, attribute: str, value: float) -> Tensor:
        factors = torch.full((1, len(FACTOR_NAMES)), 0.5, dtype=latent.dtype, device=latent.device)
        factors[0, FACTOR_NAMES.index(attribute)] = value
        span = slice(*self.layout[attribute])
        edited = latent.clone()
        edited[:, span] = self.factor_encoder(factors)[0, span]
        return edited

    def generate(self, factors: Tensor) -> Tensor | None:
        return self.generator(self.factor_encoder(factors))


@dataclasses.dataclass
class Readers:
    """The readers trained apart from the generator (`training.phenotype.readers`).

    Attributes:
        regressor: image -> attributes [B, 7] (`Regressor`: a `backbone` and a `head` whose last
            layer is the output; `regressor_features` takes the layer before it).
        identity: image -> L2-normalised embedding [B, D].
    """

    regressor: nn.Module
    identity: nn.Module


@dataclasses.dataclass(frozen=True)
class AttributeRow:
    """One attribute's figures (module docstring), each a mean over test faces and targets."""

    attribute: str
    error: float
    within: float
    no_edit_error: float
    drift: float
    identity: float
    identity_edit: float
    pixel_inside: float
    pixel_outside: float
    frechet: float


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One editor's table (module docstring) and the setup that produced it."""

    method: str
    rows: list[AttributeRow]
    reconstruction_error: float
    reconstruction_identity: float
    frechet_real: float
    frechet_reconstruction: float
    frechet_generated: float | None
    faces: int
    seed: int
    image_size: int
    targets: tuple[float, ...]
    tolerance: float
    features: str
    time_s: float

    def row(self, attribute: str) -> AttributeRow:
        """The row of `attribute` (KeyError for an unknown one)."""
        for row in self.rows:
            if row.attribute == attribute:
                return row
        raise KeyError(attribute)

    def mean(self, field: str) -> float:
        """The mean of one `AttributeRow` figure over the attributes."""
        return float(np.mean([getattr(r, field) for r in self.rows]))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["targets"] = list(self.targets)
        return data

    def markdown(self) -> str:
        """The table per attribute and the overall figures, as markdown."""
        t = ", ".join(f"{v:g}" for v in self.targets)
        lines = [
            f"**{self.method}**: {self.faces} test faces (seed {self.seed}) at {self.image_size} x {self.image_size}, "
            f"each edited to {t} per attribute.",
            "",
            f"| attribute | error ↓ | within ±{self.tolerance:g} ↑ | no-edit error | drift of the others ↓ | identity cosine ↑ "
            "| identity cosine vs reconstruction ↑ | pixel change inside / outside | Fréchet (edited vs real) ↓ |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(f"| {r.attribute} | {r.error:.3f} | {r.within:.1%} | {r.no_edit_error:.3f} | {r.drift:.3f} | "
                         f"{r.identity:.3f} | {r.identity_edit:.3f} | {r.pixel_inside:.3f} / {r.pixel_outside:.3f} | {r.frechet:.2f} |")  # fmt: skip
        lines.append(f"| mean | {self.mean('error'):.3f} | {self.mean('within'):.1%} | {self.mean('no_edit_error'):.3f} | "
                     f"{self.mean('drift'):.3f} | {self.mean('identity'):.3f} | {self.mean('identity_edit'):.3f} | {self.mean('pixel_inside'):.3f} / "
                     f"{self.mean('pixel_outside'):.3f} | {self.mean('frechet'):.2f} |")  # fmt: skip
        generated = "n/a (no factor encoder)" if self.frechet_generated is None else f"{self.frechet_generated:.2f}"
        lines += [
            "",
            "| overall | value |",
            "|---|---:|",
            f"| reconstruction error, mean \\|decode(encode(x)) − x\\| (0–1) | {self.reconstruction_error:.4f} |",
            f"| identity cosine, input vs reconstruction | {self.reconstruction_identity:.3f} |",
            f"| Fréchet distance, real vs real (the floor) | {self.frechet_real:.2f} |",
            f"| Fréchet distance, real vs generated from the test faces' factors | {generated} |",
            f"| Fréchet distance, real vs reconstructions | {self.frechet_reconstruction:.2f} |",
            "",
            f"Fréchet distances over {FEATURES}, trained here on procedural faces: not Inception-FID, not comparable "
            "to the paper's numbers.",
        ]
        return "\n".join(lines)


# -- the Fréchet distance -------------------------------------------------------------------------
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017;
    Dowson & Landau 1982): ||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 sqrtm(C_a C_b)).

    `scipy.linalg.sqrtm` takes the matrix square root. When the product is singular (fewer
    samples than feature dimensions, or dead features), both
    covariances get 1e-6 on the diagonal first, and the imaginary part left by numerical error is
    dropped; pytorch-fid's `calculate_frechet_distance` does the same.

    Args:
        a, b: features float [N_a, D] and [N_b, D] (N >= 2).
    Returns:
        the distance (>= 0, in squared feature units).
    Raises:
        ValueError: not two 2-D arrays of the same width with at least 2 rows each.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two feature arrays [N >= 2, D] of the same D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if caught or not np.isfinite(root).all():
        offset = np.eye(len(cov_a)) * 1e-6
        root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = np.real(root)
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))
    return max(distance, 0.0)


def regressor_features(regressor: nn.Module, images: Tensor) -> Tensor:
    """The regressor's penultimate features: its head without the last (output) layer.

    Args:
        regressor: a `training.phenotype.readers.Regressor` (`backbone`, `head` a Sequential).
        images: float32 [B, 3, S, S] in [0, 1].
    Returns:
        float32 [B, hidden].
    """
    head, backbone = regressor.head, regressor.backbone
    assert isinstance(head, nn.Sequential) and isinstance(backbone, nn.Module)
    hidden = typing.cast(nn.Module, head[:-1])
    return typing.cast(Tensor, hidden(backbone(images)))


# -- the evaluation -------------------------------------------------------------------------------
def _floats(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 [N, S, S, 3] -> float32 [N, 3, S, S] in [0, 1] on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device, torch.float32) / 255.0


def _batches(count: int, size: int = BATCH) -> Iterator[slice]:
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def _map(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """`fn` over `x` in batches of `BATCH`, concatenated."""
    return torch.cat([fn(x[s]) for s in _batches(len(x))])


@torch.no_grad()
def evaluate(
    editor: Editor,
    readers: Readers,
    *,
    faces: int = DEFAULT_FACES,
    seed: int = TEST_SEED,
    targets: Sequence[float] = DEFAULT_TARGETS,
    tolerance: float = DEFAULT_TOLERANCE,
    device: str = "cpu",
    progress: bool = False,
) -> Evaluation:
    """The table of one editor (module docstring) on `faces` procedural test faces from `seed`.

    Args:
        editor: an `Editor` whose modules are in eval mode (they are moved to `device`).
        readers: the regressor and identity embedding (moved to `device`).
        faces: test faces (>= 2); the reference set of real faces has as many.
        seed: the test faces' seed; the reference faces use seed + 1.
        targets: the values each attribute is edited to, each in [0, 1].
        tolerance: |achieved - target| that counts as within.
        device: "auto", "cpu", "cuda" or "cuda:N" (`training.device`).
        progress: print one line per attribute to stderr.
    Returns:
        `Evaluation`.
    Raises:
        ValueError: bad faces, targets or tolerance, or a device torch cannot use here.
    """
    if faces < 2:
        raise ValueError(f"faces must be >= 2 (the Fréchet distance needs a covariance), got {faces}")
    if not targets or any(not 0.0 <= t <= 1.0 for t in targets):
        raise ValueError(f"targets must be values in [0, 1], got {list(targets)}")
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    started = time.perf_counter()
    torch_device = resolve_device(device)
    for module in (*_modules(editor), readers.regressor, readers.identity):
        module.to(torch_device).eval()
    size = editor.image_size
    test_factors = sample_factors(faces, seed)
    reference_factors = sample_factors(faces, seed + 1)
    images = _floats(render(test_factors, size), torch_device)

    def read(x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(attributes [N, 7], identity embeddings [N, D], Fréchet features [N, H]) as numpy."""
        attributes = _map(readers.regressor, x).cpu().numpy()
        embeddings = _map(readers.identity, x).cpu().numpy()
        features = _map(lambda b: regressor_features(readers.regressor, b), x).cpu().numpy()
        return attributes, embeddings, features

    def real_features(factors: np.ndarray) -> np.ndarray:
        return read(_floats(render(factors, size), torch_device))[2]

    latent = _map(editor.encode, images)
    reconstruction = _map(editor.decode, latent)
    _, input_embeddings, test_features = read(images)
    recon_readings, recon_embeddings, recon_features = read(reconstruction)
    reference_features = real_features(reference_factors)
    factors = torch.from_numpy(test_factors).to(torch_device)
    pieces = [editor.generate(factors[s]) for s in _batches(faces)]
    frechet_generated = None
    if all(p is not None for p in pieces):
        frechet_generated = frechet_distance(
            reference_features, read(torch.cat([p for p in pieces if p is not None]))[2]
        )

    rows: list[AttributeRow] = []
    for a, attribute in enumerate(ATTRIBUTE_NAMES):
        mask = torch.from_numpy(region_mask([attribute], size)).to(torch_device)
        others = [j for j in range(len(ATTRIBUTE_NAMES)) if j != a]
        errors, no_edit, drifts, identities, kept, inside, outside, frechets = [], [], [], [], [], [], [], []
        for target in targets:
            edited = _map(editor.decode, editor.set_attribute(latent, attribute, float(target)))
            readings, embeddings, features = read(edited)
            errors.append(np.abs(readings[:, a] - target))
            no_edit.append(np.abs(recon_readings[:, a] - target))
            drifts.append(np.abs(readings[:, others] - recon_readings[:, others]).mean(axis=1))
            identities.append((embeddings * input_embeddings).sum(axis=1))
            kept.append((embeddings * recon_embeddings).sum(axis=1))
            change = (edited - reconstruction).abs()
            inside.append(float(change[:, :, mask].mean()))
            outside.append(float(change[:, :, ~mask].mean()))
            real = reference_factors.copy()
            real[:, a] = target
            frechets.append(frechet_distance(real_features(real), features))
        error = np.concatenate(errors)
        rows.append(AttributeRow(
            attribute=attribute, error=float(error.mean()), within=float((error <= tolerance).mean()),
            no_edit_error=float(np.concatenate(no_edit).mean()), drift=float(np.concatenate(drifts).mean()),
            identity=float(np.concatenate(identities).mean()), identity_edit=float(np.concatenate(kept).mean()),
            pixel_inside=float(np.mean(inside)),
            pixel_outside=float(np.mean(outside)), frechet=float(np.mean(frechets)),
        ))  # fmt: skip
        if progress:
            print(f"{attribute}: error {rows[-1].error:.3f}, within {rows[-1].within:.1%}", file=sys.stderr, flush=True)
    return Evaluation(
        method=editor.name,
        rows=rows,
        reconstruction_error=float((reconstruction - images).abs().mean()),
        reconstruction_identity=float((recon_embeddings * input_embeddings).sum(axis=1).mean()),
        frechet_real=frechet_distance(reference_features, test_features),
        frechet_reconstruction=frechet_distance(reference_features, recon_features),
        frechet_generated=frechet_generated,
        faces=faces,
        seed=seed,
        image_size=size,
        targets=tuple(float(t) for t in targets),
        tolerance=tolerance,
        features=FEATURES,
        time_s=time.perf_counter() - started,
    )


def _modules(editor: Editor) -> list[nn.Module]:
    """The editor's torch modules (its dataclass fields that are modules)."""
    return [v for v in vars(editor).values() if isinstance(v, nn.Module)]


# -- loading a set --------------------------------------------------------------------------------
def load_set(
    *,
    work_dir: Path | None = None,
    generator_checkpoint: Path | None = None,
    readers_checkpoint: Path | None = None,
    checkpoint_dir: Path | None = None,
) -> tuple[FactorisedEditor, Readers]:
    """The editor and readers of a build, in eval mode on the CPU, from one of:

    - `work_dir`: a `facet phenotype build --work-dir` (`generator/phenotype.safetensors`,
      `readers/readers.safetensors`);
    - `generator_checkpoint` and `readers_checkpoint`: those two files;
    - `checkpoint_dir`: a registered set's `File.CHECKPOINT` directory (`<role>.safetensors`, `configs.json`).

    Raises:
        FileNotFoundError: a checkpoint is missing (the message names it).
        ValueError: a file that is not the checkpoint it should be.
    """
    from training.phenotype.readers import load_readers
    from training.phenotype.train import load_checkpoint

    if checkpoint_dir is not None:
        return _load_registered(Path(checkpoint_dir))
    if work_dir is not None:
        from training.phenotype.build import GENERATOR_DIR, READERS_DIR
        from training.phenotype.readers import CHECKPOINT_FILE as READERS_FILE
        from training.phenotype.train import CHECKPOINT_FILE as GENERATOR_FILE

        generator_checkpoint = Path(work_dir) / GENERATOR_DIR / GENERATOR_FILE
        readers_checkpoint = Path(work_dir) / READERS_DIR / READERS_FILE
    if generator_checkpoint is None or readers_checkpoint is None:
        raise ValueError("need work_dir, both checkpoints, or checkpoint_dir")
    for path in (generator_checkpoint, readers_checkpoint):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
    factor_encoder, generator, image_encoder, config = load_checkpoint(Path(generator_checkpoint))
    regressor, identity, _, _ = load_readers(Path(readers_checkpoint))
    editor = FactorisedEditor(factor_encoder, generator, image_encoder, config.model.latent_layout())
    return editor, Readers(regressor.eval(), identity.eval())


def _load_registered(directory: Path) -> tuple[FactorisedEditor, Readers]:
    from safetensors.torch import load_file

    from training.phenotype.export import CONFIGS_FILE
    from training.phenotype.model import FactorEncoder, Generator, ImageEncoder
    from training.phenotype.readers import IdentityEmbedding, ReadersConfig, Regressor
    from training.phenotype.train import TrainingConfig

    meta_path = directory / CONFIGS_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no {CONFIGS_FILE} in {directory}")
    meta = json.loads(meta_path.read_text())
    model = TrainingConfig.from_dict(meta["configs"]["generator"]).model
    readers = ReadersConfig.from_dict(meta["configs"]["readers"])
    modules: dict[str, nn.Module] = {
        "factor_encoder": FactorEncoder(model),
        "generator": Generator(model),
        "image_encoder": ImageEncoder(model),
        "regressor": Regressor(readers.image_size, readers.base_channels, readers.hidden),
        "identity": IdentityEmbedding(readers.image_size, readers.base_channels, readers.hidden, readers.embedding_dim),
    }
    for role, module in modules.items():
        path = directory / f"{role}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        module.load_state_dict(load_file(str(path)))
        module.eval()
    layout = {k: (int(v[0]), int(v[1])) for k, v in meta["latent_layout"].items()}
    editor = FactorisedEditor(modules["factor_encoder"], modules["generator"], modules["image_encoder"], layout)
    return editor, Readers(modules["regressor"], modules["identity"])


# -- the command ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_argument_group("the model set (one of)")
    source.add_argument(
        "--model", default=None, help="a registered set's generator name (default: the served default, configfaces-64)"
    )
    source.add_argument(
        "--repository", type=Path, default=None, help="the model repository (default: the configured one)"
    )
    source.add_argument(
        "--work-dir", type=Path, default=None, help="the work dir of `facet phenotype build --work-dir DIR`"
    )
    source.add_argument(
        "--generator-checkpoint", type=Path, default=None, help="phenotype.safetensors of `training.phenotype.train`"
    )
    source.add_argument(
        "--readers-checkpoint", type=Path, default=None, help="readers.safetensors of `training.phenotype.readers`"
    )
    parser.add_argument("--faces", type=int, default=DEFAULT_FACES, help="test faces (>= 2)")
    parser.add_argument(
        "--seed", type=int, default=TEST_SEED, help="the test faces' seed (the reference faces use seed + 1)"
    )
    parser.add_argument(
        "--targets", default=",".join(f"{t:g}" for t in DEFAULT_TARGETS), help="comma-separated target values in [0, 1]"
    )
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, help="|achieved - target| counted as within"
    )
    parser.add_argument("--device", default=AUTO, help=CHOICES_HELP)
    parser.add_argument("--json", type=Path, default=None, help="also write the evaluation here as JSON")
    return parser


def _bad(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """`facet eval phenotype`: evaluate a model set and print its table.

    Returns:
        0 when evaluated; 1 when a checkpoint or the registered set is missing or unreadable (the
        message says which and how to build it); 2 for bad options (argparse's own errors too).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        targets = tuple(float(t) for t in args.targets.split(","))
    except ValueError:
        return _bad(f"--targets must be comma-separated numbers in [0, 1], got {args.targets!r}")
    if not all(0.0 <= t <= 1.0 for t in targets):
        return _bad(f"--targets must be in [0, 1], got {args.targets!r}")
    if args.faces < 2:
        return _bad(f"--faces must be >= 2, got {args.faces}")
    if not 0.0 < args.tolerance < 1.0:
        return _bad(f"--tolerance must be in (0, 1), got {args.tolerance}")
    files = (args.generator_checkpoint, args.readers_checkpoint)
    if (files[0] is None) != (files[1] is None):
        return _bad("--generator-checkpoint and --readers-checkpoint go together")
    chosen = sum(
        [args.work_dir is not None, files[0] is not None, args.model is not None or args.repository is not None]
    )
    if chosen > 1:
        return _bad("pass one of --model/--repository, --work-dir, or the two checkpoints")
    try:
        resolve_device(args.device)
    except ValueError as exc:
        return _bad(str(exc))
    try:
        if args.work_dir is not None or files[0] is not None:
            editor, readers = load_set(
                work_dir=args.work_dir, generator_checkpoint=files[0], readers_checkpoint=files[1]
            )
            where = str(args.work_dir or files[0])
        else:
            editor, readers, where = _from_repository(args.model, args.repository)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"{PROG}: {exc}; {BUILD_HINT}", file=sys.stderr)
        return 1
    print(
        f"evaluating {where} on {args.faces} procedural test faces (seed {args.seed}), targets {args.targets}",
        flush=True,
    )
    evaluation = evaluate(editor, readers, faces=args.faces, seed=args.seed, targets=targets, tolerance=args.tolerance,
                          device=args.device, progress=True)  # fmt: skip
    print(evaluation.markdown())
    print(f"\n({evaluation.time_s:.1f} s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"source": where, **evaluation.to_dict()}, indent=2) + "\n")
    return 0


def _from_repository(model: str | None, root: Path | None) -> tuple[FactorisedEditor, Readers, str]:
    """A registered set's editor and readers from its stored PyTorch checkpoint (`File.CHECKPOINT`).

    Raises:
        FileNotFoundError: the repository has no such model, or it has no checkpoint.
    """
    from services.model_repository import ModelRepository
    from services.phenotype.catalog import File
    from services.phenotype.config import PhenotypeConfig

    if root is None:
        from services.runtime.config import load_config

        root = load_config().model_repository
    name = model or PhenotypeConfig().model
    repository = ModelRepository(root)
    if not repository.has(name):
        raise FileNotFoundError(f"the model repository {root} holds no phenotype model {name!r}")
    entry = repository.get(name)
    try:
        directory = entry.file(File.CHECKPOINT)
    except KeyError:
        raise FileNotFoundError(f"{name} v{entry.version} in {root} stores no PyTorch checkpoint") from None
    editor, readers = load_set(checkpoint_dir=directory)
    return editor, readers, f"{name} v{entry.version} ({root})"


if __name__ == "__main__":
    sys.exit(main())
