"""Reference decoding of a paraphraser in-process: greedy and beam search over the KV-cache step.

Both searches run `ParaphraseTransformer.step` (the graph the service runs as ONNX, see
`services.paraphrase.catalog`): the encoder once per source sentence, then one decoder step per
generated token with the self-attention cache of earlier tokens (the prefix is never recomputed),
batched over sentences. A sentence that has finished leaves the batch (its rows are dropped from
the cache), so later steps only compute live rows.

The search logic runs on numpy log-probabilities and talks to the model through a `StepRunner`, so
the same code drives PyTorch (`TorchRunner`, here) and the exported ONNX graphs (the export's
parity check, `training.paraphrase.export.OnnxRunner`): token parity then tests the graphs alone.

Rules of both searches (the service's `services.paraphrase.decoding` follows the same ones, so
that with `length_penalty=0` its beam search gives these tokens, token for token):

- [PAD] and [CLS] are never chosen, nor [SEP] as the first token (no empty paraphrase): their
  log-probabilities count as -inf for the choice only. Nothing else is masked.
- A hypothesis holds at most `max_length` tokens; it ends at [SEP] (its log-probability then
  includes [SEP]'s) or is cut at `max_length` tokens (no [SEP] term, no further step).
- `Hypothesis.logprob` is the sum (float64) of the chosen tokens' log-probabilities (the step's
  float32 log-softmax).

Greedy: at each step the highest allowed token (`numpy.argmax`: the lowest token id on an exact tie).

Beam search (the standard left-to-right beam of fairseq's `SequenceGenerator` and Hugging Face's
`BeamSearchScorer`). Per sentence, width W, length penalty alpha (default 0: the raw sum):

1. A finished hypothesis is ranked by score = logprob / length ** alpha, `length` counting its
   tokens plus its [SEP] (a cut one: `max_length`). Step 0 starts from one hypothesis ([CLS],
   sum 0); every later step from exactly W live hypotheses.
2. Each step scores every (live hypothesis b, token v) as sum(b) + log_prob(v | b) and ranks the
   candidates by that sum, highest first; exact ties go to the lower flat index b * V + v (the
   earlier beam, then the lower token id). The 2W best are visited in rank order: a [SEP]
   candidate ranked among the first W is finished (its tokens without [SEP], its sum with [SEP]'s
   log-prob); a [SEP] candidate ranked W..2W-1 is dropped; every other candidate becomes a live
   hypothesis (in rank order, which is the new beam order) until W are live.
3. After the step that produced token `max_length`, the live hypotheses are finished as they are.
4. Finished hypotheses are ordered by score, highest first; equal scores keep the order they were
   finished in (earlier step first, then rank). The result is the first.
5. A sentence stops once it has at least W finished hypotheses and the W-th best score is >= the
   best live hypothesis' score if it ended now, sum / min(tokens + 1, max_length) ** alpha. For
   alpha <= 0 this bound is exact (log-probs are <= 0 and lengths only grow: no live hypothesis
   could still enter the W best; on a tie it would rank after, by rule 4), so stopping never
   changes the result. For alpha > 0 it is Hugging Face's default heuristic (`early_stopping=False`).

Example::

    from training.paraphrase.generate import beam_search, encode_sources, greedy

    sources = encode_sources(tokenizer, ["How do I learn Python?"], max_length=20)
    print(tokenizer.decode(greedy(model, sources, max_length=20)[0]))
    print(tokenizer.decode(beam_search(model, sources, beam_width=4, max_length=20)[0]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch
from tokenizers import Tokenizer

from training.paraphrase.model import SOURCE_TO_TARGET, ParaphraseTransformer

__all__ = [
    "DecodeRows",
    "Hypothesis",
    "StepRunner",
    "TorchRunner",
    "beam_decode",
    "beam_search",
    "encode_sources",
    "greedy",
    "greedy_decode",
    "source_arrays",
]

DEFAULT_BATCH_SIZE = 32  # sentences decoded together (beam search: times the width in rows)

A = TypeVar("A")  # the array type of a runner's cache: torch.Tensor or numpy.ndarray
S = TypeVar("S")  # a runner's state of its rows


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A decoded sentence: token ids without [CLS]/[SEP] and the sum of the chosen tokens'
    log-probabilities (nats; [SEP]'s included when the sentence ended with [SEP])."""

    token_ids: tuple[int, ...]
    logprob: float


