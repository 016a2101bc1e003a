"""Decoding a paraphrase token by token: greedy, beam search, diverse beam search and sampling.

Why Facet's own code: decoding and candidate selection are the serving product of the paraphrase
capability. The model is served as one ONNX decoder step with a KV cache (`catalog`), so the loop
that turns steps into sentences runs here, in the service, over the backend interface, and so on
every backend alike. Numpy only: no torch, no gRPC.

The model is seen through `StepModel` (the service implements it over the backend): `start` runs
the encoder once and makes `rows` empty hypotheses, `step` appends one token to every row and
returns each row's next-token log-probabilities, `select` keeps or duplicates rows (a beam
reorder). Every strategy batches all its rows (beams or samples) into ONE `step` call per time
step, so the backend's batcher sees one batched call per step.

Rules shared by every strategy (a user relies on them):

- A hypothesis holds at most `max_length` tokens ([CLS]/[SEP] excluded). It ends when it emits
  [SEP] (its log-probability then includes [SEP]'s) or when it reaches `max_length` tokens
  (cut: no [SEP] term). At most `max_length` `step` calls per decode.
- [PAD] and [CLS] are never generated, and [SEP] is not allowed as the first token (no empty
  paraphrase): their log-probabilities are set to -inf for the choice only.
- `Hypothesis.logprob` is the sum of the chosen tokens' log-probabilities in the model's own
  distribution (before temperature, top-k, top-p or the diversity penalty).
- Candidates are ranked by `score = logprob / length ** length_penalty`, where `length` counts
  the generated tokens including [SEP] (Wu et al. 2016, "Google's Neural Machine Translation
  System", §7, use a smoothed variant; this is the plain power of Hugging Face `generate`).
  `length_penalty=0` ranks by the raw sum of log-probabilities; `1` (the default) by the mean
  log-probability per token, which keeps beam search from preferring short outputs.

Beam search (the rule of fairseq's `SequenceGenerator` and Hugging Face's `BeamSearchScorer`):
at each step the `beam_width` live hypotheses are extended by every token; of the candidates
ranked by cumulative log-probability, the first `2 * beam_width` are looked at in order: one that
ends in [SEP] within the first `beam_width` ranks becomes a finished hypothesis, the first
`beam_width` that do not end in [SEP] are the next live beams. The `beam_width` best finished
hypotheses (by score) are kept (ties: the one finished first). Search stops when `beam_width`
hypotheses have finished and the worst of them scores at least as well as the best live beam
would if it ended now (its sum with a certain [SEP] next: `sum / (tokens + 1) ** length_penalty`),
or at `max_length`, where the live beams are kept as cut hypotheses. For `length_penalty <= 0`
that is an exact bound (log-probs are <= 0: a live beam's sum can only fall, and its length only
grow), so stopping never changes the result; for `length_penalty > 0` it is Hugging Face's default
(`early_stopping=False`) heuristic, which saves running every search to `max_length`.
This is, token for token, the rule of the PyTorch reference `training.paraphrase.generate.beam_search`
(ties to the lower beam, then the lower token id; the same masks; pass it the same `length_penalty`,
whose default there is 0, the raw sum).

Diverse beam search: Vijayakumar et al. 2018, "Diverse Beam Search: Decoding Diverse Solutions
from Neural Sequence Models" (AAAI), §4 (Algorithm 1), with Hamming diversity: the beams are
split into `beam_groups` groups of `beam_width / beam_groups`; at each time step the groups
choose in turn, and group g's candidates are penalised by `diversity_penalty` times the number of
times earlier groups chose the same token at this step. The penalty only steers the choice; the
sequence's log-probability and score do not include it. One group of all beams (or a penalty of
0 with one group) is plain beam search.

Sampling: temperature (logits / T), then top-k (keep the k most probable tokens; Fan et al.
2018, "Hierarchical Neural Story Generation"), then top-p / nucleus (keep the smallest set
of most probable tokens whose probability reaches p; Holtzman et al. 2020, "The Curious Case of
Neural Text Degeneration", §3.1), in Hugging Face's order. `n` samples are `n` rows of one batch,
drawn with `numpy.random.default_rng(seed)`: the same seed gives the same samples.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol, TypeAlias

import numpy as np

DecodeState: TypeAlias = Any
"""Whatever the `StepModel` keeps per decode (the KV caches, positions, ...); opaque here."""

STRATEGIES = ("greedy", "beam", "diverse_beam", "sample")
STREAM_STRATEGIES = ("greedy", "sample")
DEFAULT_BEAM_WIDTH = 4  # beams when `beam_width` is not given (at least `n`); fairseq's default is 5, HF's 1


class StepModel(Protocol):
    """A paraphraser's decoder seen one step at a time (the service implements it over a backend).

    Attributes:
        vocab_size: the width V of `step`'s log-probabilities.
        bos_id, eos_id, pad_id, unk_id: the ids of [CLS] (fed at the first step), [SEP] (ends a
            hypothesis), [PAD] and [UNK] (never generated: it decodes to no text).
        max_length: the most tokens a hypothesis may hold, [CLS]/[SEP] excluded.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int
    unk_id: int
    max_length: int

    async def start(self, source_ids: Sequence[int], rows: int) -> DecodeState:
        """Run the encoder once on `source_ids` (no [CLS]/[SEP]) and make `rows` empty hypotheses."""
        ...

    async def step(self, state: DecodeState, tokens: np.ndarray) -> np.ndarray:
        """Append `tokens` (int64 [rows]; [CLS] at the first step) to every row of `state` (updating it).

        Returns:
            float32 [rows, vocab_size]: each row's log-probabilities of the next token.
        """
        ...

    def select(self, state: DecodeState, rows: np.ndarray) -> DecodeState:
        """Keep the rows `rows` (int64 [k], indices into the current rows, repeats allowed), in that order.

        Returns:
            the new state of k rows (row i is a copy of old row `rows[i]`).
        """
        ...


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """One decoded sequence.

    Attributes:
        token_ids: the generated tokens, without [CLS] and [SEP].
        logprob: sum of the chosen tokens' log-probabilities (natural log), [SEP]'s included
            when the hypothesis ended with it, in the model's distribution (before temperature,
            top-k/top-p or any penalty).
    """

    token_ids: tuple[int, ...]
    logprob: float


