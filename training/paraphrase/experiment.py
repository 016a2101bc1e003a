"""The paper's label-scarce experiment, CPU-sized: DDL vs DDL+VSAR (KRL), seeds, Wilcoxon.

    facet paraphrase experiment [--datasets quora] [--fractions 0.1,1.0] [--settings ddl,krl]
                                [--seeds 0,1,2] [--limit N] [--steps N] [--krl-ddl-steps N]
                                [--d-model 256] ... [--device cuda] [--work-dir DIR] [--json summary.json]

Yu et al., "Language as a Latent Sequence", §4 (label-scarce results): with a fraction of the labelled pairs
(the sources of the others are the unlabelled text), the semi-supervised DDL+VSAR trained with
KRL (DDL first, then DDL+VSAR from its best checkpoint) beats the supervised DDL, Wilcoxon p < .05.

The grid: every dataset x label fraction x setting x seed is one run of
`training.paraphrase.train.train` (its own folder under the work dir, `run_dir`), then greedy
decoding of the test split (the first `--limit` sentences) with the reference PyTorch decoder
(`training.paraphrase.generate.greedy`, the paper's decoding) and the metrics of
`training.paraphrase.evaluate`. Both settings of a fraction and seed get the same step budget
(`--steps`; KRL spends `--krl-ddl-steps` of it on its DDL stage), the same labelled pairs and the
same seed. Each run writes `result.json` (config, metrics, per-sentence scores, outputs, times)
when it finishes, so a killed grid started again with the same options skips the finished runs
(and `train` resumes the unfinished one from its checkpoint; another `--limit` only decodes
again); a work dir holding a run of other training options is refused rather than mixed in. Runs
go seed by seed (every fraction and setting of seed 0 first), so a grid stopped early still has
whole seeds: `--seeds 0` prints their table.

Significance: per label fraction, the Wilcoxon signed-rank test (`evaluate.paired_test`) between
DDL and KRL on the per-sentence scores (`evaluate.SENTENCE_SCORE`), paired per test sentence,
each sentence's score averaged over the seeds both settings finished: the test sentences are the
independent units, and pooling seeds as separate pairs would count each sentence three times
(inflating n and understating p). Per-seed tests are in the JSON summary too.

Output: one markdown table per dataset, like the paper's (mean ± sample std over seeds, the
copy-the-source and shuffled-target bounds below), with the training and decoding time per run
of each setting.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from services.paraphrase.tokenization import decode as decode_text
from training.device import AUTO, CHOICES_HELP, resolve_device
from training.options import add_options, option, parse_options
from training.paraphrase.data import DATASETS, DEFAULT_DATA_DIR, load_pairs
from training.paraphrase.evaluate import (
    METRIC_KEYS,
    METRIC_LABELS,
    SENTENCE_SCORE,
    PairedTest,
    SentenceScores,
    bounds,
    evaluate,
    paired_test,
    sentence_scores,
)
from training.paraphrase.generate import encode_sources, greedy
from training.paraphrase.train import TrainingConfig, train

SETTINGS = ("ddl", "krl")  # the paper's comparison: supervised vs semi-supervised with KRL
BASELINE, CANDIDATE = "ddl", "krl"  # the Wilcoxon test's pair
RESULT_FILE = "result.json"
DECODE_CHUNK = 64  # sentences per greedy call (one progress-bar tick each)
SIGNIFICANCE = 0.05  # the paper's p threshold

_DEFAULTS = TrainingConfig()
_MODEL = _DEFAULTS.model


@dataclasses.dataclass(frozen=True)
class ExperimentOptions:
    """`facet paraphrase experiment`: the grid, the training budget of each run, the test sentences."""

    datasets: tuple[str, ...] = option(("quora",), choices=tuple(DATASETS), help="one table per dataset")
    fractions: tuple[float, ...] = option((0.1, 1.0), help="label fractions (the paper: 0.1, 0.2, 0.5, 1.0)")
    settings: tuple[str, ...] = option(
        SETTINGS, choices=SETTINGS, help="ddl (supervised) and krl (ddl, then ddl+vsar from its best checkpoint)"
    )
    seeds: tuple[int, ...] = option(
        (0, 1, 2), help="seeds of each (fraction, setting): the labelled pairs drawn, the initialisation, the batches"
    )
    limit: int = option(0, help="test sentences decoded per run (the first N; 0: the whole test split)")
    steps: int = option(_DEFAULTS.steps, help="optimiser steps per run (krl: its ddl stage's included)")
    krl_ddl_steps: int = option(_DEFAULTS.krl_ddl_steps, help="krl: steps of the ddl stage")
    batch_size: int = option(_DEFAULTS.batch_size, help="pairs (and unlabelled sources) per step")
    lr: float = option(_DEFAULTS.lr, help="Adam learning rate")
    prior_steps: int = option(_DEFAULTS.prior_steps, help="steps of the language-model prior (krl)")
    eval_every: int = option(_DEFAULTS.eval_every, help="steps between validation losses and checkpoints")
    warmup_steps: int = option(_DEFAULTS.warmup_steps, help="steps of linear learning-rate warm-up per stage")
    train_pairs: int = option(
        _DEFAULTS.train_pairs, help="> 0: only the first N deduplicated train pairs (quick trials); 0: all"
    )
    validation_pairs: int = option(_DEFAULTS.validation_pairs, help="pairs carved from train for model selection")
    max_length: int = option(_DEFAULTS.max_length, help="tokens of a sentence, [CLS]/[SEP] excluded (the paper: 20)")
    d_model: int = option(_MODEL.d_model, help="width of every layer")
    heads: int = option(_MODEL.heads)
    encoder_layers: int = option(_MODEL.encoder_layers)
    decoder_layers: int = option(_MODEL.decoder_layers)
    ff_dim: int = option(_MODEL.ff_dim, help="hidden width of the feed-forward blocks")
    prior_layers: int = option(_MODEL.prior_layers, help="blocks of the language-model prior")
    work_dir: Path = option(
        Path("paraphrase-experiment"), help="runs, checkpoints and results; the same dir resumes a killed grid"
    )
    data: Path = option(DEFAULT_DATA_DIR, help="the shared benchmark data (its paraphrase/ folder)")
    device: str = option(
        AUTO, help=f"where training and decoding run: {CHOICES_HELP} (not part of a run's config: a grid may mix them)"
    )
    json: Path | None = option(None, help="also write the summary (every run's metrics, the tests, the bounds) here")
    progress: bool = option(True, cli=False)
    extra: tuple[tuple[str, Any], ...] = option((), cli=False)  # other TrainingConfig fields (tests: a tiny model)

    def __post_init__(self) -> None:
        for name in ("datasets", "fractions", "settings", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ValueError(f"{name} must name at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has a value twice: {values}")
        for fraction in self.fractions:
            if not 0.0 < fraction <= 1.0:
                raise ValueError(f"fractions must be in (0, 1], got {fraction}")
        resolve_device(self.device)  # raises ValueError naming it
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0 (0: the whole test split), got {self.limit}")
        for setting in self.settings:
            self.config(
                self.datasets[0], self.fractions[0], setting, self.seeds[0]
            )  # raises ValueError naming a bad value

    def config(self, dataset: str, fraction: float, setting: str, seed: int) -> TrainingConfig:
        """The `TrainingConfig` of one run of the grid."""
        model = dataclasses.replace(
            _MODEL,
            d_model=self.d_model, heads=self.heads, encoder_layers=self.encoder_layers,
            decoder_layers=self.decoder_layers, ff_dim=self.ff_dim, prior_layers=self.prior_layers,
            max_positions=max(_MODEL.max_positions, self.max_length + 2),
        )  # fmt: skip
        values = dict(
            setting=setting, dataset=dataset, label_fraction=fraction, seed=seed, steps=self.steps,
            krl_ddl_steps=self.krl_ddl_steps, batch_size=self.batch_size, lr=self.lr, prior_steps=self.prior_steps,
            eval_every=self.eval_every, max_length=self.max_length, warmup_steps=self.warmup_steps,
            train_pairs=self.train_pairs, validation_pairs=self.validation_pairs,
        )  # fmt: skip
        return TrainingConfig(**{**values, **dict(self.extra), "model": model})


# -- one run -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run of the grid measured (its `result.json`).

    Attributes:
        dataset, fraction, setting, seed: the cell of the grid.
        config: the `TrainingConfig` as a dict.
        sentences: test sentences decoded.
        metrics: `evaluate.evaluate` of the greedy outputs (0-100).
        scores: per-sentence scores (`evaluate.sentence_scores`).
        outputs: the greedy paraphrase of each test sentence.
        train_s: wall-clock seconds of `train` (`TrainResult.time_s`: a resumed run counts its
            earlier sessions only as far as train records them).
        decode_s: wall-clock seconds of greedy decoding.
        best_valid_loss: the checkpoint kept (nats per token).
        device: where it was trained and decoded ("cpu", "cuda", ...).
    """

    dataset: str
    fraction: float
    setting: str
    seed: int
    config: dict[str, Any]
    sentences: int
    metrics: dict[str, float]
    scores: SentenceScores
    outputs: list[str]
    train_s: float
    decode_s: float
    best_valid_loss: float
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["scores"] = self.scores.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(**{**data, "scores": SentenceScores.from_dict(data["scores"])})


