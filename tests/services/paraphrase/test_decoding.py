"""Decoding strategies over a hand-written step model (services/paraphrase/decoding.py).

The step model below is a table of next-token probabilities keyed by the whole prefix decoded so
far (so a wrong beam reorder reads the wrong row). Every expected sequence and log-probability is
worked out by hand from the table in the test's comments.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pytest

from services.paraphrase.decoding import DecodingOptions, generate, stream

PAD, UNK, CLS, SEP, A, B, C, D = range(8)
VOCAB = 8


def dist(probs: dict[int, float]) -> np.ndarray:
    """A distribution over the 8 tokens: `probs`, the rest of the mass shared by the other tokens."""
    rest = [t for t in range(VOCAB) if t not in probs]
    p = np.full(VOCAB, (1.0 - sum(probs.values())) / len(rest))
    for token, value in probs.items():
        p[token] = value
    return p


@dataclasses.dataclass
class State:
    prefixes: list[tuple[int, ...]]
    started: bool = False


class TableModel:
    """A `StepModel`: log p(next | prefix) from `table[prefix]`, `default` for prefixes not in it."""

    vocab_size = VOCAB
    bos_id = CLS
    eos_id = SEP
    pad_id = PAD
    unk_id = UNK

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]], default: dict[int, float], max_length: int = 6):
        self.table = {prefix: dist(p) for prefix, p in table.items()}
        self.default = dist(default)
        self.max_length = max_length
        self.starts: list[int] = []
        self.calls: list[int] = []  # rows of each step call

    async def start(self, source_ids: Sequence[int], rows: int) -> State:
        self.starts.append(rows)
        return State([()] * rows)

    async def step(self, state: State, tokens: np.ndarray) -> np.ndarray:
        assert tokens.dtype == np.int64 and tokens.shape == (len(state.prefixes),)
        if not state.started:
            assert (tokens == CLS).all()
            state.started = True
        else:
            state.prefixes = [p + (int(t),) for p, t in zip(state.prefixes, tokens, strict=True)]
        self.calls.append(len(tokens))
        return np.log(np.stack([self.table.get(p, self.default) for p in state.prefixes])).astype(np.float32)

    def select(self, state: State, rows: np.ndarray) -> State:
        return State([state.prefixes[i] for i in rows.tolist()], state.started)


def myopic() -> TableModel:
    # greedy takes A (.5 > .49) then A (.34) then [SEP] (.99): .5 * .34 * .99 = .1683;
    # B C [SEP] is .49 * .99 * .99 = .4802, found by a beam of 2.
    return TableModel(
        {(): {A: 0.5, B: 0.49}, (A,): {A: 0.34, B: 0.33, C: 0.32}, (B,): {C: 0.99}},
        default={SEP: 0.99},
    )


GREEDY_LOGPROB = math.log(0.5) + math.log(0.34) + math.log(0.99)
BEAM_LOGPROB = math.log(0.49) + math.log(0.99) + math.log(0.99)


async def test_greedy_takes_the_most_probable_token_at_each_step() -> None:
    model = myopic()
    out = await generate(model, [7, 7], DecodingOptions(strategy="greedy"))
    assert [h.token_ids for h in out] == [(A, A)]
    assert out[0].logprob == pytest.approx(GREEDY_LOGPROB, abs=1e-5)
    assert model.calls == [1, 1, 1]  # A, A, [SEP]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
async def test_beam_search_finds_the_sequence_greedy_misses(length_penalty: float) -> None:
    model = myopic()
    out = await generate(model, [7], DecodingOptions(strategy="beam", n=2, beam_width=2, length_penalty=length_penalty))
    # both finish at step 3: B C [SEP] (.4802) before A A [SEP] (.1683), same length
    assert [h.token_ids for h in out] == [(B, C), (A, A)]
    assert out[0].logprob == pytest.approx(BEAM_LOGPROB, abs=1e-5)
    assert out[1].logprob == pytest.approx(GREEDY_LOGPROB, abs=1e-5)
    assert out[0].logprob > out[1].logprob
    # one row at the first step (every beam is the same empty hypothesis), then 2 beams, one call per step
    assert model.starts == [1] and model.calls == [1, 2, 2]


async def test_beam_search_default_width_returns_the_best_first() -> None:
    out = await generate(myopic(), [7], DecodingOptions(strategy="beam"))
    assert out[0].token_ids == (B, C)
    assert out[0].logprob == pytest.approx(BEAM_LOGPROB, abs=1e-5)
    assert len(out) == 4  # DEFAULT_BEAM_WIDTH hypotheses for the caller to filter


async def test_length_penalty_zero_ranks_by_the_raw_sum_one_by_the_mean() -> None:
    # A [SEP]: ln .99 + ln .5 = -0.7032 (2 tokens, mean -0.3516)
    # A C [SEP]: ln .99 + ln .49 + ln .99 = -0.7334 (3 tokens, mean -0.2445)
    table = {(): {A: 0.99}, (A,): {SEP: 0.5, C: 0.49}}
    short, long = (A,), (A, C)
    raw = await generate(TableModel(table, {SEP: 0.99}), [7], DecodingOptions(n=2, beam_width=2, length_penalty=0.0))
    assert [h.token_ids for h in raw] == [short, long]
    mean = await generate(TableModel(table, {SEP: 0.99}), [7], DecodingOptions(n=2, beam_width=2, length_penalty=1.0))
    assert [h.token_ids for h in mean] == [long, short]
    assert mean[0].logprob == pytest.approx(math.log(0.99) + math.log(0.49) + math.log(0.99), abs=1e-5)
    assert mean[1].logprob == pytest.approx(math.log(0.99) + math.log(0.5), abs=1e-5)


def two_way() -> TableModel:
    # A .7 / B .29, then C .5 / D .49 after either, then [SEP] .99
    return TableModel({(): {A: 0.7, B: 0.29}, (A,): {C: 0.5, D: 0.49}, (B,): {C: 0.5, D: 0.49}}, {SEP: 0.99})


async def test_diverse_beam_groups_return_different_sequences_where_beam_returns_near_copies() -> None:
    # beam of 2: A C (.35) and A D (.343) beat B C (.145): both start with A
    beam = await generate(two_way(), [7], DecodingOptions(strategy="beam", n=2, beam_width=2))
    assert [h.token_ids for h in beam] == [(A, C), (A, D)]
    # 2 groups of 1, penalty 1: group 1 takes A; for group 2, A scores ln .7 - 1 = -1.36 < ln .29 = -1.24,
    # so B; at step 2 group 1 takes C, and group 2's C scores ln(.29 * .5) - 1 = -2.93 < ln(.29 * .49) = -1.95: D
    model = two_way()
    out = await generate(model, [7], DecodingOptions(strategy="diverse_beam", n=2, beam_width=2, diversity_penalty=1.0))
    assert [h.token_ids for h in out] == [(A, C), (B, D)]
    # the penalty steers the choice only: the log-probs are the model's
    assert out[0].logprob == pytest.approx(math.log(0.7) + math.log(0.5) + math.log(0.99), abs=1e-5)
    assert out[1].logprob == pytest.approx(math.log(0.29) + math.log(0.49) + math.log(0.99), abs=1e-5)
    assert model.calls == [1, 2, 2]  # both groups' beams in one call per step


async def test_diverse_beam_without_penalty_groups_repeat_each_other() -> None:
    out = await generate(
        two_way(), [7], DecodingOptions(strategy="diverse_beam", n=2, beam_width=2, diversity_penalty=0.0)
    )
    assert [h.token_ids for h in out] == [(A, C), (A, C)]


async def test_sampling_with_a_seed_is_reproducible() -> None:
    options = DecodingOptions(strategy="sample", n=8, seed=7)
    first = await generate(myopic(), [7], options)
    second = await generate(myopic(), [7], options)
    assert first == second
    draws = {
        tuple(h.token_ids for h in await generate(myopic(), [7], dataclasses.replace(options, seed=s)))
        for s in range(5)
    }
    assert len(draws) > 1


async def test_sampling_batches_the_n_samples_into_one_step_call_per_time_step() -> None:
    model = myopic()
    out = await generate(model, [7], DecodingOptions(strategy="sample", n=6, seed=3))
    assert model.starts == [6] and model.calls[0] == 6
    # every row is stepped once per token it generated ([SEP] included): the calls' rows add up to the
    # tokens, and there is one call per time step (the longest sample's length)
    assert sum(model.calls) == sum(len(h.token_ids) + 1 for h in out)
    assert len(model.calls) == max(len(h.token_ids) + 1 for h in out)


async def test_top_p_near_zero_samples_the_greedy_sequence() -> None:
    out = await generate(myopic(), [7], DecodingOptions(strategy="sample", n=5, top_p=1e-6, seed=0))
    assert [h.token_ids for h in out] == [(A, A)] * 5
    assert all(h.logprob == pytest.approx(GREEDY_LOGPROB, abs=1e-5) for h in out)


def first_token_model() -> TableModel:
    # at the first step [PAD], [CLS], [SEP] are not allowed: A .5, B .3, C .19, [UNK] .002, D .002 (sum .994)
    return TableModel({(): {A: 0.5, B: 0.3, C: 0.19}}, {SEP: 0.99}, max_length=1)


async def first_tokens(**options: object) -> np.ndarray:
    out = await generate(first_token_model(), [7], DecodingOptions(strategy="sample", n=4000, seed=11, **options))  # type: ignore[arg-type]
    return np.array([h.token_ids[0] for h in out])


async def test_temperature_below_one_sharpens_the_distribution() -> None:
    # T = 1: P(A) = .5 / .994 = .503; T = .5: p ** 2 renormalised: .25 / (.25 + .09 + .0361 + 2 * 4e-6) = .665
    assert (await first_tokens(temperature=1.0) == A).mean() == pytest.approx(0.503, abs=0.03)
    assert (await first_tokens(temperature=0.5) == A).mean() == pytest.approx(0.665, abs=0.03)


async def test_top_k_and_top_p_keep_only_the_most_probable_tokens() -> None:
    assert set((await first_tokens(top_k=2)).tolist()) == {A, B}
    # nucleus .6: A alone (.503) falls short of .6, A and B (.805) reach it, so C and the rest are cut;
    # A then has .5 / (.5 + .3) of the kept mass
    kept = await first_tokens(top_p=0.6)
    assert set(kept.tolist()) == {A, B}
    assert (kept == A).mean() == pytest.approx(0.5 / 0.8, abs=0.03)


async def test_pad_cls_and_an_empty_paraphrase_are_never_generated() -> None:
    model = TableModel({(): {PAD: 0.5, CLS: 0.3, SEP: 0.1, A: 0.09}}, {SEP: 0.99})
    out = await generate(model, [7], DecodingOptions(strategy="greedy"))
    assert out[0].token_ids == (A,)
    assert out[0].logprob == pytest.approx(math.log(0.09) + math.log(0.99), abs=1e-5)


async def test_a_hypothesis_is_cut_at_max_length() -> None:
    model = TableModel({}, {A: 0.99}, max_length=6)  # never ends
    out = await generate(model, [7], DecodingOptions(strategy="greedy", max_length=3))
    assert [h.token_ids for h in out] == [(A, A, A)]
    assert out[0].logprob == pytest.approx(3 * math.log(0.99), abs=1e-5)  # no [SEP] term
    assert len(model.calls) == 3
    beams = await generate(TableModel({}, {A: 0.99}), [7], DecodingOptions(strategy="beam", n=2, beam_width=2))
    assert beams[0].token_ids == (A,) * 6 and all(len(h.token_ids) <= 6 for h in beams)


async def test_stream_yields_the_greedy_tokens_and_their_log_probs() -> None:
    tokens = [item async for item in stream(myopic(), [7], DecodingOptions(strategy="greedy"))]
    assert [t for t, _ in tokens] == [A, A, SEP]
    assert [lp for _, lp in tokens] == pytest.approx([math.log(0.5), math.log(0.34), math.log(0.99)], abs=1e-5)


async def test_stream_stops_calling_the_model_when_the_caller_closes_it() -> None:
    model = TableModel({}, {A: 0.99}, max_length=6)  # would run 6 steps
    tokens = stream(model, [7], DecodingOptions(strategy="sample", seed=1))
    assert (await anext(tokens))[0] == A
    assert (await anext(tokens))[0] == A
    await tokens.aclose()
    assert model.calls == [1, 1]
    with pytest.raises(StopAsyncIteration):
        await anext(tokens)
    assert model.calls == [1, 1]


LIMITS = {"max_n": 8, "max_beam_width": 16, "max_length": 20}


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"strategy": "nucleus"}, "strategy", "greedy, beam, diverse_beam, sample"),
        ({"n": 0}, "n", "between 1 and 8"),
        ({"n": 9}, "n", "between 1 and 8"),
        ({"n": 5, "beam_width": 4}, "n", "n > beam width"),
        ({"strategy": "diverse_beam", "n": 3, "beam_width": 2, "beam_groups": 2}, "n", "n > beam width"),
        ({"strategy": "greedy", "n": 2}, "n", "must be 1"),
        ({"beam_width": 0}, "beam_width", "between 1 and 16"),
        ({"beam_width": 17}, "beam_width", "between 1 and 16"),
        ({"strategy": "diverse_beam", "beam_width": 6, "beam_groups": 4}, "beam_groups", "divide"),
        ({"strategy": "diverse_beam", "beam_groups": 0}, "beam_groups", "between 1 and 16"),
        ({"diversity_penalty": -1.0}, "diversity_penalty", ">= 0"),
        ({"temperature": 0.0}, "temperature", "> 0"),
        ({"temperature": -1.0}, "temperature", "> 0"),
        ({"temperature": math.nan}, "temperature", "> 0"),
        ({"top_p": 0.0}, "top_p", "(0, 1]"),
        ({"top_p": 1.5}, "top_p", "(0, 1]"),
        ({"top_p": math.nan}, "top_p", "(0, 1]"),
        ({"top_k": -1}, "top_k", ">= 0"),
        ({"max_length": 0}, "max_length", "between 1 and 20"),
        ({"max_length": 21}, "max_length", "between 1 and 20"),
        ({"seed": -1}, "seed", ">= 0"),
        ({"length_penalty": math.inf}, "length_penalty", "finite"),
    ],
)
def test_every_bad_option_is_refused_naming_the_field_and_the_limit(options: dict, field: str, says: str) -> None:
    with pytest.raises(ValueError) as error:
        DecodingOptions(**options).validate(**LIMITS)
    assert str(error.value).startswith(f"{field} ")
    assert says in str(error.value)


def test_validate_fills_in_the_defaults() -> None:
    assert DecodingOptions(n=6).validate(**LIMITS) == DecodingOptions(n=6, beam_width=6, max_length=20)
    diverse = DecodingOptions(strategy="diverse_beam", n=3, beam_groups=2).validate(**LIMITS)
    assert (diverse.beam_width, diverse.beam_groups) == (4, 2)  # max(n, 4) rounded up to a multiple of 2
    assert DecodingOptions(strategy="diverse_beam").validate(**LIMITS).beam_groups == 4  # G = B


async def test_generate_and_stream_refuse_options_the_model_cannot_honour() -> None:
    with pytest.raises(ValueError, match="^max_length .*between 1 and 6"):
        await generate(myopic(), [7], DecodingOptions(max_length=7))
    with pytest.raises(ValueError, match="^strategy .*greedy, sample"):
        await anext(stream(myopic(), [7], DecodingOptions(strategy="beam")))
    with pytest.raises(ValueError, match="^n must be 1"):
        await anext(stream(myopic(), [7], DecodingOptions(strategy="sample", n=2)))


class RandomModel:
    """log p(next | prefix): a fixed random table per prefix (seeded by the prefix), over 12 tokens;
    [PAD], [CLS] and a first-step [SEP] get ~e-20 so that the service's masks never bind, and
    [SEP] grows likelier with length so that sentences end."""

    vocab_size = 12
    bos_id = CLS
    eos_id = SEP
    pad_id = PAD
    unk_id = UNK

    def __init__(self, seed: int, max_length: int) -> None:
        self.seed = seed
        self.max_length = max_length

    def log_probs(self, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        out = []
        for prefix in prefixes:
            logits = np.random.default_rng([self.seed, len(prefix), *prefix]).normal(0.0, 2.0, self.vocab_size)
            logits[[PAD, CLS]] = -20.0
            logits[SEP] = -20.0 if not prefix else logits[SEP] + len(prefix) - 2
            out.append(logits - np.logaddexp.reduce(logits))
        return np.array(out, dtype=np.float32)

    # the service's StepModel
    async def start(self, source_ids: Sequence[int], rows: int) -> State:
        return State([()] * rows)

    async def step(self, state: State, tokens: np.ndarray) -> np.ndarray:
        if state.started:
            state.prefixes = [p + (int(t),) for p, t in zip(state.prefixes, tokens, strict=True)]
        state.started = True
        return self.log_probs(state.prefixes)

    def select(self, state: State, rows: np.ndarray) -> State:
        return State([state.prefixes[i] for i in rows.tolist()], state.started)


class ReferenceRunner:
    """The same model as the PyTorch reference search's `StepRunner` (one sentence)."""

    def __init__(self, model: RandomModel) -> None:
        self.model = model
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id, self.unk_id = model.vocab_size, CLS, SEP, PAD, UNK

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[tuple[int, ...] | None]:
        return [None] * len(input_ids)

    def step(self, rows: list[tuple[int, ...] | None], tokens: np.ndarray, position: int) -> tuple[np.ndarray, list]:
        grown = [() if p is None else (*p, int(t)) for p, t in zip(rows, tokens, strict=True)]
        return self.model.log_probs(grown), grown

    def select(self, rows: list, index: np.ndarray) -> list:
        return [rows[i] for i in index.tolist()]


