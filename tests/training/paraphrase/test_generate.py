"""Reference decoding (`training.paraphrase.generate`): greedy and beam search over the KV-cache
step, batched, give what a plain search that recomputes the whole prefix with the teacher-forced
decoder gives, on a tiny paraphraser fitted here on real Quora pairs."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from training.paraphrase.data import build_tokenizer, load_pairs
from training.paraphrase.generate import (
    TorchRunner,
    beam_decode,
    beam_search,
    encode_sources,
    greedy,
    greedy_decode,
    source_arrays,
)
from training.paraphrase.model import SOURCE_TO_TARGET, ModelConfig, ParaphraseTransformer, sequence_loss

MAX_LENGTH = 20


@functools.cache
def fit_tiny_paraphraser(pairs: int = 200, steps: int = 80, seed: int = 0) -> tuple[ParaphraseTransformer, Tokenizer]:
    """A tiny encoder-decoder (32 wide, 1 + 2 layers) fitted source -> target on the first `pairs`
    Quora training pairs for `steps` Adam steps (a few CPU-seconds): real weights on real text,
    varied enough that decoding paths differ between sentences. Cached: fitted once per session
    for this module and the export tests (callers must not change it; copy it to perturb it)."""
    torch.manual_seed(seed)
    train = load_pairs("quora", "train")[:pairs]
    tokenizer = build_tokenizer([s for pair in train for s in pair])
    config = ModelConfig(
        vocab_size=tokenizer.get_vocab_size(),
        d_model=32,
        heads=2,
        encoder_layers=1,
        decoder_layers=2,
        ff_dim=64,
        dropout=0.0,
        max_positions=24,
    )
    model = ParaphraseTransformer(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    sources = encode_sources(tokenizer, [p[0] for p in train], MAX_LENGTH)
    targets = encode_sources(tokenizer, [p[1] for p in train], MAX_LENGTH)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(train), (32,), generator=order).tolist()
        ids, mask = (
            torch.from_numpy(a)
            for a in source_arrays([sources[i] for i in batch], config.bos_id, config.eos_id, config.pad_id)
        )
        target, _ = (
            torch.from_numpy(a)
            for a in source_arrays([targets[i] for i in batch], config.bos_id, config.eos_id, config.pad_id)
        )
        loss = sequence_loss(model.decode(target[:, :-1], model.encode(ids, mask), mask), target[:, 1:], config.pad_id)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), tokenizer


def held_out_sources(tokenizer: Tokenizer, count: int) -> list[list[int]]:
    """Token ids of real Quora test questions (never trained on), of varied lengths."""
    return encode_sources(tokenizer, [p[0] for p in load_pairs("quora", "test")[:count]], MAX_LENGTH)


@pytest.fixture(scope="module")
def tiny() -> tuple[ParaphraseTransformer, Tokenizer]:
    return fit_tiny_paraphraser()


def full_log_probs(model: ParaphraseTransformer, source: list[int], prefix: tuple[int, ...]) -> np.ndarray:
    """log p(next token | [CLS] prefix, source) [V] from the teacher-forced decoder, no cache."""
    c = model.config
    ids = torch.tensor([[c.bos_id, *source, c.eos_id]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model.decode(torch.tensor([[c.bos_id, *prefix]]), model.encode(ids, mask, SOURCE_TO_TARGET), mask)
    return torch.log_softmax(logits[0, -1], dim=-1).double().numpy()


def allowed(model: ParaphraseTransformer, log_probs: np.ndarray, first: bool) -> np.ndarray:
    """The documented mask: [PAD], [CLS] and [UNK] never, [SEP] not first."""
    c = model.config
    never = [c.pad_id, c.bos_id, c.unk_id, *([c.eos_id] if first else [])]
    return np.where(np.isin(np.arange(log_probs.size), never), -np.inf, log_probs)


def plain_greedy(model: ParaphraseTransformer, source: list[int], max_length: int) -> tuple[tuple[int, ...], float]:
    tokens: tuple[int, ...] = ()
    score = 0.0
    for position in range(max_length):
        log_probs = full_log_probs(model, source, tokens)
        token = int(np.argmax(allowed(model, log_probs, position == 0)))
        score += log_probs[token]
        if token == model.config.eos_id:
            break
        tokens += (token,)
    return tokens, score


def plain_beam(
    model: ParaphraseTransformer, source: list[int], width: int, max_length: int
) -> list[tuple[tuple[int, ...], float]]:
    """The documented beam rule written plainly: full recomputation, a sort of every candidate, no
    early stop (the rule says stopping early never changes the result)."""
    eos, vocab = model.config.eos_id, model.config.vocab_size
    live: list[tuple[tuple[int, ...], float]] = [((), 0.0)]
    finished: list[tuple[tuple[int, ...], float]] = []
    for position in range(max_length):
        scores = np.concatenate([score + allowed(model, full_log_probs(model, source, tokens), position == 0) for tokens, score in live])
        ranked = np.lexsort((np.arange(scores.size), -scores))  # index b * V + v: highest first, then the lower index
        grown: list[tuple[tuple[int, ...], float]] = []
        for rank, flat in enumerate(ranked[: 2 * width]):
            b, v = divmod(int(flat), vocab)
            score = float(scores[flat])
            if v == eos:
                if rank < width:
                    finished.append((live[b][0], score))
            elif len(grown) < width:
                grown.append(((*live[b][0], v), score))
        live = grown
        if position == max_length - 1:
            finished.extend(live)
    return sorted(finished, key=lambda h: -h[1])


def test_greedy_with_the_cache_matches_recomputing_the_prefix(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 12)
    assert len({len(s) for s in sources}) > 3  # padded batches: sources of different lengths together
    decoded = greedy_decode(TorchRunner(model), sources, MAX_LENGTH, batch_size=5)  # rows leave the batch as they end
    assert [list(h.token_ids) for h in decoded] == greedy(model, sources, MAX_LENGTH)
    for source, hypothesis in zip(sources, decoded, strict=True):
        tokens, score = plain_greedy(model, source, MAX_LENGTH)
        assert hypothesis.token_ids == tokens
        assert hypothesis.logprob == pytest.approx(score, abs=1e-4)
    assert len({h.token_ids for h in decoded}) > 3  # the fitted model says different things to different sources


def test_beam_search_follows_the_documented_rule(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 5)
    width, max_length = 3, 10
    decoded = beam_decode(TorchRunner(model), sources, width, max_length, batch_size=2)
    assert [list(hs[0].token_ids) for hs in decoded] == beam_search(model, sources, width, max_length)
    for source, hypotheses in zip(sources, decoded, strict=True):
        expected = plain_beam(model, source, width, max_length)
        assert hypotheses[0].token_ids == expected[0][0]
        assert hypotheses[0].logprob == pytest.approx(expected[0][1], abs=1e-4)
        assert len(hypotheses) >= width
        assert [h.logprob for h in hypotheses] == sorted((h.logprob for h in hypotheses), reverse=True)
        # each score is the hypothesis' own log-probability under the model, [SEP] included when it ended
        for h in hypotheses[:width]:
            ended = len(h.token_ids) < max_length
            full = (*h.token_ids, model.config.eos_id) if ended else h.token_ids
            own = sum(full_log_probs(model, source, full[:i])[full[i]] for i in range(len(full)))
            assert h.logprob == pytest.approx(own, abs=1e-4)


class TorchStepModel:
    """The service's `decoding.StepModel` over the PyTorch model (one sentence, `TorchRunner`'s rows)."""

    def __init__(self, model: ParaphraseTransformer, max_length: int) -> None:
        self.runner = TorchRunner(model)
        c = model.config
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id, self.unk_id, self.max_length = c.vocab_size, c.bos_id, c.eos_id, c.pad_id, c.unk_id, max_length

    async def start(self, source_ids: list[int], rows: int) -> dict[str, object]:
        state = self.runner.start(*source_arrays([list(source_ids)], self.bos_id, self.eos_id, self.pad_id))
        return {"rows": self.runner.select(state, np.zeros(rows, dtype=np.int64)), "position": 0}

    async def step(self, state: dict[str, object], tokens: np.ndarray) -> np.ndarray:
        log_probs, state["rows"] = self.runner.step(state["rows"], tokens, state["position"])  # type: ignore[arg-type]
        state["position"] = int(state["position"]) + 1  # type: ignore[call-overload]
        return log_probs

    def select(self, state: dict[str, object], rows: np.ndarray) -> dict[str, object]:
        return {"rows": self.runner.select(state["rows"], rows), "position": state["position"]}  # type: ignore[arg-type]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_the_service_decoding_gives_the_same_hypotheses(tiny: tuple[ParaphraseTransformer, Tokenizer], length_penalty: float) -> None:
    """The service's numpy search (services.paraphrase.decoding) over the same PyTorch steps: the
    same greedy tokens, and the same W best beam hypotheses with the same log-probs, in order."""
    from services.paraphrase.decoding import DecodingOptions, generate

    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 8)
    width, max_length = 4, 12
    step_model = TorchStepModel(model, max_length)
    ours = beam_decode(TorchRunner(model), sources, width, max_length, length_penalty=length_penalty)
    greedies = greedy_decode(TorchRunner(model), sources, max_length)
    for source, hypotheses, greedy_one in zip(sources, ours, greedies, strict=True):
        options = DecodingOptions(strategy="beam", beam_width=width, max_length=max_length, length_penalty=length_penalty)
        theirs = asyncio.run(generate(step_model, source, options))  # type: ignore[arg-type]
        assert [h.token_ids for h in theirs] == [h.token_ids for h in hypotheses[:width]]
        assert [h.logprob for h in theirs] == pytest.approx([h.logprob for h in hypotheses[:width]], abs=1e-4)  # batched with other sentences: float32 rounding
        greedy_theirs = asyncio.run(generate(step_model, source, DecodingOptions(strategy="greedy", max_length=max_length)))  # type: ignore[arg-type]
        assert greedy_theirs[0].token_ids == greedy_one.token_ids


def test_beam_of_width_one_is_greedy(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 8)
    beams = beam_decode(TorchRunner(model), sources, 1, MAX_LENGTH)
    greedies = greedy_decode(TorchRunner(model), sources, MAX_LENGTH)
    assert [hs[0].token_ids for hs in beams] == [h.token_ids for h in greedies]
    assert [hs[0].logprob for hs in beams] == pytest.approx([h.logprob for h in greedies], abs=1e-6)


def test_max_length_cuts_the_same_decoding(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 8)
    full, short = greedy(model, sources, MAX_LENGTH), greedy(model, sources, 4)
    assert all(len(s) <= 4 and s == f[: len(s)] for s, f in zip(short, full, strict=True))
    assert any(len(f) > 4 for f in full)


def test_encode_sources_truncates_without_special_tokens(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    _, tokenizer = tiny
    text = "How do I improve my English speaking skills when nobody around me speaks English at all, even at work?"
    ids = encode_sources(tokenizer, [text, ""], max_length=8)
    assert ids[0] == tokenizer.encode(text).ids[:8] and len(ids[0]) == 8
    assert ids[1] == []
    specials = {tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    assert not specials & set(encode_sources(tokenizer, [text], max_length=50)[0])
    with pytest.raises(ValueError, match="max_length"):
        encode_sources(tokenizer, [text], max_length=0)


def test_bad_arguments_are_refused(tiny: tuple[ParaphraseTransformer, Tokenizer]) -> None:
    model, tokenizer = tiny
    sources = held_out_sources(tokenizer, 2)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, sources, model.config.vocab_size, MAX_LENGTH)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, sources, 0, MAX_LENGTH)
    with pytest.raises(ValueError, match="max_length"):
        greedy(model, sources, 0)
    with pytest.raises(ValueError, match="max_positions"):
        greedy(model, sources, model.config.max_positions + 1)
