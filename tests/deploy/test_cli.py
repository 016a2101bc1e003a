"""The `facet` command is built from the registry: every capability's commands exist, unknown
capabilities are refused with the ones that exist, and each forwarding command reaches its module."""

from __future__ import annotations

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
    assert "unknown services ['bogus']; available: ['sae', 'nextframe', 'retrieval']" in capsys.readouterr().err


@pytest.mark.parametrize("services", ["", ",", "sae,"])
def test_an_empty_service_name_is_refused_not_read_as_every_service(services: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "build", "--services", services]) == 2
    assert "names an empty service" in capsys.readouterr().err


def test_a_forwarding_command_hands_its_arguments_to_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["nextframe", "build", "--help"])
    assert exit_info.value.code == 0 and "--base-channels" in capsys.readouterr().out
