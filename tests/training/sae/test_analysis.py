"""Analyses stored with the SAEs: top activations, meta-latent activations, output tokens and
the downstream cross-entropy with a reconstruction spliced into the real LM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.sae.tokenization import PAD, StoredWindows, TokenizedText
from training.sae import analysis
from training.sae.config import SaeConfig
from training.sae.model import Sae


def _digit_contexts(n: int, length: int) -> list[TokenizedText]:
    """Contexts whose token t of context c has id 20·c + t and text "<id>,"."""
    out = []
    for c in range(n):
        pieces = [f"{20 * c + t}," for t in range(length)]
        ends = np.cumsum([len(p) for p in pieces]).astype(np.int32)
        starts = (ends - [len(p) for p in pieces]).astype(np.int32)
        out.append(TokenizedText("".join(pieces), np.arange(length) + 20 * c, starts, ends, np.zeros(length, bool), np.zeros(length, bool)))
    return out


def test_top_activations_match_a_brute_force_search() -> None:
    """Chunked mining keeps exactly each unit's k largest rows, in context windows with their text."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(1000, 6, generator=g)
    contexts = _digit_contexts(53, 20)  # token id = 20·context + position
    where = np.stack([np.arange(1000) // 19, np.arange(1000) % 19 + 1], axis=1).astype(np.int32)  # positions 1..19

    def acts(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    top = analysis.mine_top_activations(acts, rows, where, contexts, k=5, chunk=128)
    expected_v, expected_i = torch.relu(rows).topk(5, dim=0)
    np.testing.assert_allclose(top.values, expected_v.T.numpy(), rtol=1e-6)
    np.testing.assert_allclose(top.firing_rate, (rows > 0).float().mean(0).numpy(), rtol=1e-6)
    stored = StoredWindows(top.arrays(), analysis.TOP_PREFIX)
    for unit in range(6):
        for j in range(5):
            c, pos = where[expected_i[j, unit]]
            window = stored.get(unit, j)
            start = max(0, pos - analysis.CONTEXT_BEFORE)
            assert window.ids.tolist() == list(range(20 * c + start, 20 * c + min(pos + analysis.CONTEXT_AFTER + 1, 20)))
            assert window.ids[top.highlight[unit, j]] == 20 * c + pos  # the firing token is marked
            assert window.pieces() == [f"{i}," for i in window.ids.tolist()] and "".join(window.pieces()) == window.text


def test_units_that_never_fire_store_no_contexts() -> None:
    rows = -torch.rand(300, 3)  # relu(rows) is 0 everywhere
    where = np.stack([np.arange(300) // 10, np.arange(300) % 10 + 1], axis=1)
    top = analysis.mine_top_activations(torch.relu, rows, where, _digit_contexts(30, 11), k=4)
    assert (top.values == 0).all() and (top.windows["top_windows"] == PAD).all() and (top.firing_rate == 0).all()


def test_meta_activations_average_the_codes_of_active_latents() -> None:
    sae = Sae(SaeConfig("relu", 4, 3, l1_coefficient=1.0))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4)[:, :3])
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.eye(3, 4) * torch.tensor([[1.0], [2.0], [1.0]]))
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    got = analysis.meta_activations(sae, codes)(x)
    # token 3: latent 0 (mass 1) and latent 1 (mass 2): (1·[1,0] + 2·[0,1]) / 3
    torch.testing.assert_close(got, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / 3, 2 / 3]]))
    # scaling a token scales every latent's mass: the meta activations do not change
    torch.testing.assert_close(analysis.meta_activations(sae, codes)(10 * x), got)


@pytest.mark.integration
def test_splicing_into_the_real_lm(sae_work_dir: Path, sae_repository: object) -> None:
    """A perfect reconstruction leaves the LM's loss unchanged; zero-ablation raises it; a noisy
    one lands in between."""
    from training.sae.activations import load_language_model
    from training.sae.build import BuildOptions, _held_out_contexts

    lm = load_language_model(checkpoint_cache=sae_work_dir / "lm")
    ids = _held_out_contexts(lm, BuildOptions(context_tokens=48), 4)
    assert ids.shape == (4, 48)
    g = torch.Generator().manual_seed(0)

    def noisy(x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * x.norm(dim=-1, keepdim=True) / x.shape[-1] ** 0.5 * torch.randn(x.shape, generator=g)

    loss = analysis.downstream_cross_entropy(lm, 6, [lambda x: x, noisy], ids)
    assert loss.tokens == 4 * 47
    assert loss.with_sae[0] == pytest.approx(loss.clean, abs=1e-4)
    assert 1.0 < loss.clean < loss.with_sae[1] < loss.zero_ablation
    scores = loss.for_sae(1)
    assert 0 < scores["ce_loss_recovered"] < 1 and scores["ce_increase"] > 0
    assert loss.for_sae(0)["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.integration
def test_output_tokens_of_an_embedding_direction_rank_that_token_high(sae_work_dir: Path, sae_repository: object) -> None:
    """The unembedding is tied to the embeddings in SmolLM2: a token's own embedding direction
    promotes that token among its top outputs (for most tokens; a few are drowned by tokens
    such as ' strugg' that many directions promote)."""
    from training.sae.activations import load_language_model

    lm = load_language_model(checkpoint_cache=sae_work_dir / "lm")
    words = [" Paris", " science", " football", " river", " music", " king", " water", " green"]
    token_ids = [lm.tokenizer(w, add_special_tokens=False).input_ids[0] for w in words]
    directions = lm.model.get_input_embeddings().weight.detach()[token_ids]
    ids, scores = analysis.top_output_tokens(lm, directions, n=10)
    assert ids.shape == scores.shape == (8, 10)
    assert (np.diff(scores, axis=1) <= 0).all()
    hits = sum(t in row for t, row in zip(token_ids, ids.tolist(), strict=True))
    assert hits >= 6
