"""Contracts sit below their users: `sdk` <- `services` <- `training` <- `deploy` (the composition
root), with `load` (locust scenarios, benchmarks, the fuzzer) beside it on top. Every import in
the packages is read (ast, top level and function bodies alike) and an edge against that
direction fails here, with the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACET_PACKAGES = ("sdk", "services", "training", "deploy", "load")
# what each package may import of Facet (itself included)
ALLOWED = {
    "sdk": {"sdk"},
    "services": {"sdk", "services"},
    "training": {"sdk", "services", "training"},
    "deploy": {"sdk", "services", "training", "deploy"},  # `facet load` names load.cli as a string
    "load": {"sdk", "services", "training", "deploy", "load"},
}


def facet_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level Facet package) of every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, name.split(".")[0]) for name in names if name.split(".")[0] in FACET_PACKAGES]
    return found


def _sources(package: str) -> list[Path]:
    return [p for p in sorted((ROOT / package).rglob("*.py")) if "_proto" not in p.parts]


@pytest.mark.parametrize("package", FACET_PACKAGES)
def test_imports_point_down_the_layers(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in _sources(package)
        for line, target in facet_imports(path)
        if target not in ALLOWED[package]
    ]
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_the_checker_sees_a_wrong_edge(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from deploy.cli import main\n    import training.sae.build\n")
    assert facet_imports(module) == [(2, "deploy"), (3, "training")]
