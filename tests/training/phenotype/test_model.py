"""The phenotype models: each attribute's factor reaches only its own latent slice, the generator
gives images in [0, 1] at every power-of-two size, the graphs export to ONNX (opset 17, dynamic
batch) and ONNX Runtime computes what PyTorch does, and bad sizes are refused naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from services.phenotype.catalog import ATTRIBUTE_NAMES, IDENTITY_SLICE
from training.onnx_export import cpu_session, export_module
from training.phenotype.model import FactorEncoder, Generator, ImageEncoder, ModelConfig, PatchDiscriminator

A = len(ATTRIBUTE_NAMES)
FACTORS = A + 5  # a few identity / nuisance factors: the models do not depend on the faces module


def tiny(**overrides: Any) -> ModelConfig:
    base: dict[str, Any] = dict(image_size=16, slice_dim=3, identity_dim=8, factor_count=FACTORS, base_channels=4,
                                max_channels=16, attribute_hidden=8, identity_hidden=16, discriminator_channels=4,
                                discriminator_layers=2)  # fmt: skip
    return ModelConfig(**{**base, **overrides})


def test_latent_layout_is_contiguous_in_catalog_order() -> None:
    config = tiny()
    layout = config.latent_layout()
    assert list(layout) == [*ATTRIBUTE_NAMES, IDENTITY_SLICE]
    bounds = list(layout.values())
    assert bounds[0][0] == 0 and bounds[-1][1] == config.latent_dim
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(stop - start == 3 for start, stop in bounds[:-1]) and bounds[-1][1] - bounds[-1][0] == 8


def test_factor_encoder_has_no_cross_talk_between_slices() -> None:
    """The Jacobian d latent / d factors is block-structured: attribute i's factor moves only slice
    i, the identity factors move only the identity slice (and each block is not all zero)."""
    torch.manual_seed(0)
    config = tiny()
    encoder = FactorEncoder(config)
    factors = torch.rand(4, FACTORS)
    jacobian = torch.autograd.functional.jacobian(lambda f: encoder(f).sum(dim=0), factors).sum(dim=1)  # [L, F]
    layout = config.latent_layout()
    for j, name in enumerate([*ATTRIBUTE_NAMES, IDENTITY_SLICE]):
        start, stop = layout[name]
        own = list(range(A, FACTORS)) if name == IDENTITY_SLICE else [j]
        others = [i for i in range(FACTORS) if i not in own]
        assert torch.count_nonzero(jacobian[start:stop][:, others]) == 0, name
        assert float(jacobian[start:stop][:, own].abs().sum()) > 0.0, name


def test_changing_one_attribute_changes_only_its_slice() -> None:
    torch.manual_seed(1)
    config = tiny()
    encoder = FactorEncoder(config)
    factors = torch.rand(6, FACTORS)
    with torch.no_grad():
        before = encoder(factors)
    for i, name in enumerate(ATTRIBUTE_NAMES):
        changed = factors.clone()
        changed[:, i] = 1.0 - changed[:, i]
        with torch.no_grad():
            after = encoder(changed)
        start, stop = config.latent_layout()[name]
        outside = torch.cat([before[:, :start] - after[:, :start], before[:, stop:] - after[:, stop:]], dim=1)
        assert torch.equal(outside, torch.zeros_like(outside)), name
        assert float((before[:, start:stop] - after[:, start:stop]).abs().max()) > 0.0, name


@pytest.mark.parametrize("size", [16, 32, 64])
@torch.no_grad()
def test_shapes_and_image_range(size: int) -> None:
    torch.manual_seed(2)
    config = tiny(image_size=size, discriminator_layers=3 if size > 16 else 2)
    latent = FactorEncoder(config)(torch.rand(2, FACTORS))
    assert latent.shape == (2, config.latent_dim)
    image = Generator(config)(latent * 10.0)  # far outside the usual range: still an image
    assert image.shape == (2, 3, size, size)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert ImageEncoder(config)(image).shape == (2, config.latent_dim)
    side = size // 2**config.discriminator_layers
    assert PatchDiscriminator(config)(image).shape == (2, 1, side, side)
    assert PatchDiscriminator(tiny(image_size=size, spectral_norm=False))(image).shape[:2] == (2, 1)


def test_onnx_runtime_matches_pytorch(tmp_path: Path) -> None:
    """Generator, factor encoder and image encoder traced at batch 3 (legacy exporter, opset 17)
    give PyTorch's outputs on other batch sizes too (the batch axis is dynamic)."""
    torch.manual_seed(3)
    config = tiny(image_size=32)
    factor_encoder, generator, image_encoder = FactorEncoder(config), Generator(config), ImageEncoder(config)
    factors = torch.rand(3, FACTORS)
    latent = factor_encoder(factors).detach()
    image = generator(latent).detach()
    cases = [
        (factor_encoder, "factors", factors, "latent"),
        (generator, "latent", latent, "image"),
        (image_encoder, "image", image, "latent"),
    ]
    for module, input_name, example, output_name in cases:
        path = tmp_path / f"{type(module).__name__}.onnx"
        export_module(
            module, (example,), path, [input_name], [output_name], {input_name: {0: "batch"}, output_name: {0: "batch"}}
        )
        session = cpu_session(path, threads=1)
        for batch in (example, example[:1], torch.cat([example, example])):
            with torch.no_grad():
                expected = module(batch).numpy()
            (got,) = session.run([output_name], {input_name: batch.numpy()})
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4, err_msg=type(module).__name__)


@pytest.mark.parametrize(
    ("field", "value"),
    [("image_size", 48), ("image_size", 8), ("image_size", True), ("slice_dim", 0), ("identity_dim", -1),
     ("factor_count", A), ("base_channels", 0), ("max_channels", 2), ("discriminator_layers", 3),
     ("spectral_norm", 1)],
)  # fmt: skip
def test_bad_config_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"ModelConfig.{field}"):
        tiny(**{field: value})


def test_config_round_trip() -> None:
    config = tiny(slice_dim=5, spectral_norm=False)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown ModelConfig keys: bogus"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})
