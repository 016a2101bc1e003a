"""The SDK installs alone: `sdk/pyproject.toml` builds a wheel of the package `sdk` and nothing else."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
# What setuptools writes into the folder it builds (both git-ignored). A stale build/lib would
# leak modules deleted since into the next wheel, so they are removed before and after.
BUILD_ARTEFACTS = ("build", "*.egg-info")


def _remove_build_artefacts() -> None:
    for pattern in BUILD_ARTEFACTS:
        for path in SDK_DIR.glob(pattern):
            shutil.rmtree(path)


def _source_files() -> set[Path]:
    return {p.relative_to(SDK_DIR) for p in SDK_DIR.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    _remove_build_artefacts()
    before = _source_files()
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--quiet",
                str(SDK_DIR),
                "-w",
                str(out),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        written = {p.parts[0] for p in _source_files() - before}
        assert all(any(Path(name).match(pattern) for pattern in BUILD_ARTEFACTS) for name in written), written
    finally:
        _remove_build_artefacts()
    assert _source_files() == before
    (path,) = out.glob("facet_sdk-0.1.0-*.whl")
    yield path


def test_the_wheel_holds_the_package_sdk_and_nothing_else(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert all(n.startswith(("sdk/", "facet_sdk-0.1.0.dist-info/")) for n in names), names
    modules = {n for n in names if n.startswith("sdk/") and n.endswith(".py") and not n.startswith("sdk/_proto/")}
    assert modules == {f"sdk/{p.name}" for p in SDK_DIR.glob("*.py")}  # every module, none left over
    for stub in ("common", "retrieval", "sae", "nextframe"):
        assert f"sdk/_proto/facet/v1/{stub}_pb2.py" in names
        assert f"sdk/_proto/facet/v1/{stub}_pb2.pyi" in names
        assert f"sdk/_proto/facet/v1/{stub}_pb2_grpc.py" in names
    assert "sdk/py.typed" in names


def test_the_wheel_needs_only_grpcio_protobuf_and_numpy(wheel: Path) -> None:
    metadata = Parser().parsestr(zipfile.ZipFile(wheel).read("facet_sdk-0.1.0.dist-info/METADATA").decode())
    assert metadata["Name"] == "facet-sdk" and metadata["Requires-Python"] == ">=3.11"
    requires = {}
    for line in metadata.get_all("Requires-Dist") or []:
        name, specifiers = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", line).groups()  # type: ignore[union-attr]
        requires[name] = set(specifiers.replace(" ", "").split(","))
    assert requires == {"grpcio": {">=1.76.0", "<2"}, "protobuf": {">=6.31.1", "<7"}, "numpy": {">=1.26"}}


def test_the_unpacked_wheel_imports_alone(wheel: Path, tmp_path: Path) -> None:
    """Imported from the wheel's files only (not this checkout), the SDK works without services."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import sys, sdk; from sdk._proto.facet.v1 import sae_pb2_grpc; "
        "print(sdk.__file__); print(sdk.Client().address('sae')); print('services' in sys.modules)"
    )
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    file, address, services = out.stdout.split()
    assert Path(file).is_relative_to(site) and address == "localhost:50051" and services == "False"
