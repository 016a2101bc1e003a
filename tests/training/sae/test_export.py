"""ONNX exports of the SAE service's models match PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.backends.onnx_session import create_session
from services.model_repository import ModelRepository
from tests.services.sae.fixtures import TEST_SAE_LARGE
from training.sae.export import export_sae
from training.sae.saelens_format import load_saelens

pytestmark = pytest.mark.integration


def test_every_registered_model_passed_its_parity_check(sae_repository: ModelRepository) -> None:
    kinds = set()
    for name in sae_repository.models():
        entry = sae_repository.get(name)
        kinds.add(entry.kind)
        assert entry.metadata["parity"]["max_relative_error"] < 1e-4, name
        if entry.kind in ("sae", "sae-decoder", "meta-sae"):
            assert entry.metadata["parity"]["active_flip_share"] < 1e-3, name
    assert kinds == {"lm-residual", "sae", "sae-decoder", "meta-sae"}


def test_encoder_is_per_token_at_inference(sae_repository: ModelRepository, tmp_path: Path) -> None:
    """A BatchTopK SAE exported for serving encodes each token on its own: a row's latents do not
    depend on the other rows of the batch (the estimated threshold replaces the batch top-k)."""
    sae, _ = load_saelens(sae_repository.get(TEST_SAE_LARGE).file("weights").parent)
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(64, sae.config.d_in, generator=g) * 3
    encoder, decoder = export_sae(sae, tmp_path / "enc.onnx", tmp_path / "dec.onnx", rows)
    assert encoder.parity["max_relative_error"] < 1e-5
    session = create_session(encoder.path, providers="cpu")
    together = session.run(None, {"x": rows.numpy()})[0]
    alone = np.concatenate([session.run(None, {"x": rows[i : i + 1].numpy()})[0] for i in range(len(rows))])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(together, sae.eval().encode(rows).detach().numpy(), rtol=1e-4, atol=1e-4)
    assert decoder.inputs[0]["shape"] == [sae.config.d_sae]
