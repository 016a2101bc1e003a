"""Inference backends behind one interface: `await backend.infer(model, inputs) -> outputs`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.backends.base import Backend, ModelMetadata

if TYPE_CHECKING:
    from services.runtime.config import FacetConfig

__all__ = ["BACKENDS", "Backend", "ModelMetadata", "create_backend"]

BACKENDS = ("onnxruntime", "triton", "ray")


def create_backend(config: FacetConfig) -> Backend:
    """The backend the configuration names (`backend`, FACET_BACKEND): "onnxruntime" runs models
    in this process (the default), "triton" calls a Triton Inference Server at `triton.url`, "ray"
    calls Ray Serve deployments on the Ray cluster at `ray.address`."""
    if config.backend == "onnxruntime":
        from services.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(config)
    if config.backend == "triton":
        from services.backends.triton import TritonBackend

        return TritonBackend(config)
    if config.backend == "ray":
        from services.backends.ray_serve import RayServeBackend

        return RayServeBackend(config)
    raise ValueError(f"unknown backend '{config.backend}' (available: {', '.join(BACKENDS)})")
