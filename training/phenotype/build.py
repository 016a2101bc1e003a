"""Build a phenotype model set into the model repository: train the factorised generator (stage 1)
and its image encoder (stage 2), train the two readers apart from it (attribute regressor and
identity embedding: other seeds, other faces), export all five graphs with parity checks, register.

    facet phenotype build [--name configfaces-64] [--repository DIR] [--work-dir DIR] [--device auto]
                          [--stage1-steps N] [--stage2-steps N] [--reader-steps N]

The default set, `configfaces-64`, is `training.phenotype.train.TrainingConfig`'s and
`training.phenotype.readers.ReadersConfig`'s defaults at 64 x 64. A build started again with the
same work dir resumes both trainings from their checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from services.model_repository import ModelRepository, ModelVersion
from services.phenotype.catalog import COMPANION_KINDS, DEFAULT_IMAGE_SIZE, Prop, companion_name
from services.phenotype.config import PhenotypeConfig
from training.device import AUTO, CHOICES_HELP
from training.options import add_options, option, parse_options, repository_root
from training.phenotype.evaluate import Evaluation, FactorisedEditor, Readers, evaluate
from training.phenotype.export import PhenotypeModels, export_phenotype
from training.phenotype.faces import FACTOR_NAMES, make_faces
from training.phenotype.model import ModelConfig
from training.phenotype.readers import ReadersConfig, train_readers
from training.phenotype.train import TrainingConfig, train

log = logging.getLogger(__name__)

DEFAULT_MODEL = PhenotypeConfig().model  # "configfaces-64": what the service serves by default
GENERATOR_DIR, READERS_DIR, EXPORT_DIR = "generator", "readers", "export"
PARITY_FACES = 64  # real faces the export's parity check runs on
PARITY_SEED = 4242  # a face seed neither training uses
PRESETS = ("default", "tiny")
EVALUATION_FACES = 100  # test faces of the evaluation stored with the set (`facet eval phenotype` defaults to 200)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """`facet phenotype build`: the set's name, where it goes, and the schedule."""

    name: str = option(DEFAULT_MODEL, help="the generator's repository name (its companions: <name>-factor-encoder, ...)")
    repository: Path | None = option(None, help="the model repository (default: the configured one)")
    work_dir: Path | None = option(None, help="checkpoints and export files; the same dir resumes a killed build")
    device: str = option(AUTO, help=CHOICES_HELP)
    stage1_steps: int | None = option(None, help=f"generator steps, stage 1 (default: the preset's; {TrainingConfig().stage1_steps} for default)")
    stage2_steps: int | None = option(None, help=f"image encoder steps, stage 2 (default: the preset's; {TrainingConfig().stage2_steps} for default)")
    reader_steps: int | None = option(None, help=f"steps of the regressor and identity embedding (default: the preset's; {ReadersConfig().steps} for default)")
    preset: str = option("default", choices=PRESETS, help="tiny: a 16x16 set in about a minute, to try the pipeline (the step options still apply)")
    progress: bool = option(True, cli=False)

    def configs(self) -> tuple[TrainingConfig, ReadersConfig]:
        """The two trainings' configs: the preset's, with the step options (ValueError names a bad value)."""
        training, readers = tiny_configs() if self.preset == "tiny" else (TrainingConfig(), ReadersConfig())
        training = dataclasses.replace(
            training,
            stage1_steps=training.stage1_steps if self.stage1_steps is None else self.stage1_steps,
            stage2_steps=training.stage2_steps if self.stage2_steps is None else self.stage2_steps,
        )
        readers = dataclasses.replace(readers, steps=readers.steps if self.reader_steps is None else self.reader_steps)
        return training, readers


def tiny_configs(size: int = 16) -> tuple[TrainingConfig, ReadersConfig]:
    """Configs of a test model set: seconds on one core, real procedural faces, real training."""
    model = ModelConfig(image_size=size, slice_dim=4, identity_dim=16, factor_count=len(FACTOR_NAMES), base_channels=8,
                        max_channels=32, identity_hidden=64, discriminator_channels=8, discriminator_layers=2)  # fmt: skip
    training = TrainingConfig(stage1_steps=150, stage2_steps=100, batch_size=16, train_faces=400, validation_faces=64, eval_every=50, model=model)
    readers = ReadersConfig(image_size=size, train_identities=120, valid_identities=8, renders_per_identity=4, identities_per_batch=16,
                            steps=160, base_channels=8, hidden=64, embedding_dim=16, checkpoint_every=80)  # fmt: skip
    return training, readers