async def test_greedy_and_beam_with_length_penalty_zero_match_the_pytorch_reference_search() -> None:
    # training/paraphrase/generate.py (the export's parity reference) decodes with the same rule:
    # the same tokens, the same log-probs and, for beam search, the same W best finished hypotheses.
    from training.paraphrase.generate import beam_decode, greedy_decode

    compared = 0
    for seed in range(60):
        model = RandomModel(seed, max_length=6)
        reference = ReferenceRunner(model)
        (expected,) = greedy_decode(reference, [[7]], max_length=6)
        (got,) = await generate(model, [7], DecodingOptions(strategy="greedy", length_penalty=0.0))
        assert (got.token_ids, got.logprob) == (expected.token_ids, pytest.approx(expected.logprob, abs=1e-9))
        for width in (1, 2, 4):
            (finished,) = beam_decode(reference, [[7]], beam_width=width, max_length=6)
            out = await generate(model, [7], DecodingOptions(strategy="beam", beam_width=width, length_penalty=0.0))
            assert [h.token_ids for h in out] == [h.token_ids for h in finished[:width]], (seed, width)
            assert [h.logprob for h in out] == pytest.approx([h.logprob for h in finished[:width]], abs=1e-9)
            compared += 1
    assert compared == 180


class FirstStepModel:
    """One step over a large vocabulary: token 4 + r has weight N - r (r = 0..N-1), the special
    tokens ~nothing; every row, every step, the same distribution."""

    bos_id, eos_id, pad_id, unk_id, max_length = CLS, SEP, PAD, UNK, 1

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        weights = np.full(vocab_size, 1e-12)
        weights[4:] = np.arange(vocab_size - 4, 0, -1)
        self.log_probs = np.log(weights / weights.sum()).astype(np.float32)

    async def start(self, source_ids: Sequence[int], rows: int) -> int:
        return rows

    async def step(self, state: int, tokens: np.ndarray) -> np.ndarray:
        return np.tile(self.log_probs, (len(tokens), 1))

    def select(self, state: int, rows: np.ndarray) -> int:
        return len(rows)


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.95])
async def test_top_p_keeps_exactly_the_nucleus_over_a_large_vocabulary(top_p: float) -> None:
    # weights N, N-1, ..., 1 (N = 2996): the nucleus is the m most probable tokens, m the least with
    # sum_{r < m} (N - r) >= top_p * N (N + 1) / 2 -- 76, 878 and 2327 tokens: below, between
    # and above the sizes the sampler first looks among (256, 2048)
    vocab = 3000
    n_words = vocab - 4
    m, mass = 0, 0
    while mass < top_p * n_words * (n_words + 1) / 2:
        mass += n_words - m
        m += 1
    out = await generate(FirstStepModel(vocab), [7], DecodingOptions(strategy="sample", n=3000, top_p=top_p, seed=5))
    ranks = np.array([h.token_ids[0] - 4 for h in out])
    assert ranks.min() >= 0
    assert ranks.max() < m  # nothing outside the nucleus
    assert ranks.max() >= 0.9 * m  # and its far end is reached
