"""Inference backends behind one interface: `await backend.infer(model, inputs) -> outputs`."""

from services.backends.base import Backend, ModelMetadata

__all__ = ["Backend", "ModelMetadata", "create_backend"]


def create_backend(kind: str, config: "FacetConfig") -> Backend:  # type: ignore[name-defined] # noqa: F821
    """The backend named by configuration (only "onnxruntime" in this release)."""
    if kind == "onnxruntime":
        from services.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(config)
    raise ValueError(f"unknown backend '{kind}' (available: onnxruntime)")
