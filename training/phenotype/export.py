"""Export a trained phenotype model set as the five ONNX graphs of `services.phenotype.catalog`,
check each against PyTorch on real procedural faces, and register them.

Graphs (legacy TorchScript exporter, opset `training.onnx_export.OPSET`, dynamic batch axis):
- ``<name>`` (`Kind.GENERATOR`): latent -> image. It carries the set's metadata (`Prop.*`) and the
  PyTorch weights every graph came from (`File.CHECKPOINT`: a directory with one
  `<role>.safetensors` per model and `configs.json`).
- ``<name>-factor-encoder``, ``<name>-image-encoder``, ``<name>-regressor``, ``<name>-identity``
  (`companion_name`): factors -> latent, image -> latent, image -> attributes, image -> embedding.

Parity (before anything is registered): ONNX Runtime (CPU provider) against PyTorch (CPU) on the
caller's real faces and their factors — the factor encoder on the factors, the generator on the
latents the factor encoder and the image encoder give for them, and the three image models on the
faces — each output's max |difference| <= `PARITY_MAX_ABS`, and the same on a batch of one (the
graphs must not depend on the batch size). The figures go into `facet.json` "parity" of every
model; a failed check raises `ParityError` and registers nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec, file_sha256
from services.phenotype.catalog import ATTRIBUTE_NAMES, COMPANION_KINDS, File, Kind, Prop, Tensor, companion_name
from training.onnx_export import cpu_session, export_module

log = logging.getLogger(__name__)

PARITY_MAX_ABS = 1e-4  # max |ONNX - PyTorch|: images are in [0, 1], latents and embeddings O(1)
CHECKPOINT_DIR = "checkpoint"
CONFIGS_FILE = "configs.json"


class ParityError(RuntimeError):
    """An exported graph does not compute what its PyTorch model computes."""


@dataclasses.dataclass(frozen=True)
class PhenotypeModels:
    """One trained model set (every module on the CPU or not; the export copies to the CPU).

    Attributes:
        factor_encoder: factors float32 [B, F] -> latent [B, latent_dim] (ConfigNet's stage 1).
        generator: latent [B, latent_dim] -> image float32 [B, 3, S, S] in [0, 1].
        image_encoder: image -> latent (stage 2).
        regressor: image -> attributes float32 [B, len(ATTRIBUTE_NAMES)] (trained apart, for reports).
        identity: image -> L2-normalised embedding float32 [B, identity_dim].
        image_size: S.
        latent_layout: {slice name: (start, stop)}: `ATTRIBUTE_NAMES` then "identity".
        factor_names: the factor encoder's input order (`ATTRIBUTE_NAMES` first).
        identity_dim: the identity embedding's width.
        configs: every model's config as a dict (written beside the weights, and `Prop.ARCHITECTURE`).
    """

    factor_encoder: torch.nn.Module
    generator: torch.nn.Module
    image_encoder: torch.nn.Module
    regressor: torch.nn.Module
    identity: torch.nn.Module
    image_size: int
    latent_layout: Mapping[str, tuple[int, int]]
    factor_names: Sequence[str]
    identity_dim: int
    configs: Mapping[str, Any]

    @property
    def latent_dim(self) -> int:
        return max(stop for _, stop in self.latent_layout.values())

    def validate(self) -> None:
        """Raises ValueError when the layout or factor order breaks the catalog's contract."""
        names = list(self.latent_layout)
        if names != [*ATTRIBUTE_NAMES, "identity"]:
            raise ValueError(f"latent_layout must name {[*ATTRIBUTE_NAMES, 'identity']} in that order, got {names}")
        position = 0
        for name, (start, stop) in self.latent_layout.items():
            if start != position or stop <= start:
                raise ValueError(f"latent_layout must be contiguous non-empty slices from 0; {name} is [{start}, {stop})")
            position = stop
        if tuple(self.factor_names[: len(ATTRIBUTE_NAMES)]) != ATTRIBUTE_NAMES:
            raise ValueError(f"factor_names must start with the attributes {ATTRIBUTE_NAMES}, got {list(self.factor_names)}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")


ROLES: dict[str, tuple[str, str, str]] = {  # role -> (input, output, kind)
    "generator": (Tensor.LATENT, Tensor.IMAGE, Kind.GENERATOR),
    "factor_encoder": (Tensor.FACTORS, Tensor.LATENT, COMPANION_KINDS["factor_encoder"]),
    "image_encoder": (Tensor.IMAGE, Tensor.LATENT, COMPANION_KINDS["image_encoder"]),
    "regressor": (Tensor.IMAGE, Tensor.ATTRIBUTES, COMPANION_KINDS["regressor"]),
    "identity": (Tensor.IMAGE, Tensor.EMBEDDING, COMPANION_KINDS["identity"]),
}


def images_to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, 3] -> float32 [N, 3, S, S] in [0, 1] (the models' image layout)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _shapes(models: PhenotypeModels) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    s, latent = models.image_size, models.latent_dim
    image = (3, s, s)
    return {
        "generator": ((latent,), image),
        "factor_encoder": ((len(models.factor_names),), (latent,)),
        "image_encoder": (image, (latent,)),
        "regressor": (image, (len(ATTRIBUTE_NAMES),)),
        "identity": (image, (models.identity_dim,)),
    }


def _parity_inputs(models: PhenotypeModels, images: np.ndarray, factors: np.ndarray) -> dict[str, np.ndarray]:
    pixels = images_to_input(images)
    with torch.no_grad():
        from_factors = models.factor_encoder(torch.from_numpy(factors)).numpy()
        from_images = models.image_encoder(torch.from_numpy(pixels)).numpy()
    return {
        "factor_encoder": factors,
        "generator": np.concatenate([from_factors, from_images]).astype(np.float32),
        "image_encoder": pixels,
        "regressor": pixels,
        "identity": pixels,
    }


def parity_check(models: PhenotypeModels, files: Mapping[str, Path], images: np.ndarray, factors: np.ndarray) -> dict[str, Any]:
    """ONNX Runtime against PyTorch for every graph (module docstring).

    Args:
        models: the set, on the CPU, in eval mode.
        files: role -> its ONNX file.
        images: real faces, uint8 [N, S, S, 3].
        factors: their factors, float32 [N, F].
    Returns:
        {"max_abs_diff": {role: float}, "batch_of_one_max_abs_diff": {role: float}, "faces": N,
        "tolerance": PARITY_MAX_ABS, "passed": bool, "failures": [str]}.
    """
    inputs = _parity_inputs(models, images, factors)
    report: dict[str, Any] = {"max_abs_diff": {}, "batch_of_one_max_abs_diff": {}, "faces": int(len(images))}
    failures: list[str] = []
    for role, (input_name, _, _) in ROLES.items():
        module: torch.nn.Module = getattr(models, role)
        session = cpu_session(files[role])
        x = inputs[role]
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        got = session.run(None, {input_name: x})[0]
        alone = session.run(None, {input_name: x[:1]})[0]
        diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
        diff_one = float(np.max(np.abs(alone - expected[:1]))) if alone.shape == expected[:1].shape else float("inf")
        report["max_abs_diff"][role] = diff
        report["batch_of_one_max_abs_diff"][role] = diff_one
        if not np.all(np.isfinite(got)):
            failures.append(f"{role}: ONNX output has non-finite values")
        for label, value in (("batch", diff), ("batch of one", diff_one)):
            if not value <= PARITY_MAX_ABS:  # NaN fails too
                failures.append(f"{role} ({label}): max |ONNX - PyTorch| = {value:.3g} > {PARITY_MAX_ABS}")
    report.update(tolerance=PARITY_MAX_ABS, passed=not failures, failures=failures)
    return report


def write_checkpoint(models: PhenotypeModels, directory: Path) -> Path:
    """Every module's weights (`<role>.safetensors`) and `configs.json` into `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        module: torch.nn.Module = getattr(models, role)
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(directory / f"{role}.safetensors"))
    meta = {
        "configs": dict(models.configs),
        "image_size": models.image_size,
        "latent_layout": {k: list(v) for k, v in models.latent_layout.items()},
        "factor_names": list(models.factor_names),
        "identity_dim": models.identity_dim,
    }
    (directory / CONFIGS_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def export_phenotype(
    models: PhenotypeModels,
    repository: ModelRepository,
    name: str,
    *,
    properties: Mapping[str, Any],
    parity_images: np.ndarray,
    parity_factors: np.ndarray,
    work_dir: Path,
    checkpoint: Path | None = None,
) -> ModelVersion:
    """Export the set, check parity on real faces, and register the five models.

    Args:
        models: the trained set (`PhenotypeModels`).
        repository: the model repository.
        name: the generator's name; the companions are `companion_name(name, role)`.
        properties: the caller's `Prop.TRAINING` and `Prop.METRICS`; the export adds IMAGE_SIZE,
            LATENT_DIM, LATENT_LAYOUT, FACTORS, IDENTITY_DIM, COMPANIONS and ARCHITECTURE.
        parity_images: real procedural faces, uint8 [N, S, S, 3] (N >= 2; the build passes ~100).
        parity_factors: their factors, float32 [N, len(factor_names)].
        work_dir: where graphs and weights are written before registration.
        checkpoint: the training checkpoint the set came from (recorded with its sha256 when a file).
    Returns:
        the generator's registered version (kind `Kind.GENERATOR`).
    Raises:
        ParityError: a graph failed its parity check (nothing is registered).
        ValueError: the set breaks the catalog's contract, or the parity faces do not fit it.
    """
    models.validate()
    s = models.image_size
    if parity_images.ndim != 4 or parity_images.shape[1:] != (s, s, 3) or parity_images.dtype != np.uint8 or len(parity_images) < 2:
        raise ValueError(f"parity_images must be uint8 [N >= 2, {s}, {s}, 3], got {parity_images.dtype} {parity_images.shape}")
    if parity_factors.shape != (len(parity_images), len(models.factor_names)):
        raise ValueError(f"parity_factors must be [{len(parity_images)}, {len(models.factor_names)}], got {parity_factors.shape}")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cpu = dataclasses.replace(
        models, **{role: copy.deepcopy(getattr(models, role)).cpu().eval() for role in ROLES}
    )  # the caller's modules stay where they are
    shapes = _shapes(cpu)
    files: dict[str, Path] = {}
    for role, (input_name, output_name, _) in ROLES.items():
        in_shape, _ = shapes[role]
        example = torch.zeros((2, *in_shape), dtype=torch.float32)
        files[role] = work_dir / f"{role}.onnx"
        export_module(getattr(cpu, role), (example,), files[role], [input_name], [output_name],
                      {input_name: {0: "batch"}, output_name: {0: "batch"}})  # fmt: skip
    parity = parity_check(cpu, files, parity_images, np.asarray(parity_factors, dtype=np.float32))
    (work_dir / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
    log.info("phenotype %s parity: %s", name, {k: parity[k] for k in ("max_abs_diff", "passed")})
    if not parity["passed"]:
        raise ParityError(f"ONNX export of phenotype model set {name!r} failed its parity check: {'; '.join(parity['failures'])}")
    weights = write_checkpoint(cpu, work_dir / CHECKPOINT_DIR)
    source = f"training.phenotype.export of {checkpoint}" if checkpoint else "training.phenotype.export of in-memory models"
    source_sha = file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    companions = {role: companion_name(name, role) for role in COMPANION_KINDS}

    def metadata(role: str, props: Mapping[str, Any]) -> dict[str, Any]:
        input_name, output_name, kind = ROLES[role]
        in_shape, out_shape = shapes[role]
        return {
            Key.KIND: kind,
            Key.SOURCE: source,
            Key.SOURCE_SHA256: source_sha,
            Key.INPUTS: [TensorSpec(input_name, "float32", in_shape).to_dict()],
            Key.OUTPUTS: [TensorSpec(output_name, "float32", out_shape).to_dict()],
            Key.PROPERTIES: dict(props),
            Key.PARITY: parity,
        }

    shared = {Prop.IMAGE_SIZE: s, Prop.LATENT_DIM: cpu.latent_dim, Prop.IDENTITY_DIM: cpu.identity_dim}
    for role, companion in companions.items():
        repository.register(companion, files[role], metadata(role, {**shared, Prop.GENERATOR: name}))
    props = {
        **dict(properties),
        **shared,
        Prop.LATENT_LAYOUT: {k: list(v) for k, v in cpu.latent_layout.items()},
        Prop.FACTORS: list(cpu.factor_names),
        Prop.COMPANIONS: companions,
        Prop.ARCHITECTURE: dict(cpu.configs),
    }
    return repository.register(name, files["generator"], metadata("generator", props), extra_files={File.CHECKPOINT: weights})


def load_pytorch_models(entry: ModelVersion) -> PhenotypeModels:
    """The PyTorch model set a registered generator's graphs came from (its `File.CHECKPOINT`), on
    the CPU, in eval mode: for benchmarks and for checking the served graphs against PyTorch.

    Raises:
        KeyError: the entry stores no checkpoint (not a phenotype generator's export).
    """
    from safetensors.torch import load_file

    from training.phenotype.model import FactorEncoder, Generator, ImageEncoder
    from training.phenotype.readers import IdentityEmbedding, ReadersConfig, Regressor
    from training.phenotype.train import TrainingConfig

    directory = entry.file(File.CHECKPOINT)
    meta = json.loads((directory / CONFIGS_FILE).read_text())
    model = TrainingConfig.from_dict(meta["configs"]["generator"]).model
    readers = ReadersConfig.from_dict(meta["configs"]["readers"])
    modules: dict[str, torch.nn.Module] = {
        "factor_encoder": FactorEncoder(model),
        "generator": Generator(model),
        "image_encoder": ImageEncoder(model),
        "regressor": Regressor(readers.image_size, readers.base_channels, readers.hidden),
        "identity": IdentityEmbedding(readers.image_size, readers.base_channels, readers.hidden, readers.embedding_dim),
    }
    for role, module in modules.items():
        module.load_state_dict(load_file(str(directory / f"{role}.safetensors")))
        module.eval()
    return PhenotypeModels(
        **modules,  # type: ignore[arg-type]
        image_size=int(meta["image_size"]),
        latent_layout={k: (int(v[0]), int(v[1])) for k, v in meta["latent_layout"].items()},
        factor_names=tuple(meta["factor_names"]),
        identity_dim=int(meta["identity_dim"]),
        configs=meta["configs"],
    )


class TorchModelSet:
    """A `PhenotypeModels` as the service's `services.phenotype.editing.ModelSet`, in PyTorch on
    the CPU: the same edits and reports the service computes, without ONNX or gRPC (the
    benchmark's in-process side)."""

    def __init__(self, models: PhenotypeModels) -> None:
        self.models = models
        self.image_size = models.image_size
        self.layout = dict(sorted(models.latent_layout.items(), key=lambda item: item[1]))
        self.factor_names = tuple(models.factor_names)

    @torch.inference_mode()
    def _run(self, module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    async def generate(self, latent: np.ndarray) -> np.ndarray:
        return np.clip(self._run(self.models.generator, latent), 0.0, 1.0)

    async def encode_factors(self, factors: np.ndarray) -> np.ndarray:
        return self._run(self.models.factor_encoder, factors)

    async def encode_image(self, image: np.ndarray) -> np.ndarray:
        return self._run(self.models.image_encoder, image)

    async def read_attributes(self, image: np.ndarray) -> np.ndarray:
        return self._run(self.models.regressor, image)

    async def embed_identity(self, image: np.ndarray) -> np.ndarray:
        embedding = self._run(self.models.identity, image)
        return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
