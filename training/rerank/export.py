"""Export a trained cross-encoder to ONNX, check its parity, and register it.

The graph is the contract of `services.rerank.catalog`: inputs `input_ids`, `attention_mask`,
`token_type_ids` (int64 [batch, seq], both axes dynamic), output `logits` (float32 [batch, 1]).
Before anything is registered, two parity checks run on real pairs (RAR-b dev pairs and Quora test
pairs), tokenized by the very `tokenizer.json` that is stored for the service:

- ONNX Runtime (CPU provider) against the PyTorch model: max |logit difference| <= 1e-4;
- ONNX Runtime against `sentence_transformers.CrossEncoder(directory).predict` on the saved
  directory (Identity activation, so it returns logits): max |difference| <= 1e-4.

Both results go into the model's metadata (`Key.PARITY`). The stored files: `tokenizer.json`
(`File.TOKENIZER`: MiniLM's WordPiece with the pair template `[CLS] $A [SEP] $B:1 [SEP]:1`,
truncation longest-first at the model's max length, no padding) and the CrossEncoder directory
(`File.CROSS_ENCODER`).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec, file_sha256
from services.rerank.catalog import File, Kind, Prop, Tensor
from training.rerank.model import load_cross_encoder, quiet_transformers

log = logging.getLogger(__name__)

PARITY_MAX_ABS = 1e-4  # issue #14: max |logit difference| on real pairs
CROSS_ENCODER_DIR = "cross-encoder"  # the CrossEncoder directory's name beside model.onnx
TOKENIZER_FILE = "tokenizer.json"
INPUTS = (Tensor.INPUT_IDS, Tensor.ATTENTION_MASK, Tensor.TOKEN_TYPE_IDS)


class _LogitsModule(torch.nn.Module):
    """The exported graph: the three int64 inputs -> logits float32 [batch, 1]."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        logits: torch.Tensor = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits
        return logits


def export_onnx(model: torch.nn.Module, onnx_file: Path) -> Path:
    """Write `model` (a `BertForSequenceClassification`, num_labels=1) as ONNX (opset 17) with dynamic batch and sequence axes."""
    module = _LogitsModule(model.eval()).eval()
    example = tuple(torch.ones(2, 8, dtype=torch.int64) for _ in INPUTS)
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on attention-mask branches: the parity check covers them
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(onnx_file),
            input_names=list(INPUTS),
            output_names=[Tensor.LOGITS],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in INPUTS}, Tensor.LOGITS: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return onnx_file


def write_tokenizer(cross_encoder_dir: Path, max_length: int, out_file: Path) -> Path:
    """The service's `tokenizer.json`: the CrossEncoder's tokenizer, truncation longest-first at
    `max_length`, no padding (the pair template comes with MiniLM's tokenizer).

    Raises:
        ValueError: the tokenizer has no pair template with token type 1 for the document.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(cross_encoder_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    if tokenizer.encode("q", "d").type_ids[-1] != 1:
        raise ValueError(f"{cross_encoder_dir}: the tokenizer's pair template does not give the document token type 1")
    tokenizer.save(str(out_file))
    return out_file


def tokenize_pairs(tokenizer_file: Path, pairs: Sequence[tuple[str, str]]) -> dict[str, np.ndarray]:
    """`pairs` through `tokenizer_file` (as the service tokenizes), right-padded: int64 [pairs, longest]."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    encodings = tokenizer.encode_batch(list(pairs))
    width = max(len(e.ids) for e in encodings)
    out = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in INPUTS}
    for i, e in enumerate(encodings):
        n = len(e.ids)
        out[Tensor.INPUT_IDS][i, :n] = e.ids
        out[Tensor.ATTENTION_MASK][i, :n] = e.attention_mask
        out[Tensor.TOKEN_TYPE_IDS][i, :n] = e.type_ids
    return out