@dataclasses.dataclass(frozen=True)
class DecodeRows(Generic[A]):
    """The decoder inputs of a batch of rows (one row per live hypothesis), in the shapes of
    `services.paraphrase.catalog`: cross_keys/cross_values [R, L, H, S, K], attention_mask [R, S],
    past_keys/past_values [R, L, H, P, K], past_mask [R, P]. `fresh`: no step has run yet (the
    cache is the one masked zero slot of `ParaphraseTransformer.empty_cache`)."""

    cross_keys: A
    cross_values: A
    attention_mask: A
    past_keys: A
    past_values: A
    past_mask: A
    fresh: bool = True


class StepRunner(Protocol[S]):
    """What the searches need of a model: its special ids and vocabulary, and three operations on
    its state of a batch of rows (`DecodeRows` for the PyTorch and ONNX runners)."""

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> S:
        """Encode sources (int64 [B, S], [CLS] source [SEP] right-padded) into B fresh rows."""
        ...

    def step(self, rows: S, tokens: np.ndarray, position: int) -> tuple[np.ndarray, S]:
        """Append `tokens` (int64 [R]) at `position`; returns log_probs float32 [R, V] and the
        rows with their caches grown by this step."""
        ...

    def select(self, rows: S, index: np.ndarray) -> S:
        """Keep (or duplicate, or reorder) rows: the new row i is the old row `index[i]`."""
        ...


class TorchRunner:
    """`StepRunner` over a PyTorch `ParaphraseTransformer` (eval mode, inference mode, CPU or its device)."""

    def __init__(self, model: ParaphraseTransformer) -> None:
        self.model = model.eval()
        c = model.config
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id, self.unk_id = c.vocab_size, c.bos_id, c.eos_id, c.pad_id, c.unk_id
        self.device = next(model.parameters()).device

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> DecodeRows[torch.Tensor]:
        ids = torch.from_numpy(np.ascontiguousarray(input_ids, dtype=np.int64)).to(self.device)
        mask = torch.from_numpy(np.ascontiguousarray(attention_mask, dtype=np.int64)).to(self.device)
        with torch.inference_mode():
            cross_keys, cross_values = self.model.cross_keys_values(self.model.encode(ids, mask, SOURCE_TO_TARGET))
            past_keys, past_values, past_mask = self.model.empty_cache(ids.shape[0], self.device)
        return DecodeRows(cross_keys, cross_values, mask, past_keys, past_values, past_mask)

    def step(self, rows: DecodeRows[torch.Tensor], tokens: np.ndarray, position: int) -> tuple[np.ndarray, DecodeRows[torch.Tensor]]:
        count = len(tokens)
        input_ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)).to(self.device).view(count, 1)
        position_ids = torch.full((count, 1), position, dtype=torch.int64, device=self.device)
        with torch.inference_mode():
            log_probs, keys, values = self.model.step(
                input_ids, position_ids, rows.past_keys, rows.past_values, rows.past_mask, rows.cross_keys, rows.cross_values, rows.attention_mask
            )
            own = torch.ones(count, 1, dtype=torch.int64, device=self.device)
            if rows.fresh:  # drop the masked zero slot: the cache is this step alone
                keys, values, mask = keys[:, :, :, 1:].contiguous(), values[:, :, :, 1:].contiguous(), own
            else:
                mask = torch.cat([rows.past_mask, own], dim=1)
        grown = DecodeRows(rows.cross_keys, rows.cross_values, rows.attention_mask, keys, values, mask, fresh=False)
        return log_probs.float().cpu().numpy(), grown

    def select(self, rows: DecodeRows[torch.Tensor], index: np.ndarray) -> DecodeRows[torch.Tensor]:
        i = torch.from_numpy(np.asarray(index, dtype=np.int64)).to(self.device)
        fields = {f.name: getattr(rows, f.name) for f in dataclasses.fields(rows) if f.name != "fresh"}
        return DecodeRows(**{name: value.index_select(0, i) for name, value in fields.items()}, fresh=rows.fresh)