def run_dir(work_dir: Path, dataset: str, fraction: float, setting: str, seed: int) -> Path:
    """The folder of one run: `<work_dir>/<dataset>/labels-<fraction>/<setting>/seed-<seed>`."""
    return Path(work_dir) / dataset / f"labels-{fraction:g}" / setting.replace("+", "-") / f"seed-{seed}"


def load_test_split(dataset: str, data_dir: Path, limit: int) -> tuple[list[str], list[str]]:
    """Sources and references of the dataset's test split (the first `limit`; 0: all)."""
    pairs = load_pairs(dataset, "test", data_dir)
    if limit:
        pairs = pairs[:limit]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def decode(
    result: Any, sources: Sequence[str], max_length: int, progress: bool = True, desc: str = "decode"
) -> list[str]:
    """Greedy paraphrases (text) of `sources` by a `TrainResult`'s model, with its tokenizer."""
    tokenizer, model = result.tokenizer, result.model
    source_ids = encode_sources(tokenizer, sources, max_length)
    outputs: list[str] = []
    model.eval()
    with (
        torch.inference_mode(),
        tqdm(total=len(sources), desc=desc, unit="sentence", disable=not progress, leave=False) as bar,
    ):
        for start in range(0, len(source_ids), DECODE_CHUNK):
            chunk = source_ids[start : start + DECODE_CHUNK]
            outputs.extend(decode_text(tokenizer, ids) for ids in greedy(model, chunk, max_length))
            bar.update(len(chunk))
    return outputs


