"""Inference backends behind one interface: `await backend.infer(model, inputs) -> outputs`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.backends.base import Backend, ModelMetadata

if TYPE_CHECKING:
    from services.runtime.config import FacetConfig

__all__ = ["BACKENDS", "Backend", "ModelMetadata", "create_backend"]

BACKENDS = ("onnxruntime",)


def create_backend(kind: str, config: FacetConfig) -> Backend:
    """The backend named by configuration ("onnxruntime": in-process, the default)."""
    if kind == "onnxruntime":
        from services.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(config)
    raise ValueError(f"unknown backend '{kind}' (available: {', '.join(BACKENDS)})")