def encode_sources(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids of each text without [CLS]/[SEP], truncated to its first `max_length` tokens.

    Raises:
        ValueError: `max_length` < 1.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    return [e.ids[:max_length] for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def source_arrays(source_ids: Sequence[Sequence[int]], bos_id: int, eos_id: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The encoder's inputs: input_ids int64 [B, S] = [CLS] source [SEP] right-padded with [PAD]
    to the longest, and attention_mask int64 [B, S] (1 for real tokens); S = longest + 2."""
    width = max((len(s) for s in source_ids), default=0) + 2
    input_ids = np.full((len(source_ids), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(source_ids), width), dtype=np.int64)
    for i, source in enumerate(source_ids):
        input_ids[i, : len(source) + 2] = [bos_id, *source, eos_id]
        attention_mask[i, : len(source) + 2] = 1
    return input_ids, attention_mask


def _check(max_length: int, batch_size: int) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def greedy_decode(runner: StepRunner[Any], source_ids: Sequence[Sequence[int]], max_length: int, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Hypothesis]:
    """Greedy decoding of every source through `runner` (rules in the module docstring).

    Args:
        runner: the model (`TorchRunner`, or the export's ONNX runner).
        source_ids: token ids of each source, without [CLS]/[SEP].
        max_length: most generated tokens per sentence, [SEP] excluded.
        batch_size: sentences per batch.
    Returns:
        one `Hypothesis` per source, in order.
    Raises:
        ValueError: `max_length` or `batch_size` < 1.
    """
    _check(max_length, batch_size)
    out: list[Hypothesis] = []
    for start in range(0, len(source_ids), batch_size):
        out.extend(_greedy_batch(runner, source_ids[start : start + batch_size], max_length))
    return out


def _greedy_batch(runner: StepRunner[Any], source_ids: Sequence[Sequence[int]], max_length: int) -> list[Hypothesis]:
    rows = runner.start(*source_arrays(source_ids, runner.bos_id, runner.eos_id, runner.pad_id))
    tokens_out: list[list[int]] = [[] for _ in source_ids]
    scores = np.zeros(len(source_ids), dtype=np.float64)
    alive = np.arange(len(source_ids))  # the sentence of each row
    tokens = np.full(len(source_ids), runner.bos_id, dtype=np.int64)
    for position in range(max_length):
        log_probs, rows = runner.step(rows, tokens, position)
        choice = _allowed(log_probs, runner, position).argmax(axis=1)
        scores[alive] += log_probs[np.arange(len(alive)), choice]
        keep = choice != runner.eos_id
        for sentence, token in zip(alive[keep], choice[keep], strict=True):
            tokens_out[sentence].append(int(token))
        if not keep.any() or position == max_length - 1:
            break
        if not keep.all():
            rows = runner.select(rows, np.flatnonzero(keep))
        alive, tokens = alive[keep], choice[keep].astype(np.int64)
    return [Hypothesis(tuple(t), float(s)) for t, s in zip(tokens_out, scores, strict=True)]


def _allowed(log_probs: np.ndarray, runner: StepRunner[Any], position: int) -> np.ndarray:
    """float64 copy of `log_probs` [rows, V] with [PAD], [CLS], [UNK] (and [SEP] at the first step) at -inf."""
    allowed = log_probs.astype(np.float64)
    allowed[:, [runner.pad_id, runner.bos_id, runner.unk_id]] = -np.inf
    if position == 0:
        allowed[:, runner.eos_id] = -np.inf
    return allowed


def _score(logprob: float, length: int, length_penalty: float) -> float:
    """A finished hypothesis' rank score (rule 1): its log-prob sum over its length ** alpha."""
    return logprob / float(length) ** length_penalty


def _top_candidates(scores: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the `count` highest `scores` (1-D), highest first; exact ties by lower index."""
    count = min(count, scores.size)
    part = np.argpartition(-scores, count - 1)[:count]
    threshold = scores[part].min()
    chosen = np.flatnonzero(scores >= threshold)  # every tie at the boundary, so the lower index wins
    return chosen[np.lexsort((chosen, -scores[chosen]))][:count]


def beam_decode(
    runner: StepRunner[Any],
    source_ids: Sequence[Sequence[int]],
    beam_width: int,
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    length_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """Beam search of every source through `runner` (rules in the module docstring).

    Args:
        runner: the model (`TorchRunner`, or the export's ONNX runner).
        source_ids: token ids of each source, without [CLS]/[SEP].
        beam_width: W, live hypotheses per sentence (>= 1; must be below the vocabulary size).
        max_length: most generated tokens per sentence, [SEP] excluded.
        batch_size: sentences per batch (W rows each).
        length_penalty: alpha of score = logprob / length ** alpha (0: the raw sum; 1: the mean
            log-prob per token, the service's default).
    Returns:
        per source, its finished hypotheses (at least W), best first by score.
    Raises:
        ValueError: `beam_width`, `max_length` or `batch_size` < 1, `beam_width` >= the vocabulary
            less the never-chosen tokens, or a length penalty that is not a finite number.
    """
    _check(max_length, batch_size)
    if not 1 <= beam_width < runner.vocab_size - 3:
        raise ValueError(f"beam_width must be in [1, {runner.vocab_size - 4}] (below the vocabulary size), got {beam_width}")
    if not np.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty}")
    out: list[list[Hypothesis]] = []
    for start in range(0, len(source_ids), batch_size):
        out.extend(_beam_batch(runner, source_ids[start : start + batch_size], beam_width, max_length, length_penalty))
    return out


@dataclasses.dataclass(frozen=True, order=True)
class _Finished:
    """A finished hypothesis' rank: higher score first, then the one finished first (rule 4)."""

    neg_score: float
    found: int
    hypothesis: Hypothesis = dataclasses.field(compare=False)


def _beam_batch(
    runner: StepRunner[Any], source_ids: Sequence[Sequence[int]], width: int, max_length: int, alpha: float
) -> list[list[Hypothesis]]:
    vocab, eos = runner.vocab_size, runner.eos_id
    rows = runner.start(*source_arrays(source_ids, runner.bos_id, eos, runner.pad_id))
    finished: list[list[_Finished]] = [[] for _ in source_ids]
    active = list(range(len(source_ids)))  # the sentence of each block of `beams` rows
    live: list[list[tuple[int, ...]]] = [[()] for _ in source_ids]  # per active sentence, its live hypotheses
    sums = np.zeros((len(source_ids), 1), dtype=np.float64)  # [active, beams]
    tokens = np.full(len(source_ids), runner.bos_id, dtype=np.int64)
    for position in range(max_length):
        log_probs, rows = runner.step(rows, tokens, position)
        beams = sums.shape[1]
        allowed = _allowed(log_probs, runner, position).reshape(len(active), beams, vocab)
        total = (sums[:, :, None] + allowed).reshape(len(active), beams * vocab)
        keep_rows: list[int] = []
        next_tokens: list[int] = []
        next_sums: list[list[float]] = []
        next_live: list[list[tuple[int, ...]]] = []
        next_active: list[int] = []
        for a, sentence in enumerate(active):
            done = finished[sentence]
            grown: list[tuple[int, int, float]] = []  # (beam, token, sum) in rank order
            for rank, flat in enumerate(_top_candidates(total[a], 2 * width)):
                beam, token = divmod(int(flat), vocab)
                if token == eos:
                    if rank < width:
                        h = Hypothesis(live[a][beam], float(total[a, flat]))
                        done.append(_Finished(-_score(h.logprob, position + 1, alpha), len(done), h))
                elif len(grown) < width:
                    grown.append((beam, token, float(total[a, flat])))
            assert len(grown) == width, "fewer than beam_width live candidates: a beam has at most one [SEP] among 2W"
            hypotheses = [(*live[a][beam], token) for beam, token, _ in grown]
            if position == max_length - 1:
                for tokens_of, (_, _, total_sum) in zip(hypotheses, grown, strict=True):
                    done.append(_Finished(-_score(total_sum, max_length, alpha), len(done), Hypothesis(tokens_of, total_sum)))
                continue
            if len(done) >= width:
                wth = sorted(done)[width - 1]
                if -wth.neg_score >= _score(grown[0][2], min(position + 2, max_length), alpha):
                    continue
            keep_rows.extend(a * beams + beam for beam, _, _ in grown)
            next_tokens.extend(token for _, token, _ in grown)
            next_sums.append([s for _, _, s in grown])
            next_live.append(hypotheses)
            next_active.append(sentence)
        if not next_active:
            break
        rows = runner.select(rows, np.asarray(keep_rows, dtype=np.int64))
        tokens = np.asarray(next_tokens, dtype=np.int64)
        sums = np.asarray(next_sums, dtype=np.float64)
        live, active = next_live, next_active
    return [[f.hypothesis for f in sorted(done)] for done in finished]


def _check_positions(model: ParaphraseTransformer, max_length: int) -> None:
    if max_length > model.config.max_positions:
        raise ValueError(f"max_length ({max_length}) must be at most the model's max_positions ({model.config.max_positions})")


def greedy(model: ParaphraseTransformer, source_ids: list[list[int]], max_length: int, batch_size: int = DEFAULT_BATCH_SIZE) -> list[list[int]]:
    """Greedy paraphrases of `source_ids` by `model` in PyTorch (KV cache, batched).

    Args:
        model: the encoder-decoder (put in eval mode).
        source_ids: token ids of each source, without [CLS]/[SEP] (`encode_sources`).
        max_length: most generated tokens per sentence, [SEP] excluded (the paper: 20).
        batch_size: sentences decoded together.
    Returns:
        per source, the generated token ids without [CLS]/[SEP].
    Raises:
        ValueError: `max_length` or `batch_size` < 1; a source longer than the model's positions.
    """
    _check_positions(model, max_length)
    return [list(h.token_ids) for h in greedy_decode(TorchRunner(model), source_ids, max_length, batch_size)]


def beam_search(
    model: ParaphraseTransformer,
    source_ids: list[list[int]],
    beam_width: int,
    max_length: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    length_penalty: float = 0.0,
) -> list[list[int]]:
    """The best beam-search paraphrase of each source by `model` in PyTorch (KV cache, batched;
    scoring in the module docstring).

    Args:
        model: the encoder-decoder (put in eval mode).
        source_ids: token ids of each source, without [CLS]/[SEP] (`encode_sources`).
        beam_width: live hypotheses per sentence.
        max_length: most generated tokens per sentence, [SEP] excluded.
        batch_size: sentences decoded together.
        length_penalty: alpha of the finished hypotheses' score = logprob / length ** alpha (0:
            the raw sum; 1: the mean per token, the service's default).
    Returns:
        per source, the best hypothesis' token ids without [CLS]/[SEP].
    Raises:
        ValueError: a width, length or batch size out of range; a source longer than the model's positions.
    """
    _check_positions(model, max_length)
    decoded = beam_decode(TorchRunner(model), source_ids, beam_width, max_length, batch_size, length_penalty)
    return [list(hs[0].token_ids) for hs in decoded]
