"""Build an SAE family with everything the SAE service serves, into the model repository.

    python -m training.sae.build [--tokens 200000] [--widths 1152,2304,4608] [--k 32] [--layer 15]

(`facet models build` runs it with the defaults.) Steps, each with a progress bar:
 1. cache residual-stream activations of SmolLM2-135M (or --lm DIR) on the Wikipedia corpus;
 2. train the family (one pass over the cache per epoch, every width on the same batches);
 3. metrics on held-out tokens: MSE, FVU about the mean, L0, dead share, and the downstream
    cross-entropy with each reconstruction spliced into the LM on held-out paragraphs;
 4. a meta-SAE on the largest SAE's decoder; stitching of every smaller/larger pair;
 5. top-activating contexts of every latent and meta-latent; output-token explanations;
 6. ONNX export (LM prefix, encoders, decoders, meta encoder) with parity checks, and
    registration in the model repository with SAELens-format weights beside each SAE.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.model_repository import Key, ModelRepository, ModelVersion
from services.sae.catalog import File, Kind, Prop, analysis_is_current
from training.device import CHOICES_HELP, ray_use_gpu, resolve_device
from training.options import add_options, option, parse_options
from training.sae import analysis
from training.sae.activations import (
    ActivationCache,
    LanguageModel,
    cache_activations,
    load_language_model,
    sae_tokenizer,
    token_contexts,
)
from training.sae.config import ARCHITECTURES, SaeConfig
from training.sae.corpus import CORPUS_NAME, wikipedia_paragraphs
from training.sae.export import export_lm_prefix, export_sae
from training.sae.meta_sae import train_meta_sae, unit_decoder_rows
from training.sae.saelens_format import CONFIG_FILE, WEIGHTS_FILE, save_saelens
from training.sae.stitching import plot_swap_curve, stitch
from training.sae.train import TrainingConfig, evaluate, split_cache, train_family

log = logging.getLogger(__name__)

HELD_OUT_PARAGRAPHS = 200  # the corpus's last paragraphs: never cached, used for the CE metric
CE_CONTEXTS = 32
TOP_K_STORED = 16
ANALYSIS_FILE = "analysis.npz"
# an encoder has no next-token loss: its CE metrics are NaN
NO_CROSS_ENTROPY = dict.fromkeys(("ce_clean", "ce_with_sae", "ce_zero_ablation", "ce_increase", "ce_loss_recovered"), float("nan"))
META_FILE = "meta.npz"


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What `build` trains and how; each field is also a flag of `python -m training.sae.build`."""

    layer: int = option(15, help="residual stream after this many blocks")
    tokens: int = option(200_000, help="activations to cache (and seen per epoch)")
    epochs: int = option(3)
    widths: tuple[int, ...] = option((1152, 2304, 4608), help="comma-separated SAE widths (d_sae); 2x, 4x, 8x SmolLM2's d_model")
    architecture: str = option("batchtopk", choices=ARCHITECTURES)
    k: int = option(32, help="active latents per token (topk, batchtopk)")
    # many small steps: with few tokens, steps matter more than batch size
    batch_tokens: int = option(1024, help="activations per training step")
    lr: float = option(1e-3)
    ray_workers: int = option(0, help="train on Ray Train with N data-parallel workers (0: in this process)")
    context_tokens: int = option(128, help="tokens per cached context")
    lm: Path | None = option(None, help="a local Hugging Face causal LM or encoder directory (default SmolLM2-135M)")
    work_dir: Path | None = option(None, help="keep the activation cache (and the LM checkpoint) here between builds")
    ce_contexts: int = option(CE_CONTEXTS, help="held-out contexts of the downstream cross-entropy metric")
    device: str = option("auto", help=f"where the LM caches activations and the SAEs train: {CHOICES_HELP}")
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be one or more positive SAE widths, got {self.widths}")
        resolve_device(self.device)  # a bad or unavailable device fails here, not after caching
        if self.ray_workers:
            ray_use_gpu(self.device)

    @property
    def base_name(self) -> str:
        return f"{'smollm2-135m' if self.lm is None else _slug(self.lm.name)}-l{self.layer}"

    def sae_name(self, width: int) -> str:
        return f"{self.base_name}-{self.architecture}-w{width}"

    def decoder_name(self, width: int) -> str:
        return self.sae_name(width) + "-decoder"

    @property
    def meta_name(self) -> str:
        """The meta-SAE, trained on the largest SAE's decoder."""
        return self.sae_name(max(self.widths)) + "-meta"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def prefix_model_name(options: BuildOptions) -> str:
    return f"{options.base_name}-prefix"


