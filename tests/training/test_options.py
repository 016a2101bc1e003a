"""Command lines generated from options dataclasses: every flag round-trips, tuples are
comma-separated, bools are --flag/--no-flag, and a bad value ends with argparse's one-line error."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from training.options import add_options, option, parse_options, to_argv


@dataclasses.dataclass(frozen=True)
class Options:
    name: str = option(help="a required string")
    size: int = option(3, help="100% of it")
    rate: float = option(0.5)
    widths: tuple[int, ...] = option((8, 16), help="comma-separated widths")
    kinds: tuple[str, ...] = option(("a",), choices=("a", "b", "c"))
    mode: str = option("fast", choices=("fast", "slow"))
    shuffle: bool = option(True)
    out: Path | None = option(None, help="where")
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"size must be >= 0, got {self.size}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--repository", type=Path)
    add_options(parser, Options)
    return parser


def _parse(argv: list[str]) -> Options:
    return parse_options(_parser(), Options, argv)[0]


def test_defaults_come_from_the_dataclass() -> None:
    options, args = parse_options(_parser(), Options, ["--name", "x", "--repository", "/r"])
    assert options == Options(name="x")
    assert args.repository == Path("/r")


def test_round_trip_through_the_command_line() -> None:
    options = Options(name="n", size=7, rate=0.25, widths=(1, 2, 3), kinds=("b", "c"), mode="slow", shuffle=False, out=Path("/tmp/o"))
    argv = to_argv(options)
    assert "--no-shuffle" in argv and argv[argv.index("--widths") + 1] == "1,2,3"
    assert _parse(argv) == options
    assert to_argv(Options(name="n")) == ["--name", "n"]  # defaults are left out


def test_tuples_are_comma_separated_and_typed() -> None:
    options = _parse(["--name", "x", "--widths", "4, 5,6", "--kinds", "c,a"])
    assert options.widths == (4, 5, 6) and options.kinds == ("c", "a")


def test_bool_flags_and_fields_left_out_of_the_cli() -> None:
    assert _parse(["--name", "x", "--no-shuffle"]).shuffle is False
    assert _parse(["--name", "x", "--shuffle"]).shuffle is True
    help_text = _parser().format_help()
    assert "--progress" not in help_text
    assert "100% of it (default: 3)" in help_text and "(default: 8,16)" in help_text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "x", "--size", "big"], "argument --size: invalid int value: 'big'"),
        (["--name", "x", "--widths", "1,x"], "argument --widths: '1,x' is not a comma-separated list of int"),
        (["--name", "x", "--kinds", "a,z"], "argument --kinds: unknown z; choose from a, b, c"),
        (["--name", "x", "--mode", "warp"], "argument --mode: invalid choice: 'warp'"),
        (["--name", "x", "--size", "-1"], "size must be >= 0, got -1"),  # from __post_init__
        (["--name", "x", "--colour", "red"], "unrecognized arguments: --colour red"),
        ([], "the following arguments are required: --name"),
    ],
)
def test_a_bad_value_exits_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("tool: error: ") and message in last


def test_an_annotation_without_a_command_line_form_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class Bad:
        table: dict[str, int] = option(None)

    with pytest.raises(TypeError, match=r"Bad.table: no command-line form"):
        add_options(argparse.ArgumentParser(), Bad)