def _positive_int(name: str, value: int, limit: int | None, limit_name: str) -> None:
    if limit is not None and not 1 <= value <= limit:
        raise ValueError(f"{name} must be between 1 and {limit} ({limit_name}), got {value}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


@dataclasses.dataclass(frozen=True)
class DecodingOptions:
    """How to decode. Every field is checked by `validate`; a field that a strategy does not use
    is ignored (still checked).

    Attributes:
        strategy: one of `STRATEGIES`: "greedy", "beam", "diverse_beam", "sample".
        n: hypotheses wanted; greedy makes 1, sample makes `n` (one row each); beam searches
            return up to `beam_width` (n <= beam_width).
        beam_width: beams (B); None: max(n, DEFAULT_BEAM_WIDTH), rounded up to a multiple of
            `beam_groups` for diverse beam search.
        beam_groups: groups (G) of diverse beam search; must divide `beam_width`; None:
            `beam_width` groups of one beam (G = B: the most exploration, per Vijayakumar et al.).
        diversity_penalty: lambda of diverse beam search (Hamming diversity), >= 0.
        temperature: sampling temperature, > 0 (< 1 sharpens, > 1 flattens).
        top_p: nucleus sampling mass, in (0, 1]; 1 keeps every token.
        top_k: sample from the k most probable tokens; 0 keeps every token.
        max_length: most tokens of a hypothesis ([CLS]/[SEP] excluded); None: the model's.
        seed: seed of the sampler (>= 0); None: fresh randomness per call.
        length_penalty: alpha of `score = logprob / length ** alpha` (module docstring);
            0 ranks by the raw sum of log-probabilities.
    """

    strategy: str = "beam"
    n: int = 1
    beam_width: int | None = None
    beam_groups: int | None = None
    diversity_penalty: float = 0.5
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_length: int | None = None
    seed: int | None = None
    length_penalty: float = 1.0

    def validate(
        self,
        *,
        max_n: int | None = None,
        max_beam_width: int | None = None,
        max_length: int | None = None,
    ) -> DecodingOptions:
        """Check every field against the rules and the given limits; fill in the defaults.

        Args:
            max_n: the most hypotheses a call may ask for (None: no limit).
            max_beam_width: the most beams (None: no limit).
            max_length: the most tokens a hypothesis may hold (the model's `max_length`);
                None: no limit, and `max_length` stays None if not given.

        Returns:
            a copy with `beam_width`, `beam_groups` and `max_length` resolved (validating it
            again returns it unchanged).

        Raises:
            ValueError: naming the field, the rule or limit, and the value given.
        """
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        _positive_int("n", self.n, max_n, "the most paraphrases per call")
        if self.strategy == "greedy" and self.n != 1:
            raise ValueError(
                f"n must be 1 for strategy 'greedy' (it makes one hypothesis), got {self.n}; use 'beam', 'diverse_beam' or 'sample'"
            )
        if not math.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):  # NaN fails too
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}")
        if not math.isfinite(self.diversity_penalty) or self.diversity_penalty < 0:
            raise ValueError(f"diversity_penalty must be >= 0, got {self.diversity_penalty}")
        if not math.isfinite(self.length_penalty):
            raise ValueError(f"length_penalty must be a finite number, got {self.length_penalty}")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        length = self.max_length
        if length is not None:
            _positive_int("max_length", length, max_length, "the model's max_length")
        else:
            length = max_length
        if self.beam_groups is not None:
            _positive_int("beam_groups", self.beam_groups, max_beam_width, "the most beams")
        groups = self.beam_groups
        width = self.beam_width
        if width is not None:
            _positive_int("beam_width", width, max_beam_width, "the most beams")
        elif self.strategy in ("beam", "diverse_beam"):
            width = max(self.n, DEFAULT_BEAM_WIDTH)
            if self.strategy == "diverse_beam" and groups is not None:
                width = -(-width // groups) * groups
            if max_beam_width is not None and width > max_beam_width:
                width = max_beam_width
                if self.strategy == "diverse_beam" and groups is not None:
                    width = width // groups * groups
        if self.strategy in ("beam", "diverse_beam"):
            assert width is not None
            if self.n > width:
                raise ValueError(
                    f"n ({self.n}) must be <= beam_width ({width}) for strategy {self.strategy!r}: n > beam width"
                )
            if self.strategy == "diverse_beam":
                if groups is None:
                    groups = width
                if groups > width or width % groups:
                    raise ValueError(f"beam_groups ({groups}) must divide beam_width ({width})")
        return dataclasses.replace(self, beam_width=width, beam_groups=groups, max_length=length)


def _allowed(log_probs: np.ndarray, model: StepModel, first: bool) -> np.ndarray:
    """float64 copy of `log_probs` [rows, V] with [PAD], [CLS], [UNK] (and [SEP] at the first step) at -inf."""
    scores = log_probs.astype(np.float64, copy=True)
    scores[:, [model.pad_id, model.bos_id, model.unk_id]] = -np.inf
    if first:
        scores[:, model.eos_id] = -np.inf
    return scores


def _score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / float(length) ** length_penalty


def _check_log_probs(log_probs: np.ndarray, rows: int, model: StepModel) -> np.ndarray:
    if log_probs.shape != (rows, model.vocab_size):
        raise ValueError(f"step returned log_probs of shape {log_probs.shape}, expected ({rows}, {model.vocab_size})")
    return log_probs


NUCLEUS_CANDIDATES = (256, 2048)  # top-p looks among this many most probable tokens first, then at all


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """`probs` [rows, W] (each row sums to 1) with every token outside its row's nucleus set to 0:
    the most probable tokens until their mass reaches `top_p` (every token tied with the least
    probable one in the nucleus is kept too).

    Only the probability at the nucleus' edge is needed, not an order of tokens: it is found among
    the `NUCLEUS_CANDIDATES` highest values of a row (`partition`, then a sort of those values), and
    a row goes on to more candidates, at last all, only when they do not hold the nucleus; sorting
    a whole vocabulary per step would cost more than a model step on a CPU."""
    rows, width = probs.shape
    edge = np.zeros(rows)
    pending = np.arange(rows)
    for count in (*(c for c in NUCLEUS_CANDIDATES if c < width), width):
        part = probs[pending]
        values = -np.partition(-part, count - 1, axis=1)[:, :count] if count < width else part.copy()
        values.sort(axis=1)
        values = values[:, ::-1]  # most probable first
        inside = (np.cumsum(values, axis=1) - values) < top_p  # the mass before a token is < p: it is in
        done = ~inside[:, -1] if count < width else np.ones(len(pending), dtype=bool)  # it ended inside
        size = inside.sum(axis=1)
        edge[pending[done]] = values[np.flatnonzero(done), size[done] - 1]
        pending = pending[~done]
        if not len(pending):
            break
    return np.where(probs >= edge[:, None], probs, 0.0)


def _sample(scores: np.ndarray, options: DecodingOptions, rng: np.random.Generator) -> np.ndarray:
    """One token per row from `scores` (log-probs [rows, V], -inf where not allowed): temperature,
    then top-k, then top-p (module docstring), then inverse-CDF sampling with one uniform draw per
    row. Returns int64 [rows]."""
    rows, vocab = scores.shape
    logits = scores / options.temperature
    ids: np.ndarray | None = None
    if 0 < options.top_k < vocab:  # only the k most probable columns go on
        ids = np.argpartition(-logits, options.top_k - 1, axis=1)[:, : options.top_k]
        ids.sort(axis=1)
        logits = np.take_along_axis(logits, ids, axis=1)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if options.top_p < 1.0:
        probs = _nucleus(probs, options.top_p)
    cumulative = np.cumsum(probs, axis=1)
    threshold = rng.random(rows) * cumulative[:, -1]
    chosen = (cumulative <= threshold[:, None]).sum(axis=1)  # the first column whose cumulative mass passes u
    last = probs.shape[1] - 1 - np.argmax(probs[:, ::-1] > 0, axis=1)  # rounding can leave u past the end
    chosen = np.minimum(chosen, last)
    if ids is not None:
        chosen = ids[np.arange(rows), chosen]
    return chosen.astype(np.int64)


async def _decode_rows(
    model: StepModel, source_ids: Sequence[int], options: DecodingOptions, rows: int
) -> AsyncGenerator[tuple[np.ndarray, np.ndarray, np.ndarray], None]:
    """Greedy or sampled decoding of `rows` independent rows, one batched `step` per time step.

    Yields, per step: (row numbers int64 [live] in 0..rows-1, chosen tokens int64 [live], their
    log-probs float64 [live]); a row that chose [SEP] is dropped from the batch (`model.select`).
    """
    assert options.max_length is not None
    rng = np.random.default_rng(options.seed)
    state = await model.start(source_ids, rows)
    live = np.arange(rows, dtype=np.int64)
    tokens = np.full(rows, model.bos_id, dtype=np.int64)
    for t in range(options.max_length):
        log_probs = _check_log_probs(await model.step(state, tokens), len(live), model)
        scores = _allowed(log_probs, model, first=t == 0)
        if options.strategy == "greedy":
            chosen = scores.argmax(axis=1).astype(np.int64)
        else:
            chosen = _sample(scores, options, rng)
        chosen_logprobs = log_probs[np.arange(len(live)), chosen].astype(np.float64)
        yield live, chosen, chosen_logprobs
        going = chosen != model.eos_id
        if not going.any():
            return
        if not going.all():
            kept = np.flatnonzero(going)
            state = model.select(state, kept)
            live, chosen = live[kept], chosen[kept]
        tokens = chosen


async def _greedy_or_sample(model: StepModel, source_ids: Sequence[int], options: DecodingOptions) -> list[Hypothesis]:
    rows = 1 if options.strategy == "greedy" else options.n
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs = [0.0] * rows
    ended = [False] * rows
    async with contextlib.aclosing(_decode_rows(model, source_ids, options, rows)) as steps:
        async for live, chosen, chosen_logprobs in steps:
            for row, token, logprob in zip(live.tolist(), chosen.tolist(), chosen_logprobs.tolist(), strict=True):
                logprobs[row] += logprob
                if token == model.eos_id:
                    ended[row] = True
                else:
                    tokens[row].append(token)
    scored = [
        _Scored(_score(lp, len(t) + int(e), options.length_penalty), i, Hypothesis(tuple(t), lp))
        for i, (t, lp, e) in enumerate(zip(tokens, logprobs, ended, strict=True))
    ]
    return [s.hypothesis for s in sorted(scored)]


@dataclasses.dataclass(frozen=True, order=True)
class _Scored:
    """A hypothesis with its ranking key: higher score first, then the one found first."""

    neg_score: float
    found: int
    hypothesis: Hypothesis = dataclasses.field(compare=False)

    def __init__(self, score: float, found: int, hypothesis: Hypothesis) -> None:
        object.__setattr__(self, "neg_score", -score)
        object.__setattr__(self, "found", found)
        object.__setattr__(self, "hypothesis", hypothesis)


@dataclasses.dataclass
class _Beam:
    row: int  # its row in the model's current batch
    tokens: tuple[int, ...]
    logprob: float


def _best_possible(logprob: float, length: int, options: DecodingOptions) -> float:
    """The stopping test's score of a live beam of `length` tokens and log-prob sum `logprob`:
    its score if it ended now with a certain [SEP] (module docstring)."""
    assert options.max_length is not None
    return _score(logprob, min(length + 1, options.max_length), options.length_penalty)


def _top_candidates(scores: np.ndarray, count: int) -> np.ndarray:
    """Flat indices of the `count` highest of `scores` (1-D), highest first; exact ties to the lower
    index (the earlier beam, then the lower token id), also at the cut."""
    count = min(count, scores.size)
    threshold = scores[np.argpartition(-scores, count - 1)[:count]].min()
    chosen = np.flatnonzero(scores >= threshold)  # every tie at the cut, so that the lower index wins
    return chosen[np.lexsort((chosen, -scores[chosen]))][:count]


def _keep_finished(finished: list[_Scored], new: _Scored, size: int) -> None:
    """Insert `new` into `finished` (sorted best first) and keep the best `size`."""
    finished.append(new)
    finished.sort()
    del finished[size:]


async def _beam_search(model: StepModel, source_ids: Sequence[int], options: DecodingOptions) -> list[Hypothesis]:
    """Beam search, or diverse beam search with `beam_groups` groups (module docstring)."""
    assert options.beam_width is not None and options.max_length is not None
    diverse = options.strategy == "diverse_beam"
    groups = (options.beam_groups or options.beam_width) if diverse else 1
    per_group = options.beam_width // groups
    penalty = options.diversity_penalty if diverse else 0.0
    vocab, eos, alpha = model.vocab_size, model.eos_id, options.length_penalty
    state = await model.start(source_ids, 1)  # every beam starts as the same empty hypothesis: one row
    live: list[list[_Beam]] = [[_Beam(0, (), 0.0)] for _ in range(groups)]
    finished: list[list[_Scored]] = [[] for _ in range(groups)]
    done = [False] * groups
    found = 0
    tokens = np.full(1, model.bos_id, dtype=np.int64)
    for t in range(options.max_length):
        log_probs = _check_log_probs(await model.step(state, tokens), len(tokens), model)
        scores = _allowed(log_probs, model, first=t == 0)
        chosen_before = np.zeros(vocab, dtype=np.float64)  # Hamming diversity: tokens earlier groups chose at t
        for g in range(groups):
            if done[g]:
                continue
            beams = live[g]
            cumulative = np.array([b.logprob for b in beams])[:, None] + scores[[b.row for b in beams]]
            choice = (cumulative - penalty * chosen_before[None, :]).ravel()
            top = _top_candidates(choice, 2 * per_group)
            extended: list[_Beam] = []
            for rank, index in enumerate(top.tolist()):
                if not math.isfinite(choice[index]):
                    break
                parent, token = divmod(index, vocab)
                logprob = float(cumulative[parent, token])
                if token == eos:
                    if rank < per_group:
                        hypothesis = Hypothesis(beams[parent].tokens, logprob)
                        _keep_finished(
                            finished[g], _Scored(_score(logprob, t + 1, alpha), found, hypothesis), per_group
                        )
                        found += 1
                    continue
                extended.append(_Beam(beams[parent].row, beams[parent].tokens + (token,), logprob))
                chosen_before[token] += 1
                if len(extended) == per_group:
                    break
            live[g] = extended
        for g in range(groups):
            if done[g]:
                continue
            if t + 1 == options.max_length:  # cut: kept as hypotheses without [SEP]
                for beam in live[g]:
                    hypothesis = Hypothesis(beam.tokens, beam.logprob)
                    _keep_finished(
                        finished[g], _Scored(_score(beam.logprob, t + 1, alpha), found, hypothesis), per_group
                    )
                    found += 1
                done[g] = True
            elif not live[g]:
                done[g] = True
            elif len(finished[g]) >= per_group:
                best_live = max(_best_possible(b.logprob, t + 1, options) for b in live[g])
                done[g] = -finished[g][-1].neg_score >= best_live
        if all(done):
            break
        going = [beam for g, beams in enumerate(live) if not done[g] for beam in beams]
        state = model.select(state, np.array([beam.row for beam in going], dtype=np.int64))
        for row, beam in enumerate(going):
            beam.row = row
        tokens = np.array([beam.tokens[-1] for beam in going], dtype=np.int64)
    return [s.hypothesis for s in sorted(s for group in finished for s in group)]


async def generate(model: StepModel, source_ids: Sequence[int], options: DecodingOptions) -> list[Hypothesis]:
    """Decode hypotheses of the sentence `source_ids` with `options.strategy`.

    Args:
        model: the paraphraser, one step at a time.
        source_ids: the source's token ids, without [CLS]/[SEP].
        options: how to decode; checked by `options.validate(max_length=model.max_length)` (the
            service validates first with its own limits).

    Returns:
        best first by `score` (module docstring): greedy 1 hypothesis, sample `n` (one per row,
        duplicates possible), beam and diverse beam up to `beam_width` (every group's best
        finished ones), which may be more than `n`: the caller filters and keeps `n`.

    Raises:
        ValueError: a bad option (naming the field and the limit), or log-probs of the wrong shape.
    """
    options = options.validate(max_length=model.max_length)
    if options.strategy in ("beam", "diverse_beam"):
        return await _beam_search(model, source_ids, options)
    return await _greedy_or_sample(model, source_ids, options)


async def stream(
    model: StepModel, source_ids: Sequence[int], options: DecodingOptions
) -> AsyncGenerator[tuple[int, float], None]:
    """Decode one hypothesis greedily or by sampling, yielding each token as it is chosen.

    Yields:
        (token id, its log-probability in the model's distribution) per step; the last is
        (`model.eos_id`, its log-prob) when the hypothesis ends with [SEP], and none comes after
        `max_length` tokens. The log-probs sum to `generate`'s `Hypothesis.logprob`.
        The model is stepped only while the caller iterates: closing the iterator (`aclose()`,
        or a cancelled task) stops decoding; no `step` call follows.

    Raises:
        ValueError: a bad option, a strategy other than "greedy"/"sample", or n != 1 (raised at
            the first iteration; validate the options first to fail before streaming).
    """
    options = options.validate(max_length=model.max_length)
    if options.strategy not in STREAM_STRATEGIES:
        raise ValueError(
            f"strategy must be one of {', '.join(STREAM_STRATEGIES)} to stream tokens, got {options.strategy!r}"
        )
    if options.n != 1:
        raise ValueError(f"n must be 1 to stream tokens (one hypothesis), got {options.n}")
    async with contextlib.aclosing(_decode_rows(model, source_ids, options, 1)) as steps:
        async for _, chosen, chosen_logprobs in steps:
            yield int(chosen[0]), float(chosen_logprobs[0])
