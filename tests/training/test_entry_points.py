"""What the capability registry names in `training` is there with the shape its callers use:
`build_defaults(repository, work_dir, benchmark_data=None)`, `has_defaults(repository)`, and a
`main(argv)` per `facet` command, whose --help answers without starting Ray or loading a model."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import registry
from services.model_repository import ModelRepository

TRAINING_COMMANDS = sorted({c.module for row in registry.CAPABILITIES for c in row.commands if c.module.startswith("training.")})
TRAIN_MODULES = sorted({row.train_module for row in registry.CAPABILITIES if row.train_module})
# runs a module's --help as `python -m` would, then lists the heavy modules it imported
HELP_PROBE = """
import runpy, sys, json
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("ray", "transformers", "sentence_transformers", "onnxruntime") if m in sys.modules)}))
"""


@pytest.mark.parametrize("capability", registry.names())
def test_build_and_has_defaults_have_the_registry_signatures(capability: str, tmp_path: Path) -> None:
    row = registry.get(capability)
    build_defaults = registry.load(row.build_defaults)
    parameters = inspect.signature(build_defaults).parameters
    assert list(parameters) == ["repository", "work_dir", "benchmark_data"] and parameters["benchmark_data"].default is None
    has_defaults = registry.load(row.has_defaults)
    assert list(inspect.signature(has_defaults).parameters) == ["repository"]
    assert has_defaults(ModelRepository(tmp_path)) is False  # an empty repository needs its defaults built


@pytest.mark.parametrize("module", TRAINING_COMMANDS)
def test_every_training_command_takes_argv(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    main = importlib.import_module(module).main
    assert list(inspect.signature(main).parameters) == ["argv"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("module", TRAIN_MODULES)
def test_the_train_module_answers_help_without_starting_anything(module: str) -> None:
    done = subprocess.run([sys.executable, "-c", HELP_PROBE, module], capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": []}, done.stderr
    assert "--repository" in done.stdout and "--work-dir" in done.stdout and "--device" in done.stdout
