"""`--help` of every training command (`facet ...` and `python -m training.<capability>.ray_job`)
states what the command does in whole sentences: argparse's description must not stop mid-sentence
(as `__doc__.splitlines()[0]` did where the module docstring's first sentence wraps onto a second line)."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from services import registry

MODULES = sorted(
    {c.module for row in registry.CAPABILITIES for c in row.commands if c.module.startswith("training.")}
    | {row.train_module for row in registry.CAPABILITIES if row.train_module}
)


@pytest.mark.parametrize("module", MODULES)
def test_the_help_description_is_whole_sentences(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shown: list[str] = []
    format_help = argparse.ArgumentParser.format_help

    def recording(parser: argparse.ArgumentParser) -> str:
        shown.append(parser.description or "")
        return format_help(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "format_help", recording)
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0 and shown and shown[-1].strip(), f"{module}: no description"
    # prose paragraphs (not the indented example commands) end a sentence
    for paragraph in re.split(r"\n\s*\n", shown[-1].strip()):
        if not paragraph.startswith(" "):
            assert re.search(r"[.:!?][)`'\"]*$", " ".join(paragraph.split())), f"{module}: cut description: {paragraph!r}"
