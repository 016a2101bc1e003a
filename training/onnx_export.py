"""The one way training code writes and reads ONNX files: the legacy TorchScript exporter at a
fixed opset (it handles the HF models and the U-Net alike), and an ONNX Runtime session on the CPU
provider (`services.backends.onnx_session`), which the exports' parity checks compare with PyTorch
on the CPU, whatever device trained the model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

OPSET = 17


def export_module(
    module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], outputs: list[str], axes: dict[str, dict[int, str]]
) -> None:
    """Trace `module` on `args` in eval mode and write it to `path` with the given dynamic axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python scalars in HF code
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def cpu_session(path: Path, threads: int = 2) -> Any:
    """An ONNX Runtime session on `path` on the CPU provider, with `threads` intra-op threads."""
    from services.backends.onnx_session import create_session

    return create_session(path, providers="cpu", intra_op_num_threads=threads)
