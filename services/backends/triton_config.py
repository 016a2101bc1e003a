"""Triton model configurations (`config.pbtxt`) read from each ONNX graph.

Every version registered in the model repository gets one (`ModelRepository.register`): platform
`onnxruntime_onnx` for the official Triton image (GPU or CPU), dims read from the graph. The local
CPU server (`deploy.triton`) writes the same configuration with `backend: "python"`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.model_repository import ModelVersion

_ONNX_TO_TRITON = {
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(double)": "TYPE_FP64",
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(uint8)": "TYPE_UINT8",
    "tensor(int8)": "TYPE_INT8",
    "tensor(bool)": "TYPE_BOOL",
}


# where Triton runs a model's instances: "gpu" for the official image on a GPU node
INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclasses.dataclass(frozen=True)
class GraphTensor:
    name: str
    data_type: str  # Triton's TYPE_*
    shape: tuple[int, ...]  # -1 for a dynamic axis, batch axis included


def graph_tensors(model_file: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """Inputs and outputs as the ONNX graph declares them (the source of truth for dims)."""
    from services.backends.onnx_session import create_session

    session = create_session(model_file, providers="cpu", optimize=False)  # the graph as written

    def convert(args: Sequence[Any]) -> list[GraphTensor]:
        out = []
        for a in args:
            if a.type not in _ONNX_TO_TRITON:
                raise ValueError(f"{model_file}: tensor '{a.name}' has type {a.type}, which Triton configs here do not map")
            out.append(GraphTensor(a.name, _ONNX_TO_TRITON[a.type], tuple(d if isinstance(d, int) and d > 0 else -1 for d in a.shape)))
        return out

    return convert(session.get_inputs()), convert(session.get_outputs())


def model_config(
    entry: ModelVersion,
    *,
    backend: str = "onnxruntime",
    max_batch_size: int = 64,
    max_queue_delay_microseconds: int = 2000,
    instance_count: int = 1,
    instance_kind: str = "cpu",
    parameters: dict[str, str] | None = None,
) -> str:
    """`config.pbtxt` for one model. backend "onnxruntime": `platform: "onnxruntime_onnx"`, for
    Triton's ONNX Runtime backend (GPU images); "python": the local CPU server's wrapper.

    A model whose every tensor has a dynamic first axis is batched (`max_batch_size`, dims without
    that axis, `dynamic_batching`); a per-row scalar output becomes dims [1] reshaped to []."""
    if backend not in ("onnxruntime", "python"):
        raise ValueError(f"backend must be 'onnxruntime' or 'python', got {backend!r}")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind must be one of {', '.join(INSTANCE_KINDS)}, got {instance_kind!r}")
    inputs, outputs = graph_tensors(entry.model_file)
    batched = all(t.shape and t.shape[0] == -1 for t in (*inputs, *outputs))
    lines = [f'name: "{entry.name}"', 'backend: "python"' if backend == "python" else 'platform: "onnxruntime_onnx"']
    lines.append(f"max_batch_size: {max_batch_size if batched else 0}")
    for kind, tensors in (("input", inputs), ("output", outputs)):
        for t in tensors:
            dims = list(t.shape[1:] if batched else t.shape)
            lines += [f"{kind} [", "  {", f'    name: "{t.name}"', f"    data_type: {t.data_type}"]
            if dims:
                lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
                if kind == "input" and backend == "python" and batched and -1 in dims:
                    # requests of different lengths batch together; the wrapper pads them
                    lines.append("    allow_ragged_batch: true")
            else:  # a scalar per row (or a scalar model output): Triton wants non-empty dims
                lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
            lines += ["  }", "]"]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {max_queue_delay_microseconds}", "}"]
    lines += ["instance_group [", "  {", f"    count: {instance_count}", f"    kind: {INSTANCE_KINDS[instance_kind]}", "  }", "]"]
    lines.append("version_policy: { latest: { num_versions: 1 } }")
    for key, value in sorted((parameters or {}).items()):
        lines.append(f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"
