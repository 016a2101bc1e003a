"""Export a trained paraphraser as the two ONNX graphs of `services.paraphrase.catalog`, check
them against PyTorch, and register them.

Graphs (legacy TorchScript exporter, opset `training.onnx_export.OPSET`):

- ``<name>-encoder`` (`Kind.ENCODER`): `ParaphraseTransformer.encode` (direction source -> target)
  followed by `cross_keys_values`; dynamic batch and source axes.
- ``<name>`` (`Kind.DECODER_STEP`): `ParaphraseTransformer.step`, one decoding step with the
  self-attention cache as inputs (`past_*`) and outputs (`present_*`); dynamic batch, source and
  past axes. It carries the paraphraser's metadata (`Prop.*`), its tokenizer (`File.TOKENIZER`)
  and the PyTorch weights the graphs came from (`File.CHECKPOINT`: a directory with
  `model.safetensors` and `config.json`; `load_pytorch_model` reads the model back).

Before anything is registered, `parity_check` runs on real sentences (`parity_sentences`, the
real build passes a few hundred Quora test questions), tokenized by the tokenizer that is stored:

1. numeric: ONNX Runtime (CPU provider) against PyTorch along real greedy decodings, the first
   step with the one masked zero slot included: max |difference| of the encoder's cross keys and
   values, of every step's log_probs and of the grown cache, each <= `PARITY_MAX_ABS`;
2. batching: one step on a batch whose rows have different source and past lengths (right-padded
   with zeros, masked by `attention_mask` / `past_mask`, as the service's dynamic batcher builds
   it) gives each row the log_probs and cache of running that row alone (<= `PARITY_MAX_ABS`);
3. tokens: greedy and beam search (width `PARITY_BEAM_WIDTH`) through the ONNX sessions give the
   same tokens as through PyTorch (`training.paraphrase.generate`: the same search code drives
   both, so only the graphs differ). Tolerance: a sentence may differ only at a near-tie that
   float32 rounding can flip. Greedy: at the first differing token the PyTorch log-probabilities
   of the two choices are within `TIE_NATS`. Beam: the PyTorch scores of the two results are within
   `max_length * TIE_NATS`, and besides those at most `BEAM_UNEXPLAINED_RATE` of the sentences may
   differ otherwise (a near-tie pruned inside the beam leaves no trace in the final scores).

The results (figures, match rates, the mismatches) go into `facet.json` "parity" of both models;
a failed check raises `ParityError` and registers nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from services.model_repository import Key, ModelRepository, ModelVersion, TensorSpec, file_sha256
from services.paraphrase.catalog import File, Kind, Prop, Tensor, encoder_name
from training.onnx_export import cpu_session, export_module
from training.paraphrase.data import special_ids
from training.paraphrase.generate import (
    DecodeRows,
    Hypothesis,
    TorchRunner,
    beam_decode,
    encode_sources,
    greedy_decode,
    source_arrays,
)
from training.paraphrase.model import SOURCE_TO_TARGET, ModelConfig, ParaphraseTransformer

log = logging.getLogger(__name__)

PARITY_MAX_ABS = 1e-4  # max |ONNX - PyTorch| of cross keys/values, log_probs (nats) and caches
TIE_NATS = 2 * PARITY_MAX_ABS  # two choices closer than this may swap under float32 rounding
PARITY_BEAM_WIDTH = 4
BEAM_UNEXPLAINED_RATE = 0.01  # beam results that may differ without a final-score tie (pruned near-ties)
DEFAULT_MAX_LENGTH = 20  # tokens, [CLS]/[SEP] excluded (the paper, Yu et al. §4.1)
PADDED_BATCH_ROWS = 4  # rows of the padded-batch check (past lengths 1 (fresh), 2, 3, 4 ...)
ENCODER_FILE = "encoder.onnx"
STEP_FILE = "step.onnx"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

ENCODER_INPUTS = (Tensor.INPUT_IDS, Tensor.ATTENTION_MASK)
ENCODER_OUTPUTS = (Tensor.CROSS_KEYS, Tensor.CROSS_VALUES)
STEP_INPUTS = (
    Tensor.INPUT_IDS,
    Tensor.POSITION_IDS,
    Tensor.PAST_KEYS,
    Tensor.PAST_VALUES,
    Tensor.PAST_MASK,
    Tensor.CROSS_KEYS,
    Tensor.CROSS_VALUES,
    Tensor.ATTENTION_MASK,
)
STEP_OUTPUTS = (Tensor.LOG_PROBS, Tensor.PRESENT_KEYS, Tensor.PRESENT_VALUES)


class ParityError(RuntimeError):
    """The ONNX graphs do not compute what the PyTorch model computes (the message says which check)."""


class EncoderGraph(torch.nn.Module):
    """The encoder graph: input_ids, attention_mask [B, S] -> cross_keys, cross_values [B, L, H, S, K]."""

    def __init__(self, model: ParaphraseTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.cross_keys_values(self.model.encode(input_ids, attention_mask, SOURCE_TO_TARGET))


class StepGraph(torch.nn.Module):
    """The decoder-step graph: `ParaphraseTransformer.step` with the catalog's inputs and outputs."""

    def __init__(self, model: ParaphraseTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.step(*inputs)


def export_graphs(model: ParaphraseTransformer, work_dir: Path) -> tuple[Path, Path]:
    """Write the encoder and decoder-step graphs of `model` to `work_dir` (`ENCODER_FILE`, `STEP_FILE`).

    Traced on a batch of 2 with different source and past lengths; every axis but the layer, head
    and head_dim axes is dynamic.
    Returns:
        (encoder file, step file).
    """
    model = model.eval()
    c = model.config
    ids = torch.tensor([[c.bos_id, 5, 6, c.eos_id], [c.bos_id, 7, c.eos_id, c.pad_id]]) % c.vocab_size
    mask = (torch.arange(4)[None] < torch.tensor([[4], [3]])).long()
    encoder_file, step_file = work_dir / ENCODER_FILE, work_dir / STEP_FILE
    batch_src = {0: "batch", 1: "src"}
    cache_src = {0: "batch", 3: "src"}
    export_module(
        EncoderGraph(model), (ids, mask), encoder_file, list(ENCODER_INPUTS), list(ENCODER_OUTPUTS),
        {Tensor.INPUT_IDS: batch_src, Tensor.ATTENTION_MASK: batch_src, Tensor.CROSS_KEYS: cache_src, Tensor.CROSS_VALUES: cache_src},
    )  # fmt: skip
    with torch.no_grad():
        cross_keys, cross_values = EncoderGraph(model)(ids, mask)
    past = 3
    shape = (2, c.decoder_layers, c.heads, past, c.head_dim)
    example = (
        torch.tensor([[7], [8]]) % c.vocab_size,
        torch.tensor([[3], [2]]),
        torch.randn(shape, generator=torch.Generator().manual_seed(0)),  # any cache: the graph is traced, not fitted
        torch.randn(shape, generator=torch.Generator().manual_seed(1)),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        cross_keys,
        cross_values,
        mask,
    )
    cache_past = {0: "batch", 3: "past"}
    export_module(
        StepGraph(model), example, step_file, list(STEP_INPUTS), list(STEP_OUTPUTS),
        {
            Tensor.INPUT_IDS: {0: "batch"}, Tensor.POSITION_IDS: {0: "batch"},
            Tensor.PAST_KEYS: cache_past, Tensor.PAST_VALUES: cache_past, Tensor.PAST_MASK: {0: "batch", 1: "past"},
            Tensor.CROSS_KEYS: cache_src, Tensor.CROSS_VALUES: cache_src, Tensor.ATTENTION_MASK: batch_src,
            Tensor.LOG_PROBS: {0: "batch"},
            Tensor.PRESENT_KEYS: {0: "batch", 3: "present"}, Tensor.PRESENT_VALUES: {0: "batch", 3: "present"},
        },
    )  # fmt: skip
    return encoder_file, step_file


class OnnxRunner:
    """`training.paraphrase.generate.StepRunner` over the two ONNX Runtime sessions (numpy arrays).

    Args:
        encoder: session of the encoder graph.
        step: session of the decoder-step graph.
        config: the model's sizes and special ids.
    """

    def __init__(self, encoder: Any, step: Any, config: ModelConfig) -> None:
        self.encoder, self.session = encoder, step
        self.config = config
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id, self.unk_id = config.vocab_size, config.bos_id, config.eos_id, config.pad_id, config.unk_id

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> DecodeRows[np.ndarray]:
        feed = {Tensor.INPUT_IDS: input_ids.astype(np.int64), Tensor.ATTENTION_MASK: attention_mask.astype(np.int64)}
        cross_keys, cross_values = self.encoder.run(list(ENCODER_OUTPUTS), feed)
        c = self.config
        zeros = np.zeros((len(input_ids), c.decoder_layers, c.heads, 1, c.head_dim), dtype=np.float32)
        return DecodeRows(cross_keys, cross_values, feed[Tensor.ATTENTION_MASK], zeros, zeros.copy(), np.zeros((len(input_ids), 1), dtype=np.int64))

    def run_step(self, rows: DecodeRows[np.ndarray], tokens: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The graph on `rows`: tokens and positions int64 [R] -> log_probs, present_keys, present_values."""
        feed = {
            Tensor.INPUT_IDS: tokens.astype(np.int64).reshape(-1, 1),
            Tensor.POSITION_IDS: positions.astype(np.int64).reshape(-1, 1),
            Tensor.PAST_KEYS: rows.past_keys,
            Tensor.PAST_VALUES: rows.past_values,
            Tensor.PAST_MASK: rows.past_mask,
            Tensor.CROSS_KEYS: rows.cross_keys,
            Tensor.CROSS_VALUES: rows.cross_values,
            Tensor.ATTENTION_MASK: rows.attention_mask,
        }
        log_probs, keys, values = self.session.run(list(STEP_OUTPUTS), feed)
        return log_probs, keys, values

    def step(self, rows: DecodeRows[np.ndarray], tokens: np.ndarray, position: int) -> tuple[np.ndarray, DecodeRows[np.ndarray]]:
        log_probs, keys, values = self.run_step(rows, tokens, np.full(len(tokens), position, dtype=np.int64))
        own = np.ones((len(tokens), 1), dtype=np.int64)
        if rows.fresh:  # the masked zero slot is dropped, as TorchRunner does
            keys, values, mask = np.ascontiguousarray(keys[:, :, :, 1:]), np.ascontiguousarray(values[:, :, :, 1:]), own
        else:
            mask = np.concatenate([rows.past_mask, own], axis=1)
        return log_probs, DecodeRows(rows.cross_keys, rows.cross_values, rows.attention_mask, keys, values, mask, fresh=False)

    def select(self, rows: DecodeRows[np.ndarray], index: np.ndarray) -> DecodeRows[np.ndarray]:
        fields = {f.name: getattr(rows, f.name)[index] for f in dataclasses.fields(rows) if f.name != "fresh"}
        return DecodeRows(**fields, fresh=rows.fresh)


class _TwinRunner:
    """Runs ONNX and PyTorch side by side on the ONNX run's tokens and records their largest
    differences (the numeric parity check); the search follows the ONNX log_probs."""

    def __init__(self, onnx: OnnxRunner, torch_runner: TorchRunner) -> None:
        self.onnx, self.torch = onnx, torch_runner
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id, self.unk_id = onnx.vocab_size, onnx.bos_id, onnx.eos_id, onnx.pad_id, onnx.unk_id
        self.diffs = {"cross_keys_values": 0.0, "log_probs": 0.0, "present_keys_values": 0.0}
        self.steps = 0

    def _record(self, key: str, ours: np.ndarray, theirs: torch.Tensor | np.ndarray) -> None:
        reference = theirs.detach().cpu().numpy() if isinstance(theirs, torch.Tensor) else theirs
        self.diffs[key] = max(self.diffs[key], float(np.max(np.abs(ours - reference))) if ours.size else 0.0)

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[DecodeRows[np.ndarray], DecodeRows[torch.Tensor]]:
        ours, theirs = self.onnx.start(input_ids, attention_mask), self.torch.start(input_ids, attention_mask)
        self._record("cross_keys_values", ours.cross_keys, theirs.cross_keys)
        self._record("cross_keys_values", ours.cross_values, theirs.cross_values)
        return ours, theirs

    def step(self, rows: Any, tokens: np.ndarray, position: int) -> tuple[np.ndarray, Any]:
        ours, theirs = rows
        log_probs, ours = self.onnx.step(ours, tokens, position)
        reference, theirs = self.torch.step(theirs, tokens, position)
        self._record("log_probs", log_probs, reference)
        self._record("present_keys_values", ours.past_keys, theirs.past_keys)
        self._record("present_keys_values", ours.past_values, theirs.past_values)
        self.steps += 1
        return log_probs, (ours, theirs)

    def select(self, rows: Any, index: np.ndarray) -> Any:
        return self.onnx.select(rows[0], index), self.torch.select(rows[1], index)


def _pad(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, length - array.shape[axis])
    return np.pad(array, widths)


def padded_batch_check(runner: OnnxRunner, source_ids: Sequence[Sequence[int]], rows: int = PADDED_BATCH_ROWS) -> float:
    """Rows at different decoding steps batched into one step, as the service's dynamic batcher
    does: each source (up to `rows` of them, different lengths preferred) is decoded greedily alone
    for i steps (row i: 0 steps, i.e. the fresh masked zero slot, then 1, 2, ...); the rows are
    right-padded to the longest source and past with zeros (mask 0) and run as one batch.

    Returns:
        max |difference| between each row's log_probs and own cache in the batch and alone
        (its own cache in the batch: `present[..., :past_own, :]` then `present[..., -1:, :]`).
    """
    by_length: dict[int, Sequence[int]] = {}
    for source in source_ids:
        by_length.setdefault(len(source), source)
    chosen = (list(by_length.values()) + list(source_ids))[:rows]
    states, tokens, positions = [], [], []
    for i, source in enumerate(chosen):
        state = runner.start(*source_arrays([source], runner.bos_id, runner.eos_id, runner.pad_id))
        token = np.array([runner.bos_id])
        for position in range(i):
            log_probs, state = runner.step(state, token, position)
            token = log_probs.argmax(axis=1)
        states.append(state)
        tokens.append(int(token[0]))
        positions.append(i)
    src = max(s.attention_mask.shape[1] for s in states)
    past = max(s.past_mask.shape[1] for s in states)
    batch = DecodeRows(
        np.concatenate([_pad(s.cross_keys, 3, src) for s in states]),
        np.concatenate([_pad(s.cross_values, 3, src) for s in states]),
        np.concatenate([_pad(s.attention_mask, 1, src) for s in states]),
        np.concatenate([_pad(s.past_keys, 3, past) for s in states]),
        np.concatenate([_pad(s.past_values, 3, past) for s in states]),
        np.concatenate([_pad(s.past_mask, 1, past) for s in states]),
    )
    batched = runner.run_step(batch, np.array(tokens), np.array(positions))
    worst = 0.0
    for i, state in enumerate(states):
        alone = runner.run_step(state, np.array(tokens[i : i + 1]), np.array(positions[i : i + 1]))
        own = state.past_mask.shape[1]
        worst = max(worst, float(np.max(np.abs(batched[0][i] - alone[0][0]))))
        for cache, solo in zip(batched[1:], alone[1:], strict=True):
            mine = np.concatenate([cache[i, :, :, :own], cache[i, :, :, -1:]], axis=2)
            worst = max(worst, float(np.max(np.abs(mine - solo[0]))))
    return worst


def _with_end(h: Hypothesis, max_length: int, eos_id: int) -> tuple[int, ...]:
    return h.token_ids + ((eos_id,) if len(h.token_ids) < max_length else ())


def _torch_log_probs(model: ParaphraseTransformer, source: Sequence[int], prefix: Sequence[int]) -> np.ndarray:
    """PyTorch's teacher-forced log_probs [len(prefix) + 1, V] after [CLS] prefix, for `source`."""
    c = model.config
    ids, mask = (torch.from_numpy(a) for a in source_arrays([source], c.bos_id, c.eos_id, c.pad_id))
    with torch.inference_mode():
        logits = model.decode(torch.tensor([[c.bos_id, *prefix]]), model.encode(ids, mask, SOURCE_TO_TARGET), mask)
    return torch.log_softmax(logits[0], dim=-1).numpy().astype(np.float64)


def _torch_score(model: ParaphraseTransformer, source: Sequence[int], tokens: Sequence[int]) -> float:
    """PyTorch's sum of log-probabilities of `tokens` ([SEP] included when it ends them)."""
    if not tokens:
        return 0.0
    log_probs = _torch_log_probs(model, source, tokens[:-1])
    return float(log_probs[np.arange(len(tokens)), list(tokens)].sum())


def _greedy_tie(model: ParaphraseTransformer, source: Sequence[int], ours: Sequence[int], theirs: Sequence[int]) -> float:
    """PyTorch's log-probability gap between the two choices at the first token where they differ."""
    first = next(i for i, (a, b) in enumerate(zip([*ours, -1], [*theirs, -1], strict=False)) if a != b)
    log_probs = _torch_log_probs(model, source, theirs[:first])[first]
    return abs(float(log_probs[ours[first]] - log_probs[theirs[first]]))


def parity_check(
    model: ParaphraseTransformer, encoder_file: Path, step_file: Path, source_ids: Sequence[Sequence[int]], max_length: int, *,
    beam_width: int = PARITY_BEAM_WIDTH, threads: int = 2,
) -> dict[str, Any]:  # fmt: skip
    """Compare the exported graphs with `model` on real sources (the checks of the module docstring).

    Args:
        model: the PyTorch model the graphs came from.
        encoder_file, step_file: its graphs (`export_graphs`).
        source_ids: token ids of real source sentences, without [CLS]/[SEP].
        max_length: most generated tokens per sentence.
        beam_width: the beam search's width.
        threads: ONNX Runtime intra-op threads.
    Returns:
        {"sentences", "decode_length", "threshold", "max_abs_diff": {cross_keys_values, log_probs,
        present_keys_values, padded_batch}, "greedy": {match_rate, mismatches, ties, examples},
        "beam": {width, match_rate, mismatches, ties, unexplained, examples}, "time_s", "passed",
        "failures" (what failed, in words)}. Token ids are those of the stored tokenizer.
    """
    started = time.perf_counter()
    model = model.eval()
    c = model.config
    onnx = OnnxRunner(cpu_session(encoder_file, threads), cpu_session(step_file, threads), c)
    torch_runner = TorchRunner(model)
    twin = _TwinRunner(onnx, torch_runner)
    onnx_greedy = greedy_decode(twin, source_ids, max_length)
    torch_greedy = greedy_decode(torch_runner, source_ids, max_length)
    padded = padded_batch_check(onnx, source_ids)
    greedy_ties, greedy_examples = 0, []
    for i, (ours, theirs) in enumerate(zip(onnx_greedy, torch_greedy, strict=True)):
        if ours.token_ids != theirs.token_ids:
            gap = _greedy_tie(model, source_ids[i], _with_end(ours, max_length, c.eos_id), _with_end(theirs, max_length, c.eos_id))
            greedy_ties += gap <= TIE_NATS
            greedy_examples.append({"sentence": i, "onnx": list(ours.token_ids), "torch": list(theirs.token_ids), "gap_nats": gap})
    onnx_beam = beam_decode(onnx, source_ids, beam_width, max_length)
    torch_beam = beam_decode(torch_runner, source_ids, beam_width, max_length)
    beam_ties, beam_examples = 0, []
    for i, (ours_all, theirs_all) in enumerate(zip(onnx_beam, torch_beam, strict=True)):
        ours, theirs = ours_all[0], theirs_all[0]
        if ours.token_ids != theirs.token_ids:
            gap = abs(
                _torch_score(model, source_ids[i], _with_end(ours, max_length, c.eos_id))
                - _torch_score(model, source_ids[i], _with_end(theirs, max_length, c.eos_id))
            )
            beam_ties += gap <= max_length * TIE_NATS
            beam_examples.append({"sentence": i, "onnx": list(ours.token_ids), "torch": list(theirs.token_ids), "score_gap_nats": gap})
    n = len(source_ids)
    diffs = {**twin.diffs, "padded_batch": padded}
    beam_unexplained = len(beam_examples) - beam_ties
    failures = [f"max |{key} difference| {value:.2e} > {PARITY_MAX_ABS:.0e}" for key, value in diffs.items() if not value <= PARITY_MAX_ABS]
    if len(greedy_examples) > greedy_ties:
        failures.append(f"{len(greedy_examples) - greedy_ties} greedy decodings differ without a tie (<= {TIE_NATS:.0e} nats)")
    if beam_unexplained > BEAM_UNEXPLAINED_RATE * n:
        failures.append(f"{beam_unexplained} beam decodings differ without a score tie (limit {BEAM_UNEXPLAINED_RATE:.0%} of {n})")
    return {
        "sentences": n,
        "decode_length": max_length,  # not `max_`-named: `facet models list` reads those as bounds
        "threshold": PARITY_MAX_ABS,
        "reference": "PyTorch ParaphraseTransformer (encode, cross_keys_values, step) on the CPU; searches: training.paraphrase.generate",
        "max_abs_diff": diffs,
        "steps_compared": twin.steps,
        "greedy": {"match_rate": 1 - len(greedy_examples) / n if n else 1.0, "mismatches": len(greedy_examples), "ties": greedy_ties,
                   "tie_nats": TIE_NATS, "examples": greedy_examples[:5]},
        "beam": {"width": beam_width, "match_rate": 1 - len(beam_examples) / n if n else 1.0, "mismatches": len(beam_examples),
                 "ties": beam_ties, "unexplained": beam_unexplained, "unexplained_limit_rate": BEAM_UNEXPLAINED_RATE,
                 "tie_nats": max_length * TIE_NATS, "examples": beam_examples[:5]},
        "time_s": round(time.perf_counter() - started, 3),
        "passed": not failures,
        "failures": failures,
    }  # fmt: skip


def write_checkpoint(model: ParaphraseTransformer, directory: Path) -> Path:
    """`model`'s weights (`WEIGHTS_FILE`, safetensors) and `ModelConfig` (`CONFIG_FILE`, JSON) in `directory`."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n")
    return directory


def load_pytorch_model(entry: ModelVersion) -> tuple[ParaphraseTransformer, Tokenizer]:
    """The PyTorch model (eval mode, CPU) and tokenizer of a registered paraphraser: its decoder
    step's `File.CHECKPOINT` (`write_checkpoint`) and `File.TOKENIZER` (e.g. for in-process
    generation with `training.paraphrase.generate`, the benchmark's baseline).

    Raises:
        KeyError: `entry` has no checkpoint or tokenizer (not a paraphraser's decoder step).
    """
    from safetensors.torch import load_file

    directory = entry.file(File.CHECKPOINT)
    model = ParaphraseTransformer(ModelConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text())))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE)))
    return model.eval(), Tokenizer.from_file(str(entry.file(File.TOKENIZER)))


def _special_ids(tokenizer: Tokenizer, config: ModelConfig) -> dict[str, int]:
    ids = special_ids(tokenizer)
    expected = {"pad": config.pad_id, "unk": config.unk_id, "bos": config.bos_id, "eos": config.eos_id}
    if any(ids[k] != v for k, v in expected.items()):
        raise ValueError(f"the tokenizer's special ids {ids} differ from the model's {expected}")
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.get_vocab_size()} tokens, the model's vocabulary {config.vocab_size}")
    return ids


def export_paraphraser(
    model: ParaphraseTransformer,
    tokenizer: Tokenizer,
    repository: ModelRepository,
    name: str,
    *,
    properties: Mapping[str, Any],
    checkpoint: Path | None,
    parity_sentences: Sequence[str],
    work_dir: Path,
) -> ModelVersion:
    """Export `model`, check parity on `parity_sentences`, and register `<name>-encoder` and `<name>`.

    Args:
        model: the trained encoder-decoder.
        tokenizer: its tokenizer (`training.paraphrase.data.build_tokenizer`), stored as `File.TOKENIZER`.
        repository: the model repository.
        name: the paraphraser's name (the decoder step's; the encoder is `encoder_name(name)`).
        properties: the caller's `Prop.*` (`SETTING`, `TRAINING_DATA`, `TRAINING`, `METRICS`, and
            optionally `MAX_LENGTH`, default `DEFAULT_MAX_LENGTH` capped by the model's positions);
            the export adds ENCODER_MODEL, MAX_LENGTH, LAYERS, HEADS, HEAD_DIM, VOCAB_SIZE,
            SPECIAL_IDS and ARCHITECTURE.
        checkpoint: the training checkpoint the model came from (recorded as `Key.SOURCE` with its
            sha256 when a file); the weights stored as `File.CHECKPOINT` are always written from
            `model` itself (`write_checkpoint`).
        parity_sentences: real source sentences for `parity_check` (the real build: a few hundred).
        work_dir: where the graphs, tokenizer and checkpoint are written before registration.
    Returns:
        the decoder step's registered version (kind `Kind.DECODER_STEP`).
    Raises:
        ParityError: a parity check failed (nothing is registered).
        ValueError: the tokenizer does not fit the model, no parity sentences, or a max length
            beyond the model's positions.
    """
    c = model.config
    specials = _special_ids(tokenizer, c)
    max_length = int(properties.get(Prop.MAX_LENGTH, min(DEFAULT_MAX_LENGTH, c.max_positions - 2)))
    if not 1 <= max_length <= c.max_positions - 2:
        raise ValueError(f"{Prop.MAX_LENGTH} must be in [1, {c.max_positions - 2}] (max_positions - 2), got {max_length}")
    if not parity_sentences:
        raise ValueError("parity_sentences is empty: the parity check needs real sentences")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if next(model.parameters()).device.type != "cpu":  # the checks run on the CPU; the caller's model stays put
        model = copy.deepcopy(model).cpu()
    model = model.eval()
    encoder_file, step_file = export_graphs(model, work_dir)
    parity = parity_check(model, encoder_file, step_file, encode_sources(tokenizer, parity_sentences, max_length), max_length)
    (work_dir / "parity.json").write_text(json.dumps(parity, indent=2) + "\n")
    log.info("paraphraser %s parity: %s", name, {k: parity[k] for k in ("max_abs_diff", "passed", "failures")})
    if not parity["passed"]:
        raise ParityError(f"ONNX export of paraphraser {name!r} failed its parity check: {'; '.join(parity['failures'])}")
    tokenizer_file = work_dir / TOKENIZER_FILE
    tokenizer.save(str(tokenizer_file))
    weights_dir = write_checkpoint(model, work_dir / CHECKPOINT_DIR)
    source = f"training.paraphrase.export of {checkpoint}" if checkpoint else "training.paraphrase.export of an in-memory model"
    source_sha = file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    cache = (c.decoder_layers, c.heads, -1, c.head_dim)
    shape_props = {Prop.LAYERS: c.decoder_layers, Prop.HEADS: c.heads, Prop.HEAD_DIM: c.head_dim, Prop.ARCHITECTURE: c.to_dict()}
    repository.register(
        encoder_name(name),
        encoder_file,
        {
            Key.KIND: Kind.ENCODER,
            Key.SOURCE: source,
            Key.SOURCE_SHA256: source_sha,
            Key.INPUTS: [TensorSpec(n, "int64", (-1,)).to_dict() for n in ENCODER_INPUTS],
            Key.OUTPUTS: [TensorSpec(n, "float32", cache).to_dict() for n in ENCODER_OUTPUTS],
            Key.PROPERTIES: shape_props,
            Key.PARITY: parity,
            Key.MAX_SEQUENCE_LENGTH: c.max_positions,  # learned positions: a longer source cannot be encoded
        },
    )
    props = {
        **dict(properties),
        **shape_props,
        Prop.ENCODER_MODEL: encoder_name(name),
        Prop.MAX_LENGTH: max_length,
        Prop.VOCAB_SIZE: c.vocab_size,
        Prop.SPECIAL_IDS: specials,
    }
    inputs = [
        TensorSpec(Tensor.INPUT_IDS, "int64", (1,)),
        TensorSpec(Tensor.POSITION_IDS, "int64", (1,)),
        TensorSpec(Tensor.PAST_KEYS, "float32", cache),
        TensorSpec(Tensor.PAST_VALUES, "float32", cache),
        TensorSpec(Tensor.PAST_MASK, "int64", (-1,)),
        TensorSpec(Tensor.CROSS_KEYS, "float32", cache),
        TensorSpec(Tensor.CROSS_VALUES, "float32", cache),
        TensorSpec(Tensor.ATTENTION_MASK, "int64", (-1,)),
    ]
    outputs = [
        TensorSpec(Tensor.LOG_PROBS, "float32", (c.vocab_size,)),
        TensorSpec(Tensor.PRESENT_KEYS, "float32", cache),
        TensorSpec(Tensor.PRESENT_VALUES, "float32", cache),
    ]
    return repository.register(
        name,
        step_file,
        {
            Key.KIND: Kind.DECODER_STEP,
            Key.SOURCE: source,
            Key.SOURCE_SHA256: source_sha,
            Key.INPUTS: [t.to_dict() for t in inputs],
            Key.OUTPUTS: [t.to_dict() for t in outputs],
            Key.PROPERTIES: props,
            Key.PARITY: parity,
            Key.MAX_SEQUENCE_LENGTH: c.max_positions,  # a cache never holds more than the decoder's positions
        },
        extra_files={File.TOKENIZER: tokenizer_file, File.CHECKPOINT: weights_dir},
    )
