"""ONNX export of what the SAE service runs, each checked against PyTorch.

- the LM prefix: embeddings through block `layer`, input_ids/attention_mask [batch, seq] ->
  resid [batch, seq, d_model] (the forward pass stops at the hooked layer);
- an SAE encoder: x [n, d_in] -> latents [n, d_sae] (batch-independent: BatchTopK uses its
  estimated threshold), and its decoder: latents [n, d_sae] -> x̂ [n, d_in];
- a meta-SAE encoder (the same module, on unit decoder rows).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.onnx_export import cpu_session, export_module
from training.sae.activations import LanguageModel, ResidualStream
from training.sae.model import Sae


class _Prefix(torch.nn.Module):
    def __init__(self, stream: ResidualStream) -> None:
        super().__init__()
        self.stream = stream

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.stream(input_ids, attention_mask)


class _Encoder(torch.nn.Module):
    def __init__(self, sae: Sae) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sae.encode(x)


class _Decoder(torch.nn.Module):
    def __init__(self, sae: Sae) -> None:
        super().__init__()
        self.sae = sae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.sae.decode(latents)


@dataclasses.dataclass(frozen=True)
class Exported:
    path: Path
    inputs: list[dict[str, Any]]  # TensorSpec dicts (batch axis left out)
    outputs: list[dict[str, Any]]
    parity: dict[str, float]


def export_lm_prefix(lm: LanguageModel, layer: int, path: Path, parity_ids: torch.Tensor) -> Exported:
    """`lm` is truncated in place (use a fresh load). Parity: max error relative to the
    largest residual value, on `parity_ids` [batch, seq] of real text."""
    stream = ResidualStream(lm, layer)
    ids = parity_ids[:1, :8]
    export_module(
        _Prefix(stream), (ids, torch.ones_like(ids)), path, ["input_ids", "attention_mask"], ["resid"],
        {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "resid": {0: "batch", 1: "seq"}},
    )  # fmt: skip
    expected = stream(parity_ids, torch.ones_like(parity_ids)).numpy()
    got = cpu_session(path).run(None, {"input_ids": parity_ids.numpy().astype(np.int64), "attention_mask": np.ones(parity_ids.shape, np.int64)})[0]
    parity = {"max_relative_error": float(np.abs(got - expected).max() / np.abs(expected).max()), "tokens": int(parity_ids.numel())}
    return Exported(
        path,
        [{"name": "input_ids", "dtype": "int64", "shape": [-1]}, {"name": "attention_mask", "dtype": "int64", "shape": [-1]}],
        [{"name": "resid", "dtype": "float32", "shape": [-1, lm.d_model]}],
        parity,
    )


@torch.no_grad()
def export_sae(sae: Sae, encoder_path: Path, decoder_path: Path, parity_rows: torch.Tensor) -> tuple[Exported, Exported]:
    """Encoder and decoder. Parity on real rows: the reconstruction through both ONNX models
    vs PyTorch (error relative to the input norm), and the share of latents whose on/off
    state differs (only pre-activations within float error of a threshold can flip)."""
    sae.eval()
    d_in, d_sae = sae.config.d_in, sae.config.d_sae
    export_module(_Encoder(sae), (parity_rows[:2],), encoder_path, ["x"], ["latents"], {"x": {0: "n"}, "latents": {0: "n"}})
    export_module(_Decoder(sae), (torch.zeros(2, d_sae),), decoder_path, ["latents"], ["reconstruction"], {"latents": {0: "n"}, "reconstruction": {0: "n"}})
    x = parity_rows.numpy()
    latents = cpu_session(encoder_path).run(None, {"x": x})[0]
    recon = cpu_session(decoder_path).run(None, {"latents": latents})[0]
    expected_latents = sae.encode(parity_rows)
    expected = sae.decode(expected_latents).numpy()
    error = np.linalg.norm(recon - expected, axis=1) / np.linalg.norm(x, axis=1)
    flips = float(((latents > 0) != (expected_latents.numpy() > 0)).mean())
    parity = {"max_relative_error": float(error.max()), "active_flip_share": flips, "rows": len(x)}
    encoder = Exported(
        encoder_path, [{"name": "x", "dtype": "float32", "shape": [d_in]}], [{"name": "latents", "dtype": "float32", "shape": [d_sae]}], parity
    )
    decoder = Exported(
        decoder_path,
        [{"name": "latents", "dtype": "float32", "shape": [d_sae]}],
        [{"name": "reconstruction", "dtype": "float32", "shape": [d_in]}],
        parity,
    )
    return encoder, decoder
