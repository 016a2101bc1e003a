"""The model repository, in Triton's layout plus one Facet metadata file per version::

    <repo>/<model>/config.pbtxt              Triton model configuration
    <repo>/<model>/<version>/model.onnx      the model
    <repo>/<model>/<version>/facet.json      kind, source, tokenizer files, parity, metrics
    <repo>/<model>/<version>/<extra files>   e.g. tokenizer.json

ONNX Runtime in-process, Triton and Ray Serve all serve from this one directory. It sits below
`services` and `training` alike: builds write it, services read it. The top-level keys of
`facet.json` are `Key`; each capability names its model kinds and property keys in its
`services/<capability>/catalog.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METADATA_FILE = "facet.json"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"


class Key:
    """Top-level keys of `facet.json`."""

    KIND = "kind"  # what the model is, e.g. "embedding", "sae", "frame-model" (the capability's catalog names them)
    SOURCE = "source"  # where it comes from: a package, a checkpoint, or the build that trained it
    SOURCE_SHA256 = "source_sha256"  # sha256 of the source weights file, where there is one
    INPUTS = "inputs"  # [TensorSpec.to_dict()]
    OUTPUTS = "outputs"
    PARITY = "parity"  # the export's numerical check against PyTorch
    PROPERTIES = "properties"  # capability-specific facts (the capability's catalog names the keys)
    FILES = "files"  # key -> file name beside the model
    # int, optional: the longest extent the model accepts on any dynamic non-batch axis (e.g. its
    # learned positions); backends keep warm-up shapes within it. Absent: unbounded.
    MAX_SEQUENCE_LENGTH = "max_sequence_length"
    VERSION = "version"

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output. `shape` leaves out the batch axis; -1 is a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One servable version of a model in the repository."""

    name: str
    version: int
    path: Path  # the version directory
    metadata: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.metadata.get(Key.KIND, "unknown"))

    @property
    def properties(self) -> dict[str, Any]:
        """The capability-specific facts (`facet.json` "properties")."""
        return dict(self.metadata.get(Key.PROPERTIES, {}))

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(t) for t in self.metadata.get(Key.INPUTS, [])]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(t) for t in self.metadata.get(Key.OUTPUTS, [])]

    def file(self, key: str) -> Path:
        """Path of an extra file the metadata names under `files`, e.g. file("tokenizer")."""
        files = self.metadata.get(Key.FILES, {})
        if key not in files:
            raise KeyError(f"model {self.name} v{self.version} has no '{key}' file")
        return self.path / files[key]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, hex (read in 1 MiB chunks): `Key.SOURCE_SHA256` of a model's weights."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelRepository:
    """Reads and writes a model repository directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        found = []
        for p in model_dir.iterdir():
            if p.is_dir() and p.name.isdigit() and (p / METADATA_FILE).is_file() and (p / MODEL_FILE).is_file():
                found.append(int(p.name))
        return sorted(found)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The given version, or the newest one. Raises LookupError when there is none."""
        versions = self.versions(name)
        if not versions:
            raise LookupError(f"model '{name}' is not in the model repository {self.root}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise LookupError(f"model '{name}' has no version {chosen} (has {versions})")
        path = self.root / name / str(chosen)
        metadata = json.loads((path / METADATA_FILE).read_text())
        return ModelVersion(name=name, version=chosen, path=path, metadata=metadata)

    def has(self, name: str) -> bool:
        return bool(self.versions(name))

    def register(
        self,
        name: str,
        model_file: Path,
        metadata: Mapping[str, Any],
        *,
        extra_files: Mapping[str, Path] | None = None,
        max_batch_size: int = 64,
        max_queue_delay_microseconds: int = 2000,
    ) -> ModelVersion:
        """Copy a model and its files in as the next version; write config.pbtxt.

        `extra_files` maps a key (recorded in metadata["files"]) to a file to copy, or to a
        directory, copied with its contents (e.g. a saved sentence-transformers model).
        The version directory is filled under a temporary name and renamed into
        place, so readers never see a half-written version.
        """
        versions = self.versions(name)
        version = versions[-1] + 1 if versions else 1
        model_dir = self.root / name
        staging = model_dir / f".staging-{version}-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        shutil.copyfile(model_file, staging / MODEL_FILE)
        files = {}
        for key, src in (extra_files or {}).items():
            if Path(src).is_dir():
                shutil.copytree(src, staging / src.name)
            else:
                shutil.copyfile(src, staging / src.name)
            files[key] = src.name
        meta = dict(metadata)
        meta[Key.FILES] = files
        meta[Key.VERSION] = version
        (staging / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        staging.rename(model_dir / str(version))
        entry = self.get(name, version)
        from services.backends.triton_config import model_config

        (model_dir / CONFIG_FILE).write_text(
            model_config(entry, max_batch_size=max_batch_size, max_queue_delay_microseconds=max_queue_delay_microseconds)
        )
        return entry

    def update_metadata(self, name: str, version: int, **fields: Any) -> ModelVersion:
        entry = self.get(name, version)
        meta = {**entry.metadata, **fields}
        tmp = entry.path / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tmp.replace(entry.path / METADATA_FILE)
        return self.get(name, version)
