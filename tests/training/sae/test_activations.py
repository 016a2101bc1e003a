"""Residual-stream activations of the real SmolLM2-135M, cached in shards with a manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.sae.activations import ActivationCache, ResidualStream, cache_activations, load_language_model
from training.sae.corpus import CORPUS_NAME, wikipedia_paragraphs

pytestmark = pytest.mark.integration
LAYER = 15


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 dequantised from the package's GGUF once, then reloaded as a plain checkpoint."""
    path = tmp_path_factory.mktemp("smollm2")
    lm = load_language_model(checkpoint_cache=path)
    assert (lm.d_model, lm.n_layers) == (576, 30)
    return path


def test_corpus_is_clean_prose() -> None:
    paragraphs = list(wikipedia_paragraphs())
    assert len(paragraphs) > 3000
    assert sum(map(len, paragraphs)) > 2_000_000
    assert paragraphs[0].startswith("Anarchism is a political philosophy")
    assert not any("'''" in p or "{{" in p or "[[" in p for p in paragraphs[:500])


def test_residual_stream_stops_at_the_layer_and_matches_the_full_model(checkpoint: Path) -> None:
    full = load_language_model(checkpoint_cache=checkpoint)
    ids = full.tokenizer("Albert Einstein was born in Ulm.", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = full.model(ids, output_hidden_states=True).hidden_states[LAYER]
    stream = ResidualStream(load_language_model(checkpoint_cache=checkpoint), LAYER)
    assert len(stream.decoder.layers) == LAYER
    torch.testing.assert_close(stream(ids), expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="layer must be"):
        ResidualStream(full, 31)


def test_cache_writes_shards_and_a_manifest_without_position_zero(checkpoint: Path, tmp_path: Path) -> None:
    lm = load_language_model(checkpoint_cache=checkpoint)
    manifest = cache_activations(
        lm, LAYER, wikipedia_paragraphs(), tmp_path, tokens=3000, corpus=CORPUS_NAME,
        context_tokens=64, batch_contexts=8, shard_tokens=1024, progress=False,
    )  # fmt: skip
    assert manifest.token_count == 3000 and manifest.layer == LAYER and manifest.d_model == 576
    assert manifest.model == "SmolLM2-135M-Instruct" and manifest.corpus == CORPUS_NAME
    assert len(manifest.shards) >= 2  # shards close once they pass shard_tokens
    assert sum(len(np.load(tmp_path / s, mmap_mode="r")) for s in manifest.shards) == 3000
    cache = ActivationCache(tmp_path)
    everything = cache.all()
    assert everything.shape == (3000, 576) and torch.isfinite(everything).all()
    norms = everything.norm(dim=1)
    assert float(norms.max() / norms.median()) < 20  # position 0 and massive-activation tokens are left out
    batches = list(cache.batches(512, shuffle_seed=0))
    assert sum(len(b) for b in batches) == 3000
    rows = {tuple(np.round(r[:4].numpy(), 4)) for b in batches for r in b}
    assert len(rows) == len({tuple(np.round(r[:4].numpy(), 4)) for r in everything})


def test_every_cached_row_points_at_its_token_in_context(checkpoint: Path, tmp_path: Path) -> None:
    """Top-activation contexts rely on (context, position) of each row: recompute one and compare."""
    lm = load_language_model(checkpoint_cache=checkpoint)
    cache_activations(
        lm, LAYER, wikipedia_paragraphs(), tmp_path, tokens=600, corpus=CORPUS_NAME,
        context_tokens=32, batch_contexts=4, shard_tokens=256, progress=False,
    )  # fmt: skip
    cache = ActivationCache(tmp_path)
    contexts, where, rows = cache.contexts(), cache.where(), cache.all()
    assert contexts.shape[1] == 32 and len(where) == len(rows) == 600
    assert (where[:, 1] >= 1).all()  # position 0 is never cached
    stream = ResidualStream(load_language_model(checkpoint_cache=checkpoint), LAYER)
    for i in (0, 299, 599):
        c, pos = where[i]
        fresh = stream(torch.tensor(contexts[c : c + 1], dtype=torch.long))[0, pos]
        torch.testing.assert_close(rows[i], fresh, rtol=1e-4, atol=1e-3)


def test_corpus_text_is_plain_text_and_contexts_keep_their_text(checkpoint: Path, tmp_path: Path) -> None:
    """Special-token strings inside corpus text are split as text; the EOS between documents is
    the only special token and is never cached; each context's text tiles over its tokens."""
    lm = load_language_model(checkpoint_cache=checkpoint)
    texts = [f"Document {i}: Hello<|endoftext|>world <|im_start|>user — I ❤️ 🤖 naïve café 北京 Привет 👨‍👩‍👧‍👦." for i in range(40)]
    manifest = cache_activations(
        lm, LAYER, texts, tmp_path, tokens=400, corpus="test", context_tokens=32, batch_contexts=4, shard_tokens=256, progress=False,
    )  # fmt: skip
    cache = ActivationCache(tmp_path)
    ids, where, stored = cache.contexts(), cache.where(), cache.context_texts()
    eos = lm.tokenizer.eos_token_id
    assert manifest.dropped_special_tokens == int((ids[:, 1:] == eos).sum()) > 0
    assert not {int(ids[c, p]) for c, p in where} & {eos, 1}  # no special token among the cached rows
    assert not (ids == 1).any()  # "<|im_start|>" in the text was never the special token
    for c in range(len(ids)):
        context = stored.get(c)
        assert context.ids.tolist() == ids[c].tolist()
        pieces = context.pieces()
        assert "".join(pieces) == context.text and "\ufffd" not in context.text
        assert all(p == lm.tokenizer.eos_token for p, s in zip(pieces, context.special, strict=True) if s)
    assert "Hello<|endoftext|>world <|im_start|>user" in "".join(stored.get(c).text for c in range(len(ids)))
