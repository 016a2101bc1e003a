"""Result types returned by the SDK."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Hit:
    """One search result. `score` is a similarity (cosine, dot) or a squared distance (l2)."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any]
    vector: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Collection:
    name: str
    metric: str  # "cosine" | "dot" | "l2"
    index_type: str  # "flat" | "hnsw"
    dimension: int
    document_count: int
    hnsw_m: int = 0  # HNSW collections: graph degree
    hnsw_ef_search: int = 0  # HNSW collections: search breadth


@dataclasses.dataclass(frozen=True)
class UpsertResult:
    upserted: int
    created: int  # ids that did not exist before


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    name: str
    version: int
    kind: str
    source: str
    properties: dict[str, str]
