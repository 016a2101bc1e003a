"""`facet paraphrase experiment` on a tiny grid (2 label fractions x DDL/KRL x 1 seed, a few steps
of a 32-wide model on 300 real Quora pairs, 20 test sentences): one result per run, the table, the
Wilcoxon test between the settings, the outputs being the greedy decoding of each run's best
checkpoint, and a grid started again skipping (or resuming) what finished."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from training.paraphrase import experiment
from training.paraphrase.data import load_pairs
from training.paraphrase.experiment import (
    RESULT_FILE,
    DatasetReport,
    ExperimentOptions,
    format_report,
    main,
    run_dir,
    run_experiment,
)
from training.paraphrase.generate import encode_sources, greedy
from training.paraphrase.train import load_checkpoint

FRACTIONS = (0.5, 1.0)
TINY = {
    "fractions": FRACTIONS, "settings": ("ddl", "krl"), "seeds": (0,), "limit": 20,
    "steps": 4, "krl_ddl_steps": 2, "batch_size": 16, "prior_steps": 2, "eval_every": 2, "warmup_steps": 1,
    "train_pairs": 300, "validation_pairs": 50,
    "d_model": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 64, "prior_layers": 1,
}  # fmt: skip


def tiny_argv(work_dir: Path) -> list[str]:
    argv = ["--work-dir", str(work_dir)]
    for name, value in TINY.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        argv += ["--" + name.replace("_", "-"), text]
    return argv


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentOptions, DatasetReport]:
    torch.set_num_threads(1)
    options = ExperimentOptions(**TINY, work_dir=tmp_path_factory.mktemp("experiment"), progress=False)  # type: ignore[arg-type]
    (report,) = run_experiment(options)
    return options, report


def saved(options: ExperimentOptions, fraction: float, setting: str, seed: int = 0) -> dict[str, Any]:
    path = run_dir(options.work_dir, "quora", fraction, setting, seed) / RESULT_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_run_writes_its_result(grid: tuple[ExperimentOptions, DatasetReport]) -> None:
    options, report = grid
    assert [(r.fraction, r.setting, r.seed) for r in report.runs] == [
        (f, s, 0) for f in FRACTIONS for s in ("ddl", "krl")
    ]
    sources = [p[0] for p in load_pairs("quora", "test")[:20]]
    for run in report.runs:
        result = saved(options, run.fraction, run.setting)
        assert result["config"]["setting"] == run.setting and result["config"]["label_fraction"] == run.fraction
        assert result["sentences"] == 20 and len(result["outputs"]) == 20
        assert len(result["scores"]["bleu"]) == 20
        assert result["train_s"] > 0
        assert result["metrics"] == run.metrics
    assert report.sentences == 20 and len(sources) == 20


def test_outputs_are_the_greedy_decoding_of_the_best_checkpoint(grid: tuple[ExperimentOptions, DatasetReport]) -> None:
    options, _ = grid
    folder = run_dir(options.work_dir, "quora", 1.0, "krl", 0)
    model, tokenizer, config = load_checkpoint(folder / "train" / "model.safetensors")
    sources = [p[0] for p in load_pairs("quora", "test")[:20]]
    with torch.inference_mode():
        ids = greedy(model.eval(), encode_sources(tokenizer, sources, config.max_length), config.max_length)
    assert saved(options, 1.0, "krl")["outputs"] == [tokenizer.decode(i) for i in ids]


def test_the_table_has_a_row_per_fraction_and_setting_and_the_bounds(
    grid: tuple[ExperimentOptions, DatasetReport],
) -> None:
    options, report = grid
    table = format_report(report)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| labels")]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| 50%", "DDL"], ["| 50%", "KRL"], ["| 100%", "DDL"], ["| 100%", "KRL"], ["| ", "copy-the-source"], ["| ", "shuffled-target"],
    ]  # fmt: skip
    bleu4 = saved(options, 0.5, "krl")["metrics"]["bleu4"]
    assert rows[1].split(" | ")[6] == f"{bleu4:.2f}"  # labels, setting, seeds, BLEU-1..3, BLEU-4
    assert rows[4].split(" | ")[8] == "100.00"  # label, setting, seeds, BLEU-1..4, sacreBLEU, self-BLEU
    # a p below float64's range (thousands of test sentences, one setting far ahead) reads as a bound, not "0"
    tiny_p = {f: dataclasses.replace(t, p_value=0.0, mean_b=t.mean_a - 1.0) for f, t in report.tests.items()}
    krl_row = format_report(dataclasses.replace(report, tests=tiny_p)).splitlines()[5]
    assert krl_row.startswith("| 50% | KRL") and krl_row.endswith("| < 1e-300* (DDL better) |")


def test_wilcoxon_pairs_ddl_and_krl_per_test_sentence(grid: tuple[ExperimentOptions, DatasetReport]) -> None:
    options, report = grid
    for fraction in FRACTIONS:
        ddl = np.array(saved(options, fraction, "ddl")["scores"]["bleu"])
        krl = np.array(saved(options, fraction, "krl")["scores"]["bleu"])
        test = report.tests[fraction]
        assert test.pairs == 20 and test.nonzero == int(np.count_nonzero(krl - ddl))
        expected = float(wilcoxon(krl, ddl).pvalue) if test.nonzero else 1.0
        assert test.p_value == pytest.approx(expected)


def test_a_second_call_skips_finished_runs(
    grid: tuple[ExperimentOptions, DatasetReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    options, report = grid

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment, "train", no_training)
    (again,) = run_experiment(options)
    assert [r.to_dict() for r in again.runs] == [r.to_dict() for r in report.runs]


def test_a_killed_grid_redoes_only_the_unfinished_run(
    grid: tuple[ExperimentOptions, DatasetReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    options, report = grid
    path = run_dir(options.work_dir, "quora", 0.5, "ddl", 0) / RESULT_FILE
    before = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()  # killed after training, before its result was written
    calls: list[float] = []
    real_train: Callable[..., Any] = experiment.train

    def counting(config: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(config.label_fraction)
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(experiment, "train", counting)
    run_experiment(options)
    assert calls == [0.5]
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["outputs"] == before["outputs"] and after["metrics"] == before["metrics"]


def test_a_work_dir_of_other_options_is_refused(grid: tuple[ExperimentOptions, DatasetReport]) -> None:
    options, _ = grid
    with pytest.raises(ValueError, match="another training config"):
        run_experiment(dataclasses.replace(options, steps=6))


def test_the_command_prints_the_table_and_writes_the_summary(
    grid: tuple[ExperimentOptions, DatasetReport], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options, report = grid
    summary = tmp_path / "summary.json"
    assert main([*tiny_argv(options.work_dir), "--json", str(summary)]) == 0  # every run finished: read back
    out = capsys.readouterr().out
    assert out.count("| 50% | DDL |") == 1 and "| copy-the-source |" in out
    payload = json.loads(summary.read_text(encoding="utf-8"))
    (dataset,) = payload["datasets"]
    assert dataset["dataset"] == "quora" and len(dataset["runs"]) == 4
    assert dataset["tests"]["0.5"]["p_value"] == pytest.approx(report.tests[0.5].p_value)
    assert main([*tiny_argv(options.work_dir), "--steps", "6"]) == 2
    assert "another training config" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # a device torch cannot use here: argparse's message, before any run
        main([*tiny_argv(options.work_dir), "--device", "cuda:99"])
    assert exited.value.code == 2 and "cuda:99" in capsys.readouterr().err