def run_one(
    options: ExperimentOptions,
    dataset: str,
    fraction: float,
    setting: str,
    seed: int,
    sources: Sequence[str],
    references: Sequence[str],
) -> tuple[RunResult, bool]:
    """One run: train (resuming), decode greedily, score; or its saved result when it finished before.

    Returns:
        the result, and whether it was computed now (False: read from its `result.json`).
    Raises:
        ValueError: the run's folder holds a result of another training config (use another
            work dir, or delete the folder).
    """
    config = options.config(dataset, fraction, setting, seed)
    folder = run_dir(options.work_dir, dataset, fraction, setting, seed)
    saved = folder / RESULT_FILE
    if saved.is_file():
        previous = RunResult.from_dict(json.loads(saved.read_text(encoding="utf-8")))
        if previous.config != config.to_dict():
            raise ValueError(
                f"{folder} holds a run with another training config; use another --work-dir or delete that folder"
            )
        if previous.sentences == len(sources):
            return previous, False
    label = f"{dataset} {fraction:g} {setting} seed {seed}"
    trained = train(config, folder / "train", options.data, progress=options.progress, resume=True, device=options.device)
    trained.model.to(resolve_device(options.device))
    started = time.perf_counter()
    outputs = decode(trained, sources, config.max_length, progress=options.progress, desc=f"{label}: decode")
    trained.model.to("cpu")
    decode_s = time.perf_counter() - started
    result = RunResult(
        dataset=dataset,
        fraction=fraction,
        setting=setting,
        seed=seed,
        config=config.to_dict(),
        sentences=len(sources),
        metrics=evaluate(outputs, sources, references),
        scores=sentence_scores(outputs, sources, references),
        outputs=outputs,
        train_s=float(trained.time_s),
        decode_s=decode_s,
        best_valid_loss=float(trained.best_valid_loss),
        device=str(resolve_device(options.device)),
    )
    folder.mkdir(parents=True, exist_ok=True)
    partial = saved.with_suffix(".json.partial")
    partial.write_text(json.dumps(result.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(saved)  # atomic: a killed run leaves no half-written result
    return result, True


# -- the grid ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetReport:
    """One dataset's runs, tests and bounds.

    Attributes:
        dataset: "quora" or "mscoco".
        sentences: test sentences every run decoded.
        runs: every run, in grid order (seed by seed; within a seed, fraction by fraction).
        tests: per label fraction, the Wilcoxon test of DDL vs KRL on seed-averaged sentence scores.
        seed_tests: per label fraction, the same test per seed.
        bounds: `evaluate.bounds` on the same test sentences.
    """

    dataset: str
    sentences: int
    runs: tuple[RunResult, ...]
    tests: dict[float, PairedTest]
    seed_tests: dict[float, dict[int, PairedTest]]
    bounds: dict[str, dict[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "sentences": self.sentences,
            "sentence_score": SENTENCE_SCORE,
            "runs": [{k: v for k, v in r.to_dict().items() if k not in ("outputs", "scores")} for r in self.runs],
            "tests": {f"{f:g}": t.to_dict() for f, t in self.tests.items()},
            "seed_tests": {
                f"{f:g}": {str(s): t.to_dict() for s, t in per.items()} for f, per in self.seed_tests.items()
            },
            "bounds": self.bounds,
        }


def compare(runs: Sequence[RunResult], fraction: float) -> tuple[PairedTest | None, dict[int, PairedTest]]:
    """The Wilcoxon tests of DDL vs KRL at one label fraction (None when a setting has no run).

    Pairs are test sentences; a sentence's score is its mean over the seeds both settings
    finished (module docstring). Per seed: one test per seed both finished."""
    by = {(r.setting, r.seed): r for r in runs if r.fraction == fraction}
    seeds = sorted(s for (setting, s) in by if setting == BASELINE and (CANDIDATE, s) in by)
    if not seeds:
        return None, {}
    per_seed = {s: paired_test(by[(BASELINE, s)].scores.bleu, by[(CANDIDATE, s)].scores.bleu) for s in seeds}
    baseline = np.mean([by[(BASELINE, s)].scores.bleu for s in seeds], axis=0)
    candidate = np.mean([by[(CANDIDATE, s)].scores.bleu for s in seeds], axis=0)
    return paired_test(baseline, candidate), per_seed


def run_dataset(options: ExperimentOptions, dataset: str) -> DatasetReport:
    """Every run of one dataset (finished ones read back), the tests and the bounds."""
    sources, references = load_test_split(dataset, options.data, options.limit)
    # seed-major: a grid stopped early has every cell of its first seeds (`--seeds 0` then prints that table)
    cells = [(f, s, seed) for seed in options.seeds for f in options.fractions for s in options.settings]
    runs: list[RunResult] = []
    with tqdm(total=len(cells), desc=f"{dataset} runs", unit="run", disable=not options.progress) as bar:
        for fraction, setting, seed in cells:
            result, fresh = run_one(options, dataset, fraction, setting, seed, sources, references)
            runs.append(result)
            if options.progress:
                verb = "trained" if fresh else "finished before"
                tqdm.write(
                    f"  {dataset} labels {fraction:g} {setting} seed {seed}: {verb}; BLEU-4 {result.metrics['bleu4']:.2f}, "
                    f"iBLEU {result.metrics['ibleu']:.2f} ({result.train_s:.0f} s training, {result.decode_s:.0f} s decoding)"
                )
            bar.update(1)
    tests: dict[float, PairedTest] = {}
    seed_tests: dict[float, dict[int, PairedTest]] = {}
    for fraction in options.fractions:
        pooled, per_seed = compare(runs, fraction)
        if pooled is not None:
            tests[fraction], seed_tests[fraction] = pooled, per_seed
    return DatasetReport(dataset, len(sources), tuple(runs), tests, seed_tests, bounds(sources, references))


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{float(np.mean(values)):.2f} ± {float(np.std(values, ddof=1)):.2f}"


def format_report(report: DatasetReport, keys: Sequence[str] = METRIC_KEYS) -> str:
    """The dataset's markdown table: per label fraction and setting, each metric's mean ± sample
    std over seeds, the time per run and the Wilcoxon p of KRL vs DDL; then the two bounds."""
    header = [
        "labels",
        "setting",
        "seeds",
        *(METRIC_LABELS[k] for k in keys),
        "train s / run",
        "decode s / run",
        "Wilcoxon p",
    ]
    devices = ", ".join(sorted({r.device for r in report.runs}))
    lines = [
        f"**{report.dataset}** (test: {report.sentences:,} sentences; greedy decoding; Wilcoxon on {SENTENCE_SCORE}, seed-averaged; * p < {SIGNIFICANCE}; trained on: {devices})",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---", "---:", *("---:" for _ in keys), "---:", "---:", "---:"]) + "|",
    ]
    fractions = sorted({r.fraction for r in report.runs})
    settings = [s for s in SETTINGS if any(r.setting == s for r in report.runs)]
    for fraction in fractions:
        for setting in settings:
            runs = [r for r in report.runs if r.fraction == fraction and r.setting == setting]
            if not runs:
                continue
            test = report.tests.get(fraction)
            p = ""
            if setting == CANDIDATE and test is not None:
                direction = "KRL better" if test.b_better else "DDL better" if test.mean_b < test.mean_a else "tied"
                star = "*" if test.p_value < SIGNIFICANCE else ""
                shown = f"{test.p_value:.3g}" if test.p_value > 0 else "< 1e-300"  # below float64's range
                p = f"{shown}{star} ({direction})"
            cells = [f"{fraction:.0%}", setting.upper(), str(len(runs))]
            cells += [_mean_std([r.metrics[k] for r in runs]) for k in keys]
            cells += [f"{np.mean([r.train_s for r in runs]):.0f}", f"{np.mean([r.decode_s for r in runs]):.0f}", p]
            lines.append("| " + " | ".join(cells) + " |")
    for name, label in (("copy_source", "copy-the-source"), ("shuffled_target", "shuffled-target")):
        metrics = report.bounds[name]
        lines.append("| " + " | ".join(["", label, "", *(f"{metrics[k]:.2f}" for k in keys), "", "", ""]) + " |")
    return "\n".join(lines)


def run_experiment(options: ExperimentOptions) -> list[DatasetReport]:
    """The whole grid, dataset by dataset (finished runs skipped)."""
    return [run_dataset(options, dataset) for dataset in options.datasets]


def main(argv: list[str] | None = None) -> int:
    """`facet paraphrase experiment [options]` (`--help` lists them).

    Returns:
        0 when the grid finished; 2 for bad options (argparse's message) or a work dir holding
        runs of other options.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="facet paraphrase experiment", description=__doc__.splitlines()[0])
    add_options(parser, ExperimentOptions)
    options, _ = parse_options(parser, ExperimentOptions, argv)
    started = time.perf_counter()
    try:
        reports = run_experiment(options)
    except ValueError as exc:
        print(f"facet paraphrase experiment: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        print()
        print(format_report(report))
    elapsed_s = time.perf_counter() - started
    print(
        f"\n{sum(len(r.runs) for r in reports)} runs in {elapsed_s:.0f} s (finished runs read back from {options.work_dir})"
    )
    if options.json is not None:
        payload: dict[str, Any] = {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()}
        }
        payload["datasets"] = [r.to_dict() for r in reports]
        payload["significance"] = SIGNIFICANCE
        options.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"summary written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
