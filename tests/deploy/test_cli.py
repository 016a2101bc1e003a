"""The `facet` command is built from the registry: every capability's commands exist, unknown
capabilities are refused with the ones that exist, and each forwarding command reaches its module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import build_parser, forwarded_commands, main
from services import registry


def test_every_capability_command_is_a_facet_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for command in forwarded_commands():
        argv = [command.group, *([command.name] if command.name else []), "--anything"]
        args, _ = parser.parse_known_args(argv)
        assert (args.module, args.prefix) == (command.module, list(command.prefix)), argv
    top = parser.format_help()
    for row in registry.CAPABILITIES:
        if any(c.group == row.name for c in row.commands):
            assert row.summary in " ".join(top.split())


@pytest.mark.parametrize("argv", [["models", "build", "--services", "sae,bogus"], ["up", "--services", "bogus"]])
def test_unknown_services_exit_2_naming_the_available_ones(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert f"unknown services ['bogus']; available: {registry.names()}" in capsys.readouterr().err


@pytest.mark.parametrize("services", ["", ",", "sae,"])
def test_an_empty_service_name_is_refused_not_read_as_every_service(services: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "build", "--services", services]) == 2
    assert "names an empty service" in capsys.readouterr().err


def _words(command: registry.Command) -> list[str]:
    return [command.group, *([command.name] if command.name else [])]


@pytest.mark.parametrize("command", forwarded_commands(), ids=lambda c: " ".join(_words(c)))
def test_a_forwarded_module_shows_its_facet_command(command: registry.Command, capsys: pytest.CaptureFixture[str]) -> None:
    """`facet sae build --help` is the module's own help, under the name the user typed (not
    `python -m training.sae.build`)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*_words(command), "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.startswith(f"usage: facet {' '.join(_words(command))} "), out[:200]


# (command, an option of its module with a value the module's parser refuses)
BAD_VALUES = [
    (["sae", "build"], ["--widths", "wide"], "--widths"),
    (["nextframe", "build"], ["--base-channels", "many"], "--base-channels"),
    (["nextframe", "train"], ["--data", "d", "--out", "o", "--steps", "ten"], "--steps"),
    (["data", "simulate"], ["pendulum", "--out", "o", "--videos", "two"], "--videos"),
    (["triton", "serve"], ["--grpc-port", "high"], "--grpc-port"),
    (["eval", "rarb-mcr"], ["--limit", "all"], "--limit"),
]


@pytest.mark.parametrize(("command", "options", "flag"), BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_an_option_reaches_the_forwarded_module(command: list[str], options: list[str], flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The module's own parser sees the option and its value: a value it cannot read ends the
    command with its usage error naming the option (exit 2), before any work."""
    with pytest.raises(SystemExit) as exit_info:
        main([*command, *options])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"usage: facet {' '.join(command)} ") and f"argument {flag}" in err, err


@pytest.mark.parametrize(
    "options",
    [
        ["pendulum", "--videos", "2", "--frames", "6", "--seed", "3", "--out", "{out}"],
        ["--videos", "2", "--frames", "6", "--seed", "3", "--out", "{out}", "pendulum"],  # options first
        ["--out={out}", "--videos=2", "--frames=6", "--seed=3", "pendulum"],
    ],
    ids=["positional-first", "options-first", "equals-form"],
)
def test_options_take_effect_in_the_forwarded_module(options: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`facet data simulate ...` in any argument order: the dataset written has the videos,
    frames and seed that were asked for."""
    out = tmp_path / "pendulum"
    assert main(["data", "simulate", *(o.replace("{out}", str(out)) for o in options)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["dataset"], sum(manifest["videos"].values()), manifest["frames"], manifest["seed"]) == ("pendulum", 2, 6, 3)
    assert "pendulum: " in capsys.readouterr().out
