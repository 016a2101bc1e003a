"""Build Facet's paraphrasers: train (DDL, VSAR, DDL+VSAR or KRL), evaluate, export, register.

    facet paraphrase build [--name ddl-vsar-quora] [--setting krl] [--label-fraction 1.0]
                           [--steps N] [--krl-ddl-steps N] [--data ../shared/data] [--repository DIR] ...

The default served paraphraser, `ddl-vsar-quora`, is the paper's KRL schedule (DDL on the
labelled pairs first, then DDL+VSAR from its best checkpoint) on all Quora labelled pairs, whose
sources also serve as the unlabelled text (Yu et al., "Language as a Latent Sequence", §3.3),
sized for 2 CPU cores (`training.paraphrase.train.TrainingConfig`). It is evaluated greedily on
the Quora test split (the paper decodes greedily), exported as the two ONNX graphs the paraphrase
service runs (`services.paraphrase.catalog`) with parity checks on real Quora test sentences, and
registered with its setting, training data, training config and test metrics.

`build_test_model` builds the tiny version the tests serve (a 1 + 1-layer, 32-wide model trained
for 120 steps on 300 real Quora pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.model_repository import ModelRepository, ModelVersion
from services.paraphrase.catalog import Prop, encoder_name
from training.options import add_options, option, parse_options, repository_root
from training.paraphrase.data import DATASETS, DEFAULT_DATA_DIR
from training.paraphrase.train import SETTINGS, TrainingConfig, TrainResult, train

log = logging.getLogger(__name__)

DEFAULT_PARAPHRASER = "ddl-vsar-quora"
EMBEDDING_MODEL = "all-minilm-l6-v2"  # training.retrieval.export.DEFAULT_EMBEDDING_MODEL: the service's similarity model
TRAIN_DIR = "train"  # under the work dir: train's checkpoints (a build started again resumes from them)
EXPORT_DIR = "export"  # under the work dir: the ONNX graphs, tokenizer and weights before registration

_DEFAULTS = TrainingConfig()
_MODEL = _DEFAULTS.model
# the ModelConfig fields a flag sets; vocab_size and the special ids are the tokenizer's
MODEL_FIELDS = ("d_model", "heads", "encoder_layers", "decoder_layers", "ff_dim", "dropout", "max_positions", "prior_layers", "direction_embedding")


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """`facet paraphrase build`: the model, its data, its training budget and where it is registered.

    Each training flag sets the `TrainingConfig` field of the same name (defaults: TrainingConfig's);
    the model flags set `TrainingConfig.model` (`ModelConfig`)."""

    name: str = option(DEFAULT_PARAPHRASER, help="model name in the repository (its encoder: NAME-encoder)")
    # -- TrainingConfig
    setting: str = option(_DEFAULTS.setting, choices=SETTINGS, help="ddl (supervised), vsar (unsupervised), ddl+vsar, or krl (ddl, then ddl+vsar from its best checkpoint)")
    dataset: str = option(_DEFAULTS.dataset, choices=tuple(DATASETS), help="the paraphrase corpus under DATA/paraphrase")
    label_fraction: float = option(_DEFAULTS.label_fraction, help="share of the train pairs that keep their target, in (0, 1]; the others' sources are unlabelled text")
    max_length: int = option(_DEFAULTS.max_length, help="tokens of a sentence, [CLS]/[SEP] excluded (the paper: 20)")
    steps: int = option(_DEFAULTS.steps, help="optimiser steps in all (krl: its ddl stage's included)")
    krl_ddl_steps: int = option(_DEFAULTS.krl_ddl_steps, help="krl: steps of the first, ddl-only stage (< --steps)")
    batch_size: int = option(_DEFAULTS.batch_size, help="labelled pairs per ddl batch and unlabelled sentences per vsar batch")
    lr: float = option(_DEFAULTS.lr, help="Adam learning rate after warm-up")
    warmup_steps: int = option(_DEFAULTS.warmup_steps, help="linear warm-up steps at the start of each stage")
    max_grad_norm: float = option(_DEFAULTS.max_grad_norm, help="gradient norm clip")
    seed: int = option(_DEFAULTS.seed, help="the labelled pairs drawn, the initialisation, the batches, the noise")
    top_k: int = option(_DEFAULTS.top_k, help="vsar: the Gumbel-softmax sample's top-k (the paper: 10)")
    temperature_start: float = option(_DEFAULTS.temperature_start, help="vsar: the Gumbel-softmax temperature at the first vsar step, annealed linearly")
    temperature_end: float = option(_DEFAULTS.temperature_end, help="vsar: the temperature at the last step")
    beta: float = option(_DEFAULTS.beta, help="vsar: weight of the KL to the language-model prior (the paper: 1)")
    prior_steps: int = option(_DEFAULTS.prior_steps, help="steps of the language-model prior's training, before vsar")
    eval_every: int = option(_DEFAULTS.eval_every, help="steps between validation losses and resumable checkpoints")
    validation_pairs: int = option(_DEFAULTS.validation_pairs, help="pairs carved from train (fixed seed) for the validation loss")
    train_pairs: int = option(_DEFAULTS.train_pairs, help="only the first N deduplicated train pairs (0: all)")
    min_piece_count: int = option(_DEFAULTS.min_piece_count, help="least count of a WordPiece piece in the training text to join the vocabulary")
    # -- TrainingConfig.model
    d_model: int = option(_MODEL.d_model, help="width of every layer")
    heads: int = option(_MODEL.heads, help="attention heads (d_model must divide by it)")
    encoder_layers: int = option(_MODEL.encoder_layers)
    decoder_layers: int = option(_MODEL.decoder_layers)
    ff_dim: int = option(_MODEL.ff_dim, help="hidden width of the feed-forward blocks")
    dropout: float = option(_MODEL.dropout)
    max_positions: int = option(_MODEL.max_positions, help="learned positions (>= max length + 2)")
    prior_layers: int = option(_MODEL.prior_layers, help="blocks of the language-model prior")
    direction_embedding: bool = option(_MODEL.direction_embedding, help="tell ddl's two directions apart by a learned vector")
    # -- evaluation, export, places
    evaluate: int = option(-1, help="test sentences (the first N) decoded greedily for the metrics (0: none, -1: the whole test split)")
    parity_sentences: int = option(300, help="real test sentences the ONNX export is checked on (the same greedy and beam tokens as PyTorch)")
    data: Path = option(DEFAULT_DATA_DIR, help="the shared benchmark data (its paraphrase/ folder)")
    repository: Path | None = option(None, help="model repository (default: the configured one)")
    work_dir: Path | None = option(
        None, help="training checkpoints and export files (default: a temporary directory); a build started again with the same --work-dir resumes its training"
    )
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        self.training()  # raises ValueError naming a bad value
        if self.evaluate < -1:
            raise ValueError(f"evaluate must be -1 (the whole test split), 0 (none) or a number of sentences, got {self.evaluate}")
        if self.parity_sentences < 1:
            raise ValueError(f"parity_sentences must be >= 1 (the export is checked on real sentences), got {self.parity_sentences}")

    def training(self) -> TrainingConfig:
        """The `TrainingConfig` these options describe.

        Raises:
            ValueError: a value TrainingConfig or ModelConfig refuses (the message names it).
        """
        model = dataclasses.replace(_MODEL, **{name: getattr(self, name) for name in MODEL_FIELDS})
        fields = [f.name for f in dataclasses.fields(TrainingConfig) if f.name != "model"]
        return TrainingConfig(**{name: getattr(self, name) for name in fields}, model=model)


def tiny_options(name: str = DEFAULT_PARAPHRASER, **overrides: Any) -> BuildOptions:
    """The tiny test paraphraser's options (`build_test_model`).

    KRL as the default, at toy size: a 32-wide 1 + 1-layer model, 100 DDL steps then 20 DDL+VSAR
    steps of 16 pairs on the first 300 deduplicated Quora train pairs, a 1-layer prior of 20 steps,
    the vocabulary shortlisted to the pieces seen twice (plus every single character); greedy
    metrics on 48 test sentences, export parity on 24. `max_positions` 66 leaves room for the
    ONNX Runtime backend's 64-token warm-up input (`services.backends.onnxruntime`)."""
    values: dict[str, Any] = {
        "name": name, "setting": "krl", "steps": 120, "krl_ddl_steps": 100, "batch_size": 16, "lr": 5e-3, "warmup_steps": 5,
        "prior_steps": 20, "eval_every": 50, "validation_pairs": 64, "train_pairs": 300, "min_piece_count": 2,
        "d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 64, "dropout": 0.0, "max_positions": 66,
        "prior_layers": 1, "evaluate": 48, "parity_sentences": 24, "progress": False,
    }  # fmt: skip
    values.update(overrides)
    return BuildOptions(**values)


Fit = Callable[[TrainingConfig, Path, Path, bool], TrainResult]


def fit_locally(config: TrainingConfig, work_dir: Path, data_dir: Path, progress: bool) -> TrainResult:
    """`training.paraphrase.train.train` in this process, resuming from `work_dir` when it holds a
    checkpoint of the same config."""
    return train(config, work_dir, data_dir, progress=progress, resume=True)


def check_data(data_dir: Path, dataset: str) -> Path:
    """The dataset's folder under the shared benchmark data.

    Raises:
        FileNotFoundError: it is missing; the message says where it was looked for and what to pass.
    """
    folder = Path(data_dir) / DATASETS[dataset]
    if not (folder / "train_source.txt").is_file():
        raise FileNotFoundError(
            f"the {dataset} paraphrase data is missing: no {folder / 'train_source.txt'}; the build reads the shared "
            f"benchmark data (../shared/data beside the checkout); pass --data DIR where DIR/{DATASETS[dataset]} holds it"
        )
    return folder


def test_metrics(result: TrainResult, data_dir: Path, sentences: int, progress: bool) -> dict[str, Any]:
    """Greedy decoding (the paper's) of the first `sentences` test pairs (-1: all) and their metrics.

    Returns:
        `training.paraphrase.evaluate.evaluate`'s metrics (0-100) with "split", "decoding" and
        "decode_s" (wall-clock seconds of decoding).
    """
    from training.paraphrase.evaluate import evaluate
    from training.paraphrase.experiment import decode, load_test_split

    sources, references = load_test_split(result.config.dataset, data_dir, max(sentences, 0))
    started = time.perf_counter()
    outputs = decode(result, sources, result.config.max_length, progress=progress, desc="test split: greedy")
    decode_s = time.perf_counter() - started
    return {**evaluate(outputs, sources, references), "split": f"{result.config.dataset} test", "decoding": "greedy", "decode_s": round(decode_s, 1)}


def parity_sources(dataset: str, data_dir: Path, count: int) -> list[str]:
    """Real sentences for the export's parity check: test sources spread over the whole test split."""
    from training.paraphrase.data import load_pairs

    pairs = load_pairs(dataset, "test", data_dir)
    stride = max(1, len(pairs) // count)
    return [pairs[i][0] for i in range(0, len(pairs), stride)][:count]


def build_paraphraser(repository: ModelRepository, work_dir: Path, options: BuildOptions, fit: Fit = fit_locally) -> ModelVersion:
    """Train, evaluate, export and register one paraphraser (`<name>` and `<name>-encoder`).

    Args:
        repository: where it is registered (the next versions of `options.name` and its encoder).
        work_dir: training checkpoints under `work_dir/train` (resumed when there), export files
            under `work_dir/export`.
        options: the setting, data, budget and sizes.
        fit: trains the model (`fit_locally`, or on Ray Train: `training.paraphrase.ray_job`).
    Returns:
        the decoder step's registered version; its properties hold the setting, training data,
        training config and times, and the test metrics (`services.paraphrase.catalog.Prop`).
    Raises:
        FileNotFoundError: the benchmark data is missing.
        RuntimeError: the training failed on Ray, or the export failed its parity check (`ParityError`).
    """
    from training.paraphrase.export import export_paraphraser

    started = time.perf_counter()
    config = options.training()
    check_data(options.data, config.dataset)
    work_dir = Path(work_dir)
    result = fit(config, work_dir / TRAIN_DIR, options.data, options.progress)
    train_s = time.perf_counter() - started
    metrics: dict[str, Any] = {}
    if options.evaluate:
        metrics = test_metrics(result, options.data, options.evaluate, options.progress)
    evaluate_s = time.perf_counter() - started - train_s
    counts = result.counts
    properties: dict[str, Any] = {
        Prop.SETTING: config.setting,
        Prop.TRAINING_DATA: {
            "dataset": config.dataset,
            "labelled_pairs": counts.get("labelled_pairs"),
            "unlabelled_sources": counts.get("unlabelled_sentences"),
            "label_fraction": config.label_fraction,
            "validation_pairs": counts.get("validation"),
            "train_pairs_after_dedupe": counts.get("train"),
            "dropped_for_test": counts.get("dropped_for_test"),
            "dropped_for_validation": counts.get("dropped_for_validation"),
            "vocab_size": counts.get("vocab_size"),
        },
        Prop.TRAINING: {
            **config.to_dict(),
            "model": result.model.config.to_dict(),  # vocab_size and special ids: the tokenizer's
            "time_s": round(result.time_s, 1),
            "best_valid_loss": result.best_valid_loss,
            "valid_loss": "x -> y token cross-entropy (nats) on the validation pairs",
            "history": result.history,
            "train_s": round(train_s, 1),
            "evaluate_s": round(evaluate_s, 1),
        },
        Prop.METRICS: metrics,
    }
    parity = parity_sources(config.dataset, options.data, options.parity_sentences)
    entry = export_paraphraser(result.model, result.tokenizer, repository, options.name, properties=properties,
                               checkpoint=result.checkpoint, parity_sentences=parity, work_dir=work_dir / EXPORT_DIR)  # fmt: skip
    total_s = time.perf_counter() - started
    training = {**entry.properties[Prop.TRAINING], "export_s": round(total_s - train_s - evaluate_s, 1), "total_s": round(total_s, 1)}
    log.info("registered %s v%d and %s in %.0f s (training %.0f s)", entry.name, entry.version, encoder_name(entry.name), total_s, train_s)
    return repository.update_metadata(entry.name, entry.version, properties={**entry.properties, Prop.TRAINING: training})


def _link_model(source: Path, destination: Path) -> None:
    """`destination` becomes a copy of the model directory `source` whose files are hard links
    (no bytes copied; each side can still be replaced on its own), or plain copies across devices."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, copy_function=link)


def ensure_embedding_model(
    repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None, *, source: ModelRepository | None = None
) -> list[ModelVersion]:
    """Make sure the paraphrase service's similarity model (`EMBEDDING_MODEL`, the retrieval
    capability's all-MiniLM-L6-v2) is in `repository`.

    Args:
        repository: the model repository.
        work_dir: scratch for the retrieval export.
        benchmark_data: the shared benchmark data (the export's parity sentences).
        source: a repository that may already hold it (tests: the session's retrieval build):
            its files are linked in (`_link_model`) rather than exported again.
    Returns:
        [the version added], or [] when it was there.
    Raises:
        RuntimeError: the packaged model is missing, or its export failed its parity check.
    """
    if repository.has(EMBEDDING_MODEL):
        return []
    if source is not None and source.has(EMBEDDING_MODEL) and source.root.resolve() != repository.root.resolve():
        repository.root.mkdir(parents=True, exist_ok=True)
        _link_model(source.root / EMBEDDING_MODEL, repository.root / EMBEDDING_MODEL)
        return [repository.get(EMBEDDING_MODEL)]
    from training.retrieval.export import build_defaults as build_embedding_model

    return build_embedding_model(repository, work_dir, benchmark_data)


def build_test_model(
    repository: ModelRepository, work_dir: Path, name: str = DEFAULT_PARAPHRASER, *, embedding_from: ModelRepository | None = None
) -> ModelVersion:
    """The tiny paraphraser the tests serve (`tiny_options`), trained by `train` on real Quora
    pairs and exported like the default one; and the embedding model the service needs.

    Deterministic (seed 0, CPU): two builds give the same weights, so the same tokens. Needs the
    shared benchmark data (`../shared/data`). The embedding model is linked from `embedding_from`
    when it holds one (the tests' session build), else exported from the packaged all-MiniLM-L6-v2
    (`training.retrieval.export.build_defaults`).

    Args:
        repository: where it is registered.
        work_dir: scratch space (training checkpoints, export files).
        name: its model name (its encoder: `<name>-encoder`).
        embedding_from: a repository whose embedding model to link in.
    Returns:
        the decoder step's registered version.
    """
    options = tiny_options(name)
    ensure_embedding_model(repository, Path(work_dir) / "embedding", options.data, source=embedding_from)
    return build_paraphraser(repository, Path(work_dir) / name, options)


def has_defaults(repository: ModelRepository) -> bool:
    """Whether `repository` has what the paraphrase service serves by default: the paraphraser
    `DEFAULT_PARAPHRASER` (and its encoder) and the embedding model `EMBEDDING_MODEL`."""
    return all(repository.has(n) for n in (DEFAULT_PARAPHRASER, encoder_name(DEFAULT_PARAPHRASER), EMBEDDING_MODEL))


def build_defaults(repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None) -> list[ModelVersion]:
    """Build what `has_defaults` finds missing: the default paraphraser `ddl-vsar-quora` (KRL on
    all Quora labelled pairs, `BuildOptions`' defaults, evaluated on the whole Quora test split)
    and the embedding model.

    Args:
        repository: the model repository to register into.
        work_dir: training checkpoints (a build started again resumes) and export files.
        benchmark_data: the shared benchmark data (`../shared/data`); the default beside the checkout when None.
    Returns:
        the versions registered ([] when all were there).
    Raises:
        FileNotFoundError: the benchmark data is missing.
        RuntimeError: an export failed its parity check.
    """
    data = benchmark_data or DEFAULT_DATA_DIR
    built = ensure_embedding_model(repository, Path(work_dir) / "embedding", data)
    if not (repository.has(DEFAULT_PARAPHRASER) and repository.has(encoder_name(DEFAULT_PARAPHRASER))):
        built.append(build_paraphraser(repository, Path(work_dir) / DEFAULT_PARAPHRASER, BuildOptions(data=data)))
    return built


def summary(entry: ModelVersion) -> dict[str, Any]:
    """What the CLI prints of a registered paraphraser: setting, data, times, loss and metrics."""
    props = entry.properties
    training = {k: v for k, v in props[Prop.TRAINING].items() if k != "history"}
    return {"setting": props[Prop.SETTING], "training_data": props[Prop.TRAINING_DATA], "training": training, "metrics": props[Prop.METRICS]}


def main(argv: list[str] | None = None) -> int:
    """`facet paraphrase build`: build one paraphraser and print where it is and its metrics.

    Returns:
        0 when registered; 1 when the data is missing, the training or the export failed.
    """
    import tempfile

    prog = "facet paraphrase build"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, BuildOptions)
    options, _ = parse_options(parser, BuildOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repository = ModelRepository(repository_root(options))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            entry = build_paraphraser(repository, options.work_dir or Path(tmp), options)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.name} v{entry.version} and {encoder_name(entry.name)} at {repository.root}")
    print(json.dumps(summary(entry), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
