"""Benchmark SAE training throughput: Facet's trainer vs SAELens's, side by side, in one run.

    python load/bench_sae_training.py [--cache DIR] [--width 2304] [--k 32] [--batch 4096]
                                      [--steps 30] [--threads 2] [--quick] [--json PATH]

Both trainers train one BatchTopK SAE (k latents per token on average, `--width` latents) on
the same batches of cached real activations (SmolLM2-135M residual stream; without `--cache`
a small cache is built first from the gensim Wikipedia corpus), on CPU in float32, with Adam at
lr 4e-4 (constant), betas (0.9, 0.999), in this process with `torch.set_num_threads(--threads)`.
The rows are scaled once to a mean norm of sqrt(d_in), as Facet's `train_on_tensor` does, and
both trainers get those same tensors (SAELens's own scaler is left off: it would do the same
multiply per batch).

  Facet:   `training.sae.train.new_family` with one `SaeConfig("batchtopk", d_in, width, k=k)`
           (decoder bias started at the data mean), then `train_step(state, batch, training)`
           per batch: forward with batch top-k, dead-latent bookkeeping and the threshold
           estimate, backward, removal of the decoder-gradient component along each decoder
           row, Adam step, decoder rows renormalised to unit norm, and the loss read back.
  SAELens: `sae_lens.BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in, width, k=k))` with
           its defaults otherwise (decoder init norm 0.1, `rescale_acts_by_decoder_norm`,
           aux-loss coefficient 1), driven by a real `sae_lens.SAETrainer` (no transformer
           model: the trainer only needs an iterator of activation batches, which is given the
           same batches). Each step runs exactly the body of `SAETrainer.fit`'s loop with
           wandb logging and checkpoints off: `maybe_reset_sparsity()`,
           `step(next(data_provider))` (which calls `_train_step`: `training_forward_pass`,
           firing statistics, backward, `clip_grad_norm_(1.0)`, Adam step, `zero_grad`, LR
           scheduler step), `_checkpoint_if_needed()` and `n_training_steps += 1`; the same
           public seams `sae_lens.MultiSAETrainer` drives. `fit()` itself is not timed: it
           adds a progress bar, and folds and resets state at its end, so it cannot be
           resumed round after round.

What differs per step, by design of each library: SAELens rescales the pre-activations and
the latents by the decoder row norms (instead of renormalising the decoder), clips the
gradient norm, keeps an n x width firing-frequency count and steps an LR scheduler; Facet
projects the decoder gradient and renormalises the decoder. Neither computes its dead-latent
auxiliary loss in a short run (Facet: a latent is dead after 1M tokens without firing;
SAELens: after 1000 steps); the report counts dead latents at the end.

The sides take turns round by round (Facet first in even rounds, SAELens first in odd ones),
after `--warmup` untimed steps each, so background load hits both alike; the machine may be
shared, so read the ratio, not the absolute numbers. `--quick`: width 576, batch 1024,
5 steps (about a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `training`, `load`, ... importable
    sys.path.insert(0, str(REPO_ROOT))

from load.harness import log, table_text  # noqa: E402
from training.sae.activations import ActivationCache, Manifest  # noqa: E402
from training.sae.config import SaeConfig  # noqa: E402
from training.sae.train import FamilyState, TrainingConfig, input_scale, new_family, train_step  # noqa: E402

LR = 4e-4
ADAM_BETAS = (0.9, 0.999)
LAYER = 15
MAX_BUILT_CACHE_TOKENS = 65_536  # a built cache is capped here; batches then cycle over it
FACET = "facet"
SAELENS = "sae-lens"


# -- settings ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    cache: Path | None  # None: build a small cache of real activations in a temp dir
    width: int
    k: int
    batch: int
    steps: int  # timed steps per trainer, over all rounds
    rounds: int
    warmup: int  # untimed steps per trainer before the first round
    threads: int
    quick: bool
    seed: int
    layer: int
    cache_tokens: int | None
    lm_checkpoint: Path
    json_path: Path | None

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


def parse_settings(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="an activation cache (`facet sae cache`); default: build one")
    parser.add_argument("--width", type=int, help="SAE latents (default 2304, 576 with --quick)")
    parser.add_argument("--k", type=int, default=32, help="BatchTopK: active latents per token on average")
    parser.add_argument("--batch", type=int, help="activations per step (default 4096, 1024 with --quick)")
    parser.add_argument("--steps", type=int, help="timed steps per trainer (default 30, 5 with --quick)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds the timed steps are split into")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per trainer first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both trainers")
    parser.add_argument("--quick", action="store_true", help="width 576, batch 1024, 5 steps (~1 minute)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of both SAEs")
    parser.add_argument("--layer", type=int, default=LAYER, help="residual-stream layer of a built cache")
    parser.add_argument(
        "--cache-tokens",
        type=int,
        help=f"activations in a built cache (default: what the run uses, at most {MAX_BUILT_CACHE_TOKENS})",
    )
    parser.add_argument(
        "--lm-checkpoint",
        type=Path,
        default=Path(tempfile.gettempdir()) / "smollm2",
        help="dequantised SmolLM2 checkpoint for building a cache (written there on first use)",
    )
    args = parser.parse_args(argv)
    width = args.width or (576 if args.quick else 2304)
    batch = args.batch or (1024 if args.quick else 4096)
    steps = args.steps or (5 if args.quick else 30)
    for name, value in (("width", width), ("k", args.k), ("batch", batch), ("steps", steps), ("threads", args.threads)):
        if value < 1:
            parser.error(f"--{name} must be >= 1")
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")
    if args.k > width:
        parser.error("--k must be <= --width")
    if args.cache is not None and not (args.cache / "manifest.json").is_file():
        parser.error(f"--cache {args.cache} holds no manifest.json")
    return Settings(
        cache=args.cache,
        width=width,
        k=args.k,
        batch=batch,
        steps=steps,
        rounds=min(args.rounds, steps),
        warmup=args.warmup,
        threads=args.threads,
        quick=args.quick,
        seed=args.seed,
        layer=args.layer,
        cache_tokens=args.cache_tokens,
        lm_checkpoint=args.lm_checkpoint,
        json_path=args.json,
    )


# -- data ----------------------------------------------------------------------------------


def build_cache(s: Settings, directory: Path) -> None:
    """Real SmolLM2 activations of Wikipedia paragraphs, as `facet sae cache` writes them."""
    from training.sae.activations import cache_activations, load_language_model
    from training.sae.corpus import CORPUS_NAME, wikipedia_paragraphs

    tokens = s.cache_tokens or min(s.batch * s.total_steps, MAX_BUILT_CACHE_TOKENS)
    tokens = max(tokens, s.batch)
    log(f"building a cache of {tokens} activations (layer {s.layer}) in {directory}")
    lm = load_language_model(checkpoint_cache=s.lm_checkpoint)
    cache_activations(lm, s.layer, wikipedia_paragraphs(), directory, tokens=tokens, corpus=CORPUS_NAME, progress=False)


@dataclasses.dataclass(frozen=True)
class Workload:
    batches: list[torch.Tensor]  # warm-up batches first, then the timed ones
    scale: float  # the input scale applied to every row
    mean: torch.Tensor  # mean of the scaled rows used (Facet starts its decoder bias here)
    cache_rows: int
    distinct_batches: int
    manifest: Manifest


def load_workload(s: Settings, directory: Path) -> Workload:
    """Scale the cache rows as `train_on_tensor` does and cut them into `total_steps` batches
    (consecutive slices, cycling when the cache holds fewer)."""
    cache = ActivationCache(directory)
    data = cache.all()
    if len(data) < s.batch:
        raise SystemExit(f"bench_sae_training: the cache holds {len(data)} rows, fewer than one batch ({s.batch})")
    scale = input_scale(data)
    distinct = min(len(data) // s.batch, s.total_steps)
    rows = data[: distinct * s.batch] * scale  # a copy: the memory-mapped cache stays read-only
    del data
    slices = list(rows.split(s.batch))
    batches = [slices[i % distinct] for i in range(s.total_steps)]
    return Workload(batches, scale, rows.mean(0), len(cache), distinct, cache.manifest)


# -- the two trainers ------------------------------------------------------------------------


class Trainer(Protocol):
    name: str

    def step(self, batch: torch.Tensor) -> None: ...

    def last_loss(self) -> float: ...

    def dead_latents(self) -> int: ...


class FacetTrainer:
    """One BatchTopK SAE in a Facet family, stepped with `train_step`."""

    name = FACET

    def __init__(self, s: Settings, d_in: int, mean: torch.Tensor) -> None:
        # constant lr: no warm-up, no decay (lr_at only decays from `steps`, beyond this run)
        self.training = TrainingConfig(
            tokens=s.batch * (s.total_steps + 1),
            batch_tokens=s.batch,
            lr=LR,
            lr_warmup_steps=1,
            lr_decay_fraction=0.0,
            seed=s.seed,
        )
        self.state: FamilyState = new_family([SaeConfig("batchtopk", d_in, s.width, k=s.k)], self.training, mean=mean)
        assert all(g["betas"] == ADAM_BETAS for opt in self.state.optimizers for g in opt.param_groups)
        self._loss = float("nan")

    def step(self, batch: torch.Tensor) -> None:
        self._loss = train_step(self.state, batch, self.training)[0]

    def last_loss(self) -> float:
        return self._loss

    def dead_latents(self) -> int:
        return int(self.state.saes[0].dead_mask.sum())


class SaeLensTrainer:
    """A SAELens BatchTopKTrainingSAE in a real SAETrainer, stepped as `SAETrainer.fit` does."""

    name = SAELENS

    def __init__(self, s: Settings, d_in: int, batches: Sequence[torch.Tensor]) -> None:
        from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig, SAETrainer
        from sae_lens.config import SAETrainerConfig

        torch.manual_seed(s.seed)
        sae_cfg = BatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=s.width, k=s.k, dtype="float32", device="cpu", normalize_activations="none"
        )
        sae = BatchTopKTrainingSAE(sae_cfg)
        trainer_cfg = SAETrainerConfig(
            total_training_samples=s.batch * s.total_steps,
            train_batch_size_samples=s.batch,
            lr=LR,
            lr_end=LR,
            lr_scheduler_name="constant",
            adam_beta1=ADAM_BETAS[0],
            adam_beta2=ADAM_BETAS[1],
            device="cpu",
            autocast=False,
            logger=LoggingConfig(log_to_wandb=False),
        )
        self.data_provider: Iterator[torch.Tensor] = iter(batches)
        self.trainer: Any = SAETrainer(trainer_cfg, sae, self.data_provider)
        self.trainer.sae.to(trainer_cfg.device)  # as fit() does first
        self._output: Any = None

    def step(self, batch: torch.Tensor) -> None:
        """The body of `SAETrainer.fit`'s loop (wandb off); the batch comes from the trainer's
        own data provider, which yields the same batches in the same order as `batch`."""
        trainer = self.trainer
        trainer.maybe_reset_sparsity()  # returns the sparsity log dict, only sent to wandb
        provided = next(trainer.data_provider)
        if provided is not batch:
            raise RuntimeError("the SAELens data provider is out of step with the benchmark's batches")
        self._output = trainer.step(provided)
        trainer._checkpoint_if_needed()
        trainer.n_training_steps += 1

    def last_loss(self) -> float:
        return float(self._output.loss.detach()) if self._output is not None else float("nan")

    def dead_latents(self) -> int:
        return int(self.trainer.dead_neurons.sum())


# -- measurement -----------------------------------------------------------------------------


def timed_steps(trainer: Trainer, batches: Sequence[torch.Tensor]) -> list[float]:
    seconds = []
    for batch in batches:
        began = time.perf_counter()
        trainer.step(batch)
        seconds.append(time.perf_counter() - began)
    return seconds


def round_sizes(steps: int, rounds: int) -> list[int]:
    return [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]


@dataclasses.dataclass
class TrainerResult:
    step_seconds: list[float] = dataclasses.field(default_factory=list)
    round_activations_per_s: list[float] = dataclasses.field(default_factory=list)
    warmup_seconds: float = 0.0
    last_loss: float = float("nan")
    dead_latents: int = 0

    @property
    def median_activations_per_s(self) -> float:
        return statistics.median(self.round_activations_per_s)

    @property
    def median_ms_per_step(self) -> float:
        return 1000 * statistics.median(self.step_seconds)


def run_benchmark(s: Settings, work: Workload) -> dict[str, TrainerResult]:
    d_in = int(work.batches[0].shape[1])
    log(f"setting up: d_in {d_in}, width {s.width}, k {s.k}, batch {s.batch}, {s.threads} torch threads")
    trainers: list[Trainer] = [FacetTrainer(s, d_in, work.mean), SaeLensTrainer(s, d_in, work.batches)]
    results = {t.name: TrainerResult() for t in trainers}
    warm, timed = work.batches[: s.warmup], work.batches[s.warmup :]
    for trainer in trainers:
        results[trainer.name].warmup_seconds = sum(timed_steps(trainer, warm))
    start = 0
    for r, size in enumerate(round_sizes(s.steps, s.rounds)):
        batches = timed[start : start + size]
        start += size
        for trainer in trainers if r % 2 == 0 else trainers[::-1]:
            seconds = timed_steps(trainer, batches)
            results[trainer.name].step_seconds.extend(seconds)
            results[trainer.name].round_activations_per_s.append(size * s.batch / sum(seconds))
        rates = ", ".join(f"{name} {res.round_activations_per_s[-1]:,.0f}" for name, res in results.items())
        log(f"round {r + 1}/{s.rounds} ({size} steps each): activations/s {rates}")
    for trainer in trainers:
        results[trainer.name].last_loss = trainer.last_loss()
        results[trainer.name].dead_latents = trainer.dead_latents()
    return results


# -- report --------------------------------------------------------------------------------


def report_rows(results: dict[str, TrainerResult]) -> list[list[str]]:
    baseline = results[SAELENS].median_activations_per_s
    return [
        [
            name,
            f"{res.median_activations_per_s:,.0f}",
            f"{res.median_activations_per_s / baseline:.2f}x",
            f"{res.median_ms_per_step:.1f}",
            f"{res.last_loss:.4g}",
        ]
        for name, res in results.items()
    ]


def main(argv: Sequence[str] | None = None) -> int:
    s = parse_settings(argv)
    torch.set_num_threads(s.threads)
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-sae-cache-") as tmp:
        directory = s.cache
        if directory is None:
            directory = Path(tmp) / "cache"
            build_cache(s, directory)
        work = load_workload(s, directory)
        log(
            f"{len(work.batches)} batches of {s.batch} from {directory} ({work.cache_rows} rows, "
            f"{work.distinct_batches} distinct batches, input scale {work.scale:.4g})"
        )
        results = run_benchmark(s, work)
    wall = time.perf_counter() - began
    import sae_lens

    ratio = results[FACET].median_activations_per_s / results[SAELENS].median_activations_per_s
    notes = [
        f"BatchTopK k={s.k}, d_in {work.manifest.d_model}, width {s.width}, batch {s.batch}; {s.warmup} warm-up + "
        f"{s.steps} timed steps per trainer in {s.rounds} alternating rounds; median over rounds.",
        f"activations: {work.manifest.model} layer {work.manifest.layer}, corpus {work.manifest.corpus}, "
        f"{work.cache_rows} rows ({'built for this run' if s.cache is None else s.cache}); "
        f"{work.distinct_batches} distinct batches.",
        f"CPU float32, torch {torch.__version__} with {torch.get_num_threads()} threads, sae-lens {sae_lens.__version__}; "
        f"{os.cpu_count()} CPUs; 1-min load average {load_before:.1f} at start, {os.getloadavg()[0]:.1f} at end.",
        f"dead latents at the end (aux loss runs only when > 0): facet {results[FACET].dead_latents}, "
        f"sae-lens {results[SAELENS].dead_latents}.",
        "losses differ by initialisation (Facet: unit decoder rows, b_dec at the data mean; SAELens: decoder "
        "norm 0.1, b_dec 0), not by data: both see the same scaled rows.",
    ]
    print()
    print(f"SAE training throughput ({'quick' if s.quick else 'full'}), wall time {wall:.0f} s")
    print(table_text(("trainer", "activations/s", "ratio", "ms/step", "last loss"), report_rows(results)))
    print()
    for note in notes:
        print(f"- {note}")
    if s.json_path is not None:
        payload = {
            "mode": "quick" if s.quick else "full",
            "wall_seconds": wall,
            "settings": dataclasses.asdict(s),
            "ratio_facet_over_saelens": ratio,
            "trainers": {
                name: {
                    **dataclasses.asdict(res),
                    "median_activations_per_s": res.median_activations_per_s,
                    "median_ms_per_step": res.median_ms_per_step,
                }
                for name, res in results.items()
            },
            "cache": {
                "directory": str(s.cache) if s.cache else None,
                "rows": work.cache_rows,
                "input_scale": work.scale,
                "manifest": work.manifest.to_dict(),
            },
            "versions": {"torch": torch.__version__, "sae_lens": sae_lens.__version__},
            "notes": notes,
        }
        s.json_path.parent.mkdir(parents=True, exist_ok=True)
        s.json_path.write_text(json.dumps(payload, indent=2, default=str))
        print(f"- results written to {s.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
