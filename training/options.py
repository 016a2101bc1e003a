"""Command lines generated from frozen options dataclasses, so a build's options are declared once.

Each field of the dataclass becomes `--field-name` (underscores become dashes), typed by its
annotation, with its default from the dataclass and its help (and choices) from the field's
metadata, which `option` fills in:

    @dataclasses.dataclass(frozen=True)
    class BuildOptions:
        tokens: int = option(200_000, help="activations to cache")
        widths: tuple[int, ...] = option((1152, 2304), help="SAE widths")
        architecture: str = option("batchtopk", choices=("relu", "topk", "batchtopk"))
        progress: bool = option(True, cli=False)  # not a flag: for tests and library callers

    parser = argparse.ArgumentParser(prog="python -m training.sae.build")
    add_options(parser, BuildOptions)
    options, args = parse_options(parser, BuildOptions, argv)

Annotations understood: `int`, `float`, `str`, `bool` (`--flag` / `--no-flag`), `Path`,
`X | None` (default None: the flag is optional), and `tuple[int, ...]`, `tuple[float, ...]`,
`tuple[str, ...]` written comma-separated (`--widths 1152,2304`). A field without a default is a
required flag. A bad value, or a `ValueError` from the dataclass's `__post_init__`, ends the
command with argparse's usual one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the checkout


def known_fields(cls: type, data: typing.Mapping[str, Any]) -> dict[str, Any]:
    """`data` as keyword arguments of the dataclass `cls` (a config's `from_dict`).

    Raises:
        ValueError: a key that is not a field, e.g. "unknown TrainingConfig keys: colour".
    """
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    return dict(data)


class HasRepository(typing.Protocol):
    """Options with a `--repository` (a build's, a fine-tune's)."""

    @property
    def repository(self) -> Path | None: ...


def repository_root(options: HasRepository) -> Path:
    """`--repository`, else the configured model repository (`FACET_MODEL_REPOSITORY` / config file)."""
    if options.repository is not None:
        return Path(options.repository)
    from services.runtime.config import load_config

    return load_config().model_repository

HELP = "help"  # metadata keys of an options field
CHOICES = "choices"
CLI = "cli"  # False: the field has no flag (it keeps its default on the command line)

SCALARS: tuple[type, ...] = (int, float, str, Path)
ITEM_TYPES: tuple[type, ...] = (int, float, str)


def option(default: Any = dataclasses.MISSING, *, help: str = "", choices: Sequence[str] | None = None, cli: bool = True) -> Any:  # noqa: A002 - argparse's word
    """A dataclass field with its command-line help.

    Args:
        default: the field's default (leave it out for a required flag).
        help: one line for `--help`.
        choices: the values allowed (for a tuple field: for each item).
        cli: False leaves the field out of the command line.
    Returns:
        a `dataclasses.field` to assign to the annotated field.
    """
    metadata: dict[str, Any] = {HELP: help, CLI: cli}
    if choices is not None:
        metadata[CHOICES] = tuple(choices)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The flag of a field: `batch_tokens` -> `--batch-tokens`."""
    return "--" + name.replace("_", "-")


def cli_fields(options_type: type) -> list[dataclasses.Field[Any]]:
    """The fields of an options dataclass that have a flag, in declaration order."""
    return [f for f in dataclasses.fields(options_type) if f.init and f.metadata.get(CLI, True)]


def add_options(parser: argparse.ArgumentParser, options_type: type) -> None:
    """Add one flag per command-line field of `options_type` to `parser`.

    Raises:
        TypeError: a field's annotation is none of those the module docstring lists.
    """
    hints = typing.get_type_hints(options_type)
    for field in cli_fields(options_type):
        kind = _unwrap_optional(hints[field.name])
        choices: tuple[str, ...] | None = field.metadata.get(CHOICES)
        kwargs: dict[str, Any] = {"dest": field.name}
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required:
            kwargs["required"] = True
            default = None
        else:
            default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc,operator]
        help_text = field.metadata.get(HELP, "").replace("%", "%%")
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction  # its help shows the default itself
        elif _is_tuple(kind):
            kwargs["type"] = _comma_separated(typing.get_args(kind)[0], choices)
            if default is not None:
                default = ",".join(map(str, default))  # argparse passes a string default through `type`
        elif kind in SCALARS:
            kwargs["type"] = kind
            if choices is not None:
                kwargs["choices"] = [kind(c) for c in choices]
        else:
            raise TypeError(f"{options_type.__name__}.{field.name}: no command-line form for {kind!r}")
        if not required:
            kwargs["default"] = default
            if default is not None and kind is not bool:
                shown = str(default).replace("%", "%%")
                help_text = f"{help_text} (default: {shown})" if help_text else f"default: {shown}"
        kwargs["help"] = help_text or None
        parser.add_argument(flag(field.name), **kwargs)


def parse_options(parser: argparse.ArgumentParser, options_type: type[T], argv: Sequence[str] | None = None) -> tuple[T, argparse.Namespace]:
    """Parse `argv` with a parser that `add_options` filled, into `options_type`.

    Returns:
        the options, and the whole namespace (for the parser's other arguments, e.g. --repository).
    Raises:
        SystemExit: status 2 with a one-line message on a bad value, or when the dataclass's
            `__post_init__` raises ValueError (argparse's `parser.error`).
    """
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in cli_fields(options_type)}
    try:
        return options_type(**values), args
    except ValueError as exc:
        parser.error(str(exc))


def to_argv(options: Any) -> list[str]:
    """The flags that give `options` back through `parse_options` (fields at their default left out).

    Raises:
        ValueError: an optional field is None where its default is not (no flag says "None").
    """
    argv: list[str] = []
    for field in cli_fields(type(options)):
        value = getattr(options, field.name)
        if field.default is not dataclasses.MISSING and value == field.default:
            continue
        if isinstance(value, bool):
            argv.append(flag(field.name) if value else "--no-" + flag(field.name)[2:])
        elif value is None:
            raise ValueError(f"{field.name} is None: no flag gives None back")
        elif isinstance(value, tuple):
            argv += [flag(field.name), ",".join(map(str, value))]
        else:
            argv += [flag(field.name), str(value)]
    return argv


def _unwrap_optional(annotation: Any) -> Any:
    """X for `X | None`, else the annotation itself."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_tuple(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in ITEM_TYPES


def _comma_separated(item: type, choices: tuple[str, ...] | None) -> Callable[[str], tuple[Any, ...]]:
    """An argparse `type`: "a,b,c" -> (item("a"), item("b"), item("c"))."""

    def parse(text: str) -> tuple[Any, ...]:
        if not text.strip():
            return ()
        parts = [p.strip() for p in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item; write comma-separated values, e.g. a,b")
        try:
            values = tuple(item(p) for p in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {item.__name__}") from None
        if choices is not None:
            unknown = [p for p in parts if p not in choices]
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
        return values

    parse.__name__ = f"comma-separated {item.__name__}"
    return parse
