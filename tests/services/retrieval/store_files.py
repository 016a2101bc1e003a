"""Where a DocumentStore keeps a collection's saved index, for tests that damage or inspect it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def manifest(data_dir: Path, collection: str) -> dict[str, Any]:
    """The manifest of `collection`'s saved index under the store's `data_dir`."""
    result: dict[str, Any] = json.loads((data_dir / "indexes" / f"{collection}.json").read_text())
    return result


def saved_index_file(data_dir: Path, collection: str) -> Path:
    """The data file the manifest of `collection`'s saved index names."""
    return data_dir / "indexes" / str(manifest(data_dir, collection)["file"])