def build_model_set(
    repository: ModelRepository,
    work_dir: Path,
    name: str,
    training: TrainingConfig,
    readers: ReadersConfig,
    *,
    progress: bool = True,
    device: str = AUTO,
    evaluation_faces: int = EVALUATION_FACES,
) -> ModelVersion:
    """Train both parts, evaluate them, export the five graphs, register them.

    Args:
        repository: where the set is registered.
        work_dir: checkpoints (`generator/`, `readers/`: a build started again resumes) and `export/`.
        name: the generator's name.
        training: stage 1 and 2 (`training.phenotype.train`).
        readers: the regressor and identity embedding (`training.phenotype.readers`), at the same image size.
        evaluation_faces: test faces of the evaluation stored in the set's metrics
            (`training.phenotype.evaluate`, seed 777, targets 0.1 / 0.5 / 0.9, tolerance 0.1):
            `ListFaceModels().metrics["evaluation"]` says per attribute how well edits act.
    Returns:
        the generator's registered version.
    Raises:
        ValueError: the two configs' image sizes differ, or the readers share the generator's face seeds.
        training.phenotype.export.ParityError: an export failed its parity check (nothing registered).
    """
    size = training.model.image_size
    if readers.image_size != size:
        raise ValueError(f"the readers' image_size ({readers.image_size}) must be the generator's ({size})")
    if readers.seed in (training.face_seed, training.validation_seed):
        raise ValueError(f"the readers' seed ({readers.seed}) must differ from the generator's face seeds: they must not grade faces they were fitted with")
    work_dir = Path(work_dir)
    generated = train(training, work_dir / GENERATOR_DIR, progress=progress, device=device)
    read = train_readers(readers, work_dir / READERS_DIR, progress=progress, device=device)
    editor = FactorisedEditor(generated.factor_encoder, generated.generator, generated.image_encoder, training.model.latent_layout())
    evaluation = evaluate(editor, Readers(read.regressor, read.identity), faces=evaluation_faces, device="cpu")
    faces = make_faces(PARITY_FACES, seed=PARITY_SEED, size=size, progress=False)
    models = PhenotypeModels(
        factor_encoder=generated.factor_encoder,
        generator=generated.generator,
        image_encoder=generated.image_encoder,
        regressor=read.regressor,
        identity=read.identity,
        image_size=size,
        latent_layout=training.model.latent_layout(),
        factor_names=FACTOR_NAMES,
        identity_dim=readers.embedding_dim,
        configs={"generator": training.to_dict(), "readers": readers.to_dict()},
    )
    properties: dict[str, Any] = {
        Prop.TRAINING: {
            "generator": {"config": training.to_dict(), "time_s": generated.time_s},
            "readers": {"config": readers.to_dict(), "time_s": read.time_s},
        },
        Prop.METRICS: {"generator": generated.metrics, "readers": read.metrics, "evaluation": stored_evaluation(evaluation)},
    }
    return export_phenotype(
        models, repository, name, properties=properties, parity_images=faces.images, parity_factors=faces.factors,
        work_dir=work_dir / EXPORT_DIR, checkpoint=generated.checkpoint,
    )  # fmt: skip


def stored_evaluation(evaluation: Evaluation) -> dict[str, Any]:
    """The evaluation as the set's metrics store it: the setup, the overall figures, and per
    attribute its `AttributeRow` figures (error, within, no_edit_error, drift, identity,
    identity_edit, pixel_inside, pixel_outside, frechet; `training.phenotype.evaluate`)."""
    data = evaluation.to_dict()
    rows = data.pop("rows")
    return {**data, "attributes": {row.pop("attribute"): row for row in rows}}


def build_test_model(repository: ModelRepository, work_dir: Path, name: str = DEFAULT_MODEL, size: int = 16) -> ModelVersion:
    """A tiny model set (`tiny_configs`) registered as `name`: for the tests, on the CPU."""
    training, readers = tiny_configs(size)
    return build_model_set(repository, Path(work_dir) / name, name, training, readers, progress=False, device="cpu", evaluation_faces=16)


def has_defaults(repository: ModelRepository) -> bool:
    """Whether `repository` holds the default set: the generator and its four companions."""
    return all(repository.has(n) for n in (DEFAULT_MODEL, *(companion_name(DEFAULT_MODEL, r) for r in COMPANION_KINDS)))


def build_defaults(repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None) -> list[ModelVersion]:
    """Build the default set `configfaces-64` when `has_defaults` finds it missing.

    Args:
        repository: the model repository to register into.
        work_dir: training checkpoints (a build started again resumes) and export files.
        benchmark_data: unused (the faces are procedural); taken for the registry's signature.
    Returns:
        the generator's version, or [] when the set was there.
    """
    if has_defaults(repository):
        return []
    training, readers = BuildOptions().configs()
    assert training.model.image_size == DEFAULT_IMAGE_SIZE
    return [build_model_set(repository, Path(work_dir) / DEFAULT_MODEL, DEFAULT_MODEL, training, readers)]


def main(argv: list[str] | None = None) -> int:
    """`facet phenotype build`: build one model set and print where it is and its metrics.

    Returns:
        0 when registered; 1 when a training or the export failed; 2 for bad options.
    """
    import tempfile

    prog = "facet phenotype build"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, BuildOptions)
    options, _ = parse_options(parser, BuildOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repository = ModelRepository(repository_root(options))
    try:
        training, readers = options.configs()
        with tempfile.TemporaryDirectory() as tmp:
            entry = build_model_set(repository, options.work_dir or Path(tmp), options.name, training, readers,
                                    progress=options.progress, device=options.device)  # fmt: skip
    except (RuntimeError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    companions = ", ".join(entry.properties[Prop.COMPANIONS].values())
    print(f"registered {entry.name} v{entry.version} and {companions} at {repository.root}")
    print(json.dumps({"training": entry.properties[Prop.TRAINING], "metrics": entry.properties[Prop.METRICS]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
