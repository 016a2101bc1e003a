"""SAEs round-trip through SAELens' format, and through SAELens' own loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.sae.config import SaeConfig
from training.sae.model import Sae
from training.sae.saelens_format import load_saelens, save_saelens

CONFIGS = {
    "relu": SaeConfig("relu", 12, 40, l1_coefficient=1.0),
    "topk": SaeConfig("topk", 12, 40, k=5),
    "batchtopk": SaeConfig("batchtopk", 12, 40, k=5),
    "jumprelu": SaeConfig("jumprelu", 12, 40, l0_coefficient=0.1, jumprelu_init_threshold=0.05),
}


def _trained_looking(arch: str) -> Sae:
    """Random weights with non-trivial biases and thresholds (a format test, not a result)."""
    torch.manual_seed(0)
    sae = Sae(CONFIGS[arch])
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 1.0)
        sae.threshold.fill_(0.3)
    return sae.eval()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_round_trip_keeps_encoding_and_decoding(arch: str, tmp_path: Path) -> None:
    sae = _trained_looking(arch)
    save_saelens(sae, tmp_path, {"model_name": "SmolLM2-135M-Instruct", "hook_name": "blocks.14.hook_resid_post"})
    loaded, cfg = load_saelens(tmp_path)
    assert cfg["metadata"]["hook_name"] == "blocks.14.hook_resid_post"
    x = torch.randn(64, 12)
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    torch.testing.assert_close(loaded.decode(sae.encode(x)), sae.decode(sae.encode(x)))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_sae_lens_loads_what_we_write_and_encodes_the_same(arch: str, tmp_path: Path) -> None:
    from sae_lens import SAE

    sae = _trained_looking(arch)
    save_saelens(sae, tmp_path)
    theirs = SAE.load_from_disk(str(tmp_path), device="cpu")
    x = torch.randn(64, 12)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs.decode(sae.encode(x)), sae.decode(sae.encode(x)), rtol=1e-5, atol=1e-5)


def test_we_load_what_sae_lens_writes(tmp_path: Path) -> None:
    from sae_lens import TopKSAE, TopKSAEConfig

    theirs = TopKSAE(TopKSAEConfig(d_in=12, d_sae=40, k=4))
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.2)
    theirs.save_model(str(tmp_path))
    ours, _ = load_saelens(tmp_path)
    x = torch.randn(32, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)


def test_unsupported_files_are_refused(tmp_path: Path) -> None:
    save_saelens(_trained_looking("topk"), tmp_path)
    cfg = (tmp_path / "cfg.json").read_text().replace('"architecture": "topk"', '"architecture": "gated"')
    (tmp_path / "cfg.json").write_text(cfg)
    with pytest.raises(ValueError, match="gated"):
        load_saelens(tmp_path)
