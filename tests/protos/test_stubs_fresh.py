"""The committed gRPC stubs match what the protos generate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("facet_protos_generate", REPO_ROOT / "protos" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    written = _generator().generate(tmp_path)
    committed_root = REPO_ROOT / "sdk" / "_proto"
    stale = []
    for path in written:
        rel = path.relative_to(tmp_path)
        committed = committed_root / rel
        if not committed.exists() or committed.read_text() != path.read_text():
            stale.append(str(rel))
    assert not stale, f"stale generated stubs {stale}: run `make protos` and commit the result"


def test_every_proto_has_stubs() -> None:
    protos = sorted(p.stem for p in (REPO_ROOT / "protos" / "facet" / "v1").glob("*.proto"))
    stubs = sorted(p.name.removesuffix("_pb2.py") for p in (REPO_ROOT / "sdk" / "_proto" / "facet" / "v1").glob("*_pb2.py"))
    assert protos == stubs
