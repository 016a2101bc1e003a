"""Generate the Python gRPC stubs for Facet's protos into `sdk/_proto/`.

Usage: python protos/generate.py [--out DIR]

The stubs are committed; `tests/test_protos.py` fails when they are stale. protoc
writes imports as `from facet.v1 import x_pb2`; they are rewritten to
`sdk._proto.facet.v1` so the one copy is importable by both `sdk` and `services`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
STUB_PACKAGE = "sdk._proto"
DEFAULT_OUT = REPO_ROOT / "sdk" / "_proto"
_IMPORT = re.compile(r"^from facet\.v1 import ", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.glob("facet/**/*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Write `*_pb2.py`, `*_pb2.pyi` and `*_pb2_grpc.py` under `out_dir`; return them."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed: " + " ".join(args))
        written = []
        for src in sorted(Path(tmp).rglob("*.py*")):
            rel = src.relative_to(tmp)
            dst = out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(_IMPORT.sub(f"from {STUB_PACKAGE}.facet.v1 import ", src.read_text()))
            written.append(dst)
        for pkg in {p.parent for p in written} | {out_dir / "facet"}:
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text("")
                written.append(init)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    out = parser.parse_args().out
    if out == DEFAULT_OUT and (out / "facet").exists():
        shutil.rmtree(out / "facet")
    for path in generate(out):
        print(path.relative_to(out.parent) if out == DEFAULT_OUT else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