def parity_check(cross_encoder_dir: Path, onnx_file: Path, tokenizer_file: Path, pairs: Sequence[tuple[str, str]],
                 batch_size: int = 32) -> dict[str, Any]:  # fmt: skip
    """ONNX Runtime logits against PyTorch's and against `CrossEncoder.predict`'s on `pairs`.

    Args:
        cross_encoder_dir: the saved CrossEncoder directory.
        onnx_file: its export.
        tokenizer_file: the service's tokenizer.json.
        pairs: real (query, document) pairs.
        batch_size: pairs per batch (padding inside a batch is part of what is checked).
    Returns:
        {"pairs", "max_abs_diff_torch", "max_abs_diff_cross_encoder", "threshold", "reference", "passed"}.
    """
    from sentence_transformers import CrossEncoder

    from services.backends.onnx_session import create_session

    model = load_cross_encoder(cross_encoder_dir)
    session = create_session(
        onnx_file, providers="cpu"
    )  # the references run on the CPU: the check measures the export alone
    onnx_logits, torch_logits = [], []
    for start in range(0, len(pairs), batch_size):
        feed = tokenize_pairs(tokenizer_file, pairs[start : start + batch_size])
        onnx_logits.append(session.run([Tensor.LOGITS], feed)[0][:, 0])
        with torch.no_grad():
            torch_logits.append(model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits[:, 0].numpy())
    ours = np.concatenate(onnx_logits)
    with quiet_transformers():
        cross_encoder = CrossEncoder(str(cross_encoder_dir), device="cpu", local_files_only=True)
        predicted = np.asarray(
            cross_encoder.predict(list(pairs), batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True)
        )
    diff_torch = float(np.max(np.abs(ours - np.concatenate(torch_logits))))
    diff_ce = float(np.max(np.abs(ours - predicted.reshape(-1))))
    return {
        "pairs": len(pairs),
        "max_abs_diff_torch": diff_torch,
        "max_abs_diff_cross_encoder": diff_ce,
        "threshold": PARITY_MAX_ABS,
        "reference": "PyTorch BertForSequenceClassification logits and sentence-transformers CrossEncoder.predict (Identity activation)",
        "passed": bool(diff_torch <= PARITY_MAX_ABS and diff_ce <= PARITY_MAX_ABS),
    }


def export_cross_encoder(
    cross_encoder_dir: Path,
    repository: ModelRepository,
    *,
    name: str,
    properties: Mapping[str, Any],
    parity_pairs: Sequence[tuple[str, str]],
    source: str,
) -> ModelVersion:
    """Export, check parity, and register a saved CrossEncoder directory as the next version of `name`.

    Args:
        cross_encoder_dir: from `training.rerank.model.save_cross_encoder`.
        repository: the model repository.
        name: the model's name there.
        properties: `facet.json` "properties" (`Prop.*`); `Prop.MAX_SEQ_LENGTH` is required.
        parity_pairs: real (query, document) pairs for the parity checks.
        source: what built it (stored as `Key.SOURCE`).
    Returns:
        the registered version (kind `Kind.CROSS_ENCODER`, files `File.TOKENIZER` and `File.CROSS_ENCODER`).
    Raises:
        RuntimeError: a parity check failed (nothing is registered then).
        KeyError: `properties` has no `Prop.MAX_SEQ_LENGTH`.
    """
    cross_encoder_dir = Path(cross_encoder_dir)
    max_length = int(properties[Prop.MAX_SEQ_LENGTH])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_file = export_onnx(load_cross_encoder(cross_encoder_dir), work / "model.onnx")
        tokenizer_file = write_tokenizer(cross_encoder_dir, max_length, work / TOKENIZER_FILE)
        parity = parity_check(cross_encoder_dir, onnx_file, tokenizer_file, parity_pairs)
        log.info("parity on %d pairs: %s", len(parity_pairs), parity)
        if not parity["passed"]:
            raise RuntimeError(
                f"ONNX export of {cross_encoder_dir} failed its parity check: max |logit difference| "
                f"{parity['max_abs_diff_torch']:.2e} vs PyTorch, {parity['max_abs_diff_cross_encoder']:.2e} vs CrossEncoder.predict "
                f"(limit {PARITY_MAX_ABS:.0e})"
            )
        staged = work / CROSS_ENCODER_DIR
        import shutil

        shutil.copytree(cross_encoder_dir, staged)
        weights = staged / "model.safetensors"
        metadata = {
            Key.KIND: Kind.CROSS_ENCODER,
            Key.SOURCE: source,
            Key.SOURCE_SHA256: file_sha256(weights) if weights.is_file() else None,
            Key.INPUTS: [TensorSpec(n, "int64", (-1,)).to_dict() for n in INPUTS],
            Key.OUTPUTS: [TensorSpec(Tensor.LOGITS, "float32", (1,)).to_dict()],
            Key.PROPERTIES: dict(properties),
            Key.PARITY: parity,
        }
        return repository.register(
            name, onnx_file, metadata, extra_files={File.TOKENIZER: tokenizer_file, File.CROSS_ENCODER: staged}
        )