def default_model_names(options: BuildOptions | None = None) -> list[str]:
    """Every model a build with `options` (default: the default family) registers, the LM prefix first."""
    options = options or BuildOptions()
    names = [prefix_model_name(options)]
    for w in options.widths:
        names += [options.sae_name(w), options.decoder_name(w)]
    return [*names, options.meta_name]


def has_defaults(repository: ModelRepository) -> bool:
    """Whether `facet models build` has no SAE family to build.

    Args:
        repository: the model repository.
    Returns:
        True when the default family is complete (and its analysis files have the current
        format: older ones are rebuilt), or when the repository holds other SAEs and no
        part of the default family (someone built their own); False when it has no SAE at all, or
        a default family that an interrupted build left incomplete.
    """
    names = default_model_names()
    if all(repository.has(name) for name in names):
        # a family whose analysis files predate the current format is rebuilt, not served stale
        return all(
            analysis_is_current(entry.file(File.ANALYSIS))
            for entry in map(repository.get, names)
            if File.ANALYSIS in entry.metadata.get(Key.FILES, {})
        )
    has_saes = any(repository.get(name).kind == Kind.SAE for name in repository.models())
    return has_saes and not any(repository.has(name) for name in names[1:])


def build_defaults(repository: ModelRepository, work_dir: Path, benchmark_data: Path | None = None) -> list[ModelVersion]:
    """Build the default SAE family (`BuildOptions()`) unless `has_defaults`.

    Args:
        repository: the model repository to register into.
        work_dir: keeps the activation cache and the LM checkpoint between builds
            (e.g. `<data_dir>/sae-build`), so an interrupted build resumes quickly.
        benchmark_data: unused: the SAE build reads its own corpus.
    Returns:
        the versions registered (the LM prefix, each SAE and its decoder, the meta-SAE); [] when
        nothing was missing.
    Raises:
        RuntimeError, OSError: as `build`.
    """
    if has_defaults(repository):
        return []
    return build(repository, BuildOptions(work_dir=work_dir))


def _load_lm(options: BuildOptions, work: Path) -> LanguageModel:
    """The LM on the CPU (the analyses and the export run there)."""
    return load_language_model(options.lm, checkpoint_cache=None if options.lm else work / "lm")


def _held_out_contexts(lm: LanguageModel, options: BuildOptions, n: int) -> torch.Tensor:
    paragraphs = list(wikipedia_paragraphs())[-HELD_OUT_PARAGRAPHS:]
    chunks = token_contexts(sae_tokenizer(lm), paragraphs, options.context_tokens, lm.tokenizer.eos_token_id)
    contexts = [c.ids for _, c in zip(range(n), chunks, strict=False)]
    return torch.tensor(np.stack(contexts), dtype=torch.long)


