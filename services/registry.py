"""The server half of Facet's capability registry: one row per capability.

The light half, what a client needs (name, gRPC service name, default port), is
`sdk._contract.CAPABILITIES`; a row here has the same name and adds what running, building and
training the capability takes. Everything is a "module:attr" string, imported only when used
(`load`), so the launcher, the CLI and the config loader never import a capability they do not
run, and this module imports nothing of `training` or `deploy`. Every part of Facet that loops over
capabilities loops over `CAPABILITIES`: the launcher (`facet up`), `facet models build`,
`facet train`, the CLI's capability commands, the demo, the config sections, the test fixtures;
tests check the Dockerfile's EXPOSE and the Helm values against it.

Adding a capability `x` (as SAELens registers an architecture, or KServe a model server):
a row in `sdk._contract.CAPABILITIES` and one here; `protos/facet/v1/x.proto`; `services/x/`
(`__main__.py`, `servicer.py`, `config.py`, `demo.py`); `training/x/` (`build.py` with
`build_defaults` and `has_defaults`); the SDK module `sdk/_x.py` and its mixins in `sdk/_client.py`;
`tests/**/x/`; its README section and its Helm values entry.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from sdk._contract import CAPABILITIES as CONTRACTS
from sdk._contract import Capability


@dataclasses.dataclass(frozen=True)
class Command:
    """A `facet <group> <name> ...` command that hands its arguments to `module.main(argv)`.

    `name` "" makes the group itself the command; `prefix` is put before the user's arguments.
    """

    group: str
    name: str
    module: str
    help: str
    prefix: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServerCapability:
    """What serving, building and training one capability takes.

    Attributes:
        name: the capability's short name, as in `sdk._contract.CAPABILITIES`.
        servicer: "module:Class" of its `FacetService`, run by `python -m services.<name>`.
        config: "module:Class" of its frozen config dataclass: the `[<name>]` TOML section and
            the `FACET_<NAME>_*` environment variables (`FacetConfig.section`).
        build_defaults: "module:function" with the signature
            `(repository, work_dir, benchmark_data=None) -> list[ModelVersion]`: builds the default
            models that are missing (training code; `facet models build`, `facet up`).
        has_defaults: "module:function" `(repository) -> bool`: whether the default models are there.
        train_module: the module a `facet train <name>` Ray job runs (`python -m <module>`).
        demo: "module:function" `(client: sdk.Client) -> None`: the walk-through `facet up --demo` runs.
        default_build_s: about how long `build_defaults` takes on a fresh machine with 2 CPU cores,
            seconds (measured; the README gives the figures). `facet up` builds the missing
            capabilities cheapest first and starts each service as soon as its build is done.
        commands: its `facet` commands.
        summary: one line for `--help` and the README's table.
    """

    name: str
    servicer: str
    config: str
    build_defaults: str
    has_defaults: str
    train_module: str | None
    demo: str
    default_build_s: float
    commands: tuple[Command, ...] = ()
    summary: str = ""

    @property
    def contract(self) -> Capability:
        """The client half of this row (gRPC service name, default port)."""
        return next(c for c in CONTRACTS if c.name == self.name)


CAPABILITIES: tuple[ServerCapability, ...] = (
    ServerCapability(
        name="sae",
        summary="SAE analysis: latents, meta-latents, stitching",
        servicer="services.sae.servicer:SaeService",
        config="services.sae.config:SaeConfig",
        build_defaults="training.sae.build:build_defaults",
        has_defaults="training.sae.build:has_defaults",
        train_module="training.sae.build",
        demo="services.sae.demo:run_demo",
        default_build_s=540.0,  # README "Building SAEs": ~9 min
        commands=(
            Command("sae", "build", "training.sae.build", "build an SAE family with meta-SAE, stitching and explanations into the model repository"),
            Command("sae", "cache", "training.sae.activations", "cache residual-stream activations of an LM on the corpus"),
            Command("sae", "train", "training.sae.ray_job", "train an SAE family on Ray Train from a cache (local Ray or `ray job submit`)"),
        ),
    ),
    ServerCapability(
        name="nextframe",
        summary="next-frame generation: rollouts and physical-constant probes",
        servicer="services.nextframe.servicer:NextFrameService",
        config="services.nextframe.config:NextFrameConfig",
        build_defaults="training.nextframe.build:build_defaults",
        has_defaults="training.nextframe.build:has_defaults",
        train_module="training.nextframe.build",
        demo="services.nextframe.demo:run_demo",
        default_build_s=840.0,  # README "Building next-frame models": 117-146 s per dataset, six datasets
        commands=(
            Command("nextframe", "build", "training.nextframe.build", "simulate, train, probe, score and export next-frame models into the model repository"),
            Command("nextframe", "train", "training.nextframe.ray_job", "train a frame model on Ray Train from a simulated dataset (local Ray or `ray job submit`)"),
            Command("data", "simulate", "training.nextframe.datasets", "simulate a physics video dataset (next-frame prediction)"),
        ),
    ),
    ServerCapability(
        name="retrieval",
        summary="embedding retrieval: embed, collections, search",
        servicer="services.retrieval.servicer:RetrievalService",
        config="services.retrieval.config:RetrievalConfig",
        build_defaults="training.retrieval.export:build_defaults",
        has_defaults="training.retrieval.export:has_defaults",
        train_module=None,  # the embedding model is exported from a package, not trained
        demo="services.retrieval.demo:run_demo",
        default_build_s=60.0,  # export and parity check of the packaged MiniLM (measured by `facet up`)
        commands=(
            Command("models", "export-embedding", "training.retrieval.export", "export a sentence-transformers directory to ONNX into the model repository"),
            Command("eval", "rarb-mcr", "training.retrieval.rarb", "RAR-b multiple-choice retrieval through the SDK"),
            Command("retrieval", "finetune-rarb", "training.retrieval.finetune", "fine-tune the embedding model on the RAR-b MCR train split (contrastive) into the model repository"),
        ),
    ),
    ServerCapability(
        name="rerank",
        summary="reranking: score and order documents for a query with a cross-encoder",
        servicer="services.rerank.servicer:RerankService",
        config="services.rerank.config:RerankConfig",
        build_defaults="training.rerank.build:build_defaults",
        has_defaults="training.rerank.build:has_defaults",
        train_module="training.rerank.ray_job",
        demo="services.rerank.demo:run_demo",
        default_build_s=840.0,  # 300 steps at ~2.5 s each on 2 idle cores, then calibration, export and parity (README "Training a reranker")
        commands=(
            Command("rerank", "build", "training.rerank.build", "train, calibrate and export the default cross-encoder (reranker) into the model repository"),
        ),
    ),
    ServerCapability(
        name="paraphrase",
        summary="paraphrase generation: n diverse paraphrases scored by log probability, similarity and BLEU to the source",
        servicer="services.paraphrase.servicer:ParaphraseService",
        config="services.paraphrase.config:ParaphraseConfig",
        build_defaults="training.paraphrase.build:build_defaults",
        has_defaults="training.paraphrase.build:has_defaults",
        train_module="training.paraphrase.ray_job",
        demo="services.paraphrase.demo:run_demo",
        default_build_s=1560.0,  # one-thread step times x 640 steps + decoding + export (README "Training a paraphraser"); 2,485 s measured on a shared machine
        commands=(
            Command("paraphrase", "build", "training.paraphrase.build", "train (DDL+VSAR, KRL schedule) and export the default paraphraser into the model repository"),
            Command("eval", "paraphrase", "training.paraphrase.evaluate", "BLEU, self-BLEU, iBLEU and ROUGE of a paraphraser on a test split"),
            Command("paraphrase", "experiment", "training.paraphrase.experiment", "the paper's label-scarce experiment: DDL vs DDL+VSAR (KRL) over label fractions and seeds"),
        ),
    ),
    ServerCapability(
        name="phenotype",
        summary="phenotype editing: a factorised face generator and encoder, attribute edits with a measured report",
        servicer="services.phenotype.servicer:PhenotypeService",
        config="services.phenotype.config:PhenotypeConfig",
        build_defaults="training.phenotype.build:build_defaults",
        has_defaults="training.phenotype.build:has_defaults",
        train_module="training.phenotype.ray_job",
        demo="services.phenotype.demo:run_demo",
        default_build_s=900.0,  # 2026-11-30: generator 631 s + readers 110 s + export, one thread of a 2-core machine shared with a test suite (README "Training the face models")
        commands=(
            Command("phenotype", "build", "training.phenotype.build", "train the factorised face generator, its encoders and the report's readers, export them into the model repository"),
            Command("eval", "phenotype", "training.phenotype.evaluate", "controllability, drift, identity, reconstruction and a Fréchet distance (regressor features, not Inception-FID) of a face model set, per attribute"),
        ),
    ),
)  # fmt: skip
BY_NAME: dict[str, ServerCapability] = {c.name: c for c in CAPABILITIES}


def get(name: str) -> ServerCapability:
    """The row of `name`. Raises KeyError naming the capabilities that exist."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown capability {name!r}; available: {', '.join(BY_NAME)}") from None


def names() -> list[str]:
    """Every capability, in registry order."""
    return [c.name for c in CAPABILITIES]


def cheapest_build_first(capabilities: list[str]) -> list[str]:
    """`capabilities` ordered by `default_build_s`, the shortest build first (registry order
    among equals): the order in which `facet up` builds what is missing."""
    return sorted(capabilities, key=lambda name: (get(name).default_build_s, names().index(name)))


def load(reference: str) -> Any:
    """Import "module:attr" and return the attribute (ImportError says which reference failed)."""
    module, _, attr = reference.partition(":")
    try:
        value = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{reference}: {exc}") from exc
    return getattr(value, attr) if attr else value