def _cache(options: BuildOptions, work: Path, device: torch.device) -> ActivationCache:
    # v2: contexts keep their text and token spans; special tokens are not cached
    directory = work / f"acts-v2-l{options.layer}-{options.tokens}-{options.context_tokens}"
    if (directory / "manifest.json").is_file():
        return ActivationCache(directory)
    if directory.exists():
        shutil.rmtree(directory)
    lm = _load_lm(options, work)
    paragraphs = list(wikipedia_paragraphs())[:-HELD_OUT_PARAGRAPHS]
    tmp = directory.with_name(directory.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    cache_activations(lm, options.layer, paragraphs, tmp, tokens=options.tokens, corpus=CORPUS_NAME,
                      context_tokens=options.context_tokens, progress=options.progress, device=device)  # fmt: skip
    tmp.rename(directory)
    return ActivationCache(directory)


def _save_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return path


def build(repo: ModelRepository, options: BuildOptions = BuildOptions()) -> list[ModelVersion]:  # noqa: B008 - frozen
    """Build and register the family (the steps of the module docstring).

    Args:
        repo: the model repository to register into.
        options: what to train; `options.device` runs the activation caching and the training
            (the analyses and the ONNX exports with their parity checks run on the CPU).
    Returns:
        the registered versions: the LM prefix, then each SAE's decoder and encoder (smallest
        first), then the meta-SAE.
    Raises:
        RuntimeError: training on Ray failed.
        ValueError: the LM has fewer than `options.layer` blocks.
    """
    started = time.monotonic()
    device = resolve_device(options.device)
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="facet-sae-"))
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        timings[name] = round(time.monotonic() - t0, 1)
        return time.monotonic()

    t = time.monotonic()
    cache = _cache(options, work, device)
    manifest = cache.manifest
    t = lap("activations_s", t)

    configs = [SaeConfig(options.architecture, manifest.d_model, w, k=options.k) for w in sorted(options.widths)]
    training = TrainingConfig(tokens=options.tokens * options.epochs, batch_tokens=options.batch_tokens, lr=options.lr)
    if options.ray_workers:  # data-parallel on Ray Train (local Ray, or the cluster RAY_ADDRESS names)
        from training.sae.ray_job import train_family_on_ray

        state, _ = train_family_on_ray(cache.directory, configs, training, work / "ray", num_workers=options.ray_workers,
                                       use_gpu=ray_use_gpu(options.device))  # fmt: skip
        saes = state.saes
        train_rows, _ = split_cache(cache, training.eval_fraction)
        held_rows = cache.all()[train_rows:]
        metrics = [evaluate(s.eval(), held_rows.split(training.batch_tokens)) for s in saes]
    else:
        saes, metrics = train_family(cache, configs, training, progress=options.progress, device=device)
    t = lap("training_s", t)

    lm = _load_lm(options, work)
    ce_ids = _held_out_contexts(lm, options, options.ce_contexts)
    ce = analysis.downstream_cross_entropy(lm, options.layer, [s.eval().reconstruct for s in saes], ce_ids,
                                           special_ids=sae_tokenizer(lm).special_ids) if lm.causal else None  # fmt: skip
    t = lap("cross_entropy_s", t)

    largest = saes[-1]
    meta = train_meta_sae(largest, progress=options.progress, device=device)
    t = lap("meta_sae_s", t)

    data = cache.all()
    train_rows, _ = split_cache(cache, training.eval_fraction)
    held = data[train_rows:]
    stitchings = {(i, j): stitch(saes[i], saes[j], held) for i in range(len(saes)) for j in range(i + 1, len(saes))}
    t = lap("stitching_s", t)

    where, texts = cache.where(), cache.context_texts()
    contexts = [texts.get(c) for c in range(len(texts.ids))]
    tops = [analysis.mine_top_activations(s.encode, data, where, contexts, TOP_K_STORED, progress=options.progress) for s in saes]
    codes = meta.meta.encode(unit_decoder_rows(largest)).detach()  # [d_sae, d_meta]
    meta_acts = analysis.meta_activations(largest, codes)
    meta_top = analysis.mine_top_activations(meta_acts, data, where, contexts, TOP_K_STORED, progress=options.progress)
    outputs = [analysis.top_output_tokens(lm, s.W_dec.detach()) for s in saes]
    meta_outputs = analysis.top_output_tokens(lm, meta.meta.W_dec.detach())
    t = lap("explanations_s", t)

    out = work / "export"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    tokenizer_file = out / "tokenizer.json"
    lm.tokenizer.backend_tokenizer.save(str(tokenizer_file))
    prefix = export_lm_prefix(_load_lm(options, work), options.layer, out / "prefix.onnx", ce_ids[:2, :64])
    common = {
        Prop.BASE_MODEL: manifest.model,
        Prop.LAYER: options.layer,
        Prop.HOOK: "resid_post",
        Prop.D_IN: manifest.d_model,
        Prop.CORPUS: manifest.corpus,
        Prop.FAMILY: f"{options.base_name}-{options.architecture}-k{options.k}",
        Prop.LM_MODEL: prefix_model_name(options),
    }
    registered = [
        repo.register(
            prefix_model_name(options),
            prefix.path,
            {Key.KIND: Kind.LM_RESIDUAL, Key.SOURCE: manifest.model, Key.INPUTS: prefix.inputs, Key.OUTPUTS: prefix.outputs,
             Key.PARITY: prefix.parity, Key.PROPERTIES: {**common, Prop.D_MODEL: manifest.d_model, Prop.VOCAB_SIZE: len(lm.tokenizer)}},
            extra_files={File.TOKENIZER: tokenizer_file},
            max_batch_size=8,
        )  # fmt: skip
    ]
    sample = held[:1024]
    for i, (sae, m) in enumerate(zip(saes, metrics, strict=True)):
        name = options.sae_name(sae.config.d_sae)
        encoder, decoder = export_sae(sae, out / f"{name}-encoder.onnx", out / f"{name}-decoder.onnx", sample)
        weights_dir = out / f"{name}-saelens"
        save_saelens(sae, weights_dir, {"model_name": manifest.model, "hook_name": f"blocks.{options.layer - 1}.hook_resid_post"})
        files = {File.WEIGHTS: weights_dir / WEIGHTS_FILE, File.SAELENS_CONFIG: weights_dir / CONFIG_FILE}
        top, (out_ids, out_scores) = tops[i], outputs[i]
        files[File.ANALYSIS] = _save_npz(out / f"{name}-{ANALYSIS_FILE}", **top.arrays(), output_ids=out_ids, output_scores=out_scores,
                                         context_before=analysis.CONTEXT_BEFORE)  # fmt: skip
        for (a, b), result in stitchings.items():
            if b == i:
                small = options.sae_name(saes[a].config.d_sae)
                files[File.STITCHING + small] = _save_npz(
                    out / f"{name}-stitching-{small}.npz", max_cosine=result.max_cosine, nearest=result.nearest,
                    delta_mse=result.delta_mse, swap_mse=result.swap_mse, thresholds=np.array(list(result.novel_share)),
                    shares=np.array(list(result.novel_share.values())), small_mse=result.small_mse, large_mse=result.large_mse,
                    threshold=result.threshold, tokens=len(held),
                )  # fmt: skip
                files[File.SWAP_CURVE + small] = plot_swap_curve(result, out / f"{name}-swap-curve-{small}.png", small, name)
        properties = {
            **common,
            Prop.WIDTH: sae.config.d_sae,
            Prop.ARCHITECTURE: sae.config.architecture,
            Prop.K: sae.config.k,
            Prop.TRAINING_TOKENS: training.steps * training.batch_tokens,
            Prop.METRICS: {**m.to_dict(), **(ce.for_sae(i) if ce else NO_CROSS_ENTROPY), "held_out_tokens": len(held),
                           "ce_tokens": ce.tokens if ce else 0},  # fmt: skip
            Prop.TOP_ACTIVATIONS_STORED: TOP_K_STORED,
            Prop.DECODER_MODEL: options.decoder_name(sae.config.d_sae),
        }
        if sae is largest:
            properties.update({Prop.META_MODEL: options.meta_name, Prop.META_WIDTH: meta.meta.config.d_sae,
                               Prop.META_VARIANCE_EXPLAINED: meta.variance_explained, Prop.META_MEAN_ACTIVE: meta.mean_active})  # fmt: skip
        registered.append(
            repo.register(options.decoder_name(sae.config.d_sae), decoder.path, {Key.KIND: Kind.SAE_DECODER, Key.SOURCE: name,
                          Key.INPUTS: decoder.inputs, Key.OUTPUTS: decoder.outputs, Key.PARITY: decoder.parity,
                          Key.PROPERTIES: {Prop.SAE: name}})  # fmt: skip
        )
        registered.append(
            repo.register(name, encoder.path, {Key.KIND: Kind.SAE, Key.SOURCE: f"trained by training.sae.build on {manifest.corpus}",
                          Key.INPUTS: encoder.inputs, Key.OUTPUTS: encoder.outputs, Key.PARITY: encoder.parity,
                          Key.PROPERTIES: properties}, extra_files=files)  # fmt: skip
        )
    name = options.sae_name(largest.config.d_sae)
    meta_encoder, _ = export_sae(meta.meta, out / f"{name}-meta-encoder.onnx", out / f"{name}-meta-decoder.onnx", unit_decoder_rows(largest)[:512])
    meta_file = _save_npz(out / f"{name}-{META_FILE}", codes=codes.numpy(), meta_decoder=meta.meta.W_dec.detach().numpy(),
                          meta_bias=meta.meta.b_dec.detach().numpy(),
                          **meta_top.arrays(),
                          output_ids=meta_outputs[0], output_scores=meta_outputs[1],
                          context_before=analysis.CONTEXT_BEFORE)  # fmt: skip
    timings["total_s"] = round(time.monotonic() - started, 1)
    registered.append(
        repo.register(options.meta_name, meta_encoder.path, {Key.KIND: Kind.META_SAE, Key.SOURCE: f"meta-SAE on the decoder of {name}",
                      Key.INPUTS: meta_encoder.inputs, Key.OUTPUTS: meta_encoder.outputs, Key.PARITY: meta_encoder.parity,
                      Key.PROPERTIES: {Prop.SAE: name, Prop.WIDTH: meta.meta.config.d_sae, Prop.K: meta.meta.config.k,
                                       "variance_explained": meta.variance_explained, "mean_active": meta.mean_active,
                                       "build_timings": timings, "cache_tokens": manifest.token_count,
                                       "dropped_massive_tokens": manifest.dropped_massive_tokens}},
                      extra_files={File.ANALYSIS: meta_file})  # fmt: skip
    )
    log.info("SAE build took %s", json.dumps(timings))
    if options.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return registered


def main(argv: list[str] | None = None) -> int:
    """`facet sae build`: build a family into the model repository and print what was registered."""
    parser = argparse.ArgumentParser(prog="facet sae build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, help="model repository (default: the configured one)")
    add_options(parser, BuildOptions)
    options, args = parse_options(parser, BuildOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.repository is None:
        from services.runtime.config import load_config

        args.repository = load_config().model_repository
    for entry in build(ModelRepository(args.repository), options):
        print(f"{entry.name} v{entry.version} ({entry.kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
