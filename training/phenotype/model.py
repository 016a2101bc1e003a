"""The phenotype models: a factor encoder, a convolutional generator, an image encoder and a
patch discriminator.

Paper: Yucer et al., "Disentangling Racial Phenotypes: Fine-Grained Control of Race-related Facial
Phenotype Characteristics" (§3), after ConfigNet (Kowalski et al., ECCV 2020, §3): the generator's
latent is split into one slice per phenotype attribute (`services.phenotype.catalog.ATTRIBUTES`)
plus an identity part. Stage 1 trains the `FactorEncoder` (known factor values -> latent) with the
`Generator` (latent -> image) on images whose factors are known (Facet's procedural faces; ConfigNet
used synthetic renders); stage 2 trains the `ImageEncoder` (image -> the same latent) with the
generator frozen. Editing overwrites one attribute's slice and decodes again.

The factor encoder is built so that slice i depends on attribute i alone (a separate small MLP per
attribute, computed for all attributes at once with batched matrix products), and the identity
slice on the identity / nuisance factors alone: the disentanglement of the latent's attribute
slices holds by construction, not only by training (ConfigNet §3 ties each slice to one factor
group the same way).

Sizes are for a CPU: `ModelConfig`'s defaults train at 64x64 in minutes on one core (figures in
`training.phenotype.train`). Every forward is plain ops (linear, conv, nearest upsampling,
leaky ReLU, sigmoid, batched matmul) with no data-dependent control flow, so the legacy ONNX
exporter (opset 17) traces each of them with a dynamic batch axis.

Shapes: B batch, F factors, A attributes (`len(ATTRIBUTE_NAMES)`), S image side, L `latent_dim`.
Images are float32 RGB in [0, 1], channels first [B, 3, S, S].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from services.phenotype.catalog import ATTRIBUTE_NAMES, DEFAULT_IMAGE_SIZE, IDENTITY_SLICE
from training.options import known_fields

__all__ = [
    "FactorEncoder",
    "Generator",
    "ImageEncoder",
    "ModelConfig",
    "PatchDiscriminator",
    "PixelNorm",
    "parameter_count",
]

LEAK = 0.2  # leaky ReLU slope everywhere (DCGAN, Radford et al. 2016, §3)
FIRST_SIDE = 4  # the generator starts from a 4x4 map (DCGAN / ProGAN); the image encoder ends on one


def _default_factor_count() -> int:
    from training.phenotype.faces import FACTOR_NAMES  # numpy only; imported late so the models need no faces

    return len(FACTOR_NAMES)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the four models.

    Attributes:
        image_size: S, pixels per side; a power of two >= 16 (the generator doubles a 4x4 map).
        slice_dim: latent width of each attribute's slice.
        identity_dim: latent width of the identity part (everything that is not an attribute).
        factor_count: F, factors in the factor encoder's input: `ATTRIBUTE_NAMES` first, then the
            identity / nuisance factors (`training.phenotype.faces.FACTOR_NAMES`; the default).
        base_channels: feature maps at full resolution; each halving of the side doubles them, up
            to `max_channels` (generator and image encoder alike).
        max_channels: the cap on feature maps at low resolutions.
        attribute_hidden: hidden width of each attribute's MLP in the factor encoder.
        identity_hidden: hidden width of the factor encoder's identity MLP.
        discriminator_channels: feature maps of the patch discriminator's first layer (doubled per layer).
        discriminator_layers: stride-2 layers of the patch discriminator; its patches are
            S / 2**layers per side; at most log2(S) - 2.
        spectral_norm: spectral normalisation of the discriminator's weights (Miyato et al. 2018).
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    slice_dim: int = 4
    identity_dim: int = 32
    factor_count: int = dataclasses.field(default_factory=_default_factor_count)
    base_channels: int = 16
    max_channels: int = 128
    attribute_hidden: int = 32
    identity_hidden: int = 128
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    spectral_norm: bool = True

    def __post_init__(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ValueError(f"ModelConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        names = ("image_size", "slice_dim", "identity_dim", "factor_count", "base_channels", "max_channels",
                 "attribute_hidden", "identity_hidden", "discriminator_channels", "discriminator_layers")  # fmt: skip
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(name, "an integer >= 1")
        s = self.image_size
        if s < 16 or s & (s - 1):
            fail("image_size", "a power of two >= 16")
        if self.factor_count <= len(ATTRIBUTE_NAMES):
            fail("factor_count", f"> {len(ATTRIBUTE_NAMES)} (the attributes, then at least one identity factor)")
        if self.max_channels < self.base_channels:
            fail("max_channels", f">= base_channels ({self.base_channels})")
        if self.discriminator_layers > int(math.log2(s)) - 2:
            fail("discriminator_layers", f"<= log2(image_size) - 2 = {int(math.log2(s)) - 2}")
        if not isinstance(self.spectral_norm, bool):
            fail("spectral_norm", "a bool")

    @property
    def attribute_count(self) -> int:
        """A, the attributes (`ATTRIBUTE_NAMES`)."""
        return len(ATTRIBUTE_NAMES)

    @property
    def latent_dim(self) -> int:
        """L = A * slice_dim + identity_dim."""
        return self.attribute_count * self.slice_dim + self.identity_dim

    def latent_layout(self) -> dict[str, tuple[int, int]]:
        """{slice name: (start, stop)} over the latent: one slice per attribute in `ATTRIBUTE_NAMES`
        order, then `IDENTITY_SLICE`; contiguous, covering [0, latent_dim) (`Prop.LATENT_LAYOUT`)."""
        layout = {name: (i * self.slice_dim, (i + 1) * self.slice_dim) for i, name in enumerate(ATTRIBUTE_NAMES)}
        start = self.attribute_count * self.slice_dim
        layout[IDENTITY_SLICE] = (start, start + self.identity_dim)
        return layout

    def channels(self, side: int) -> int:
        """Feature maps at a side of `side` pixels: base_channels * S / side, at most max_channels."""
        return min(self.max_channels, self.base_channels * (self.image_size // side))

    @property
    def sides(self) -> list[int]:
        """The generator's resolutions: 4, 8, ..., S."""
        return [FIRST_SIDE * 2**i for i in range(int(math.log2(self.image_size // FIRST_SIDE)) + 1)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The config of `to_dict` (missing keys take their defaults).

        Raises:
            ValueError: an unknown key or an invalid value.
        """
        data = known_fields(cls, data)
        return cls(**data)


def parameter_count(module: nn.Module) -> int:
    """Trainable and frozen parameters of `module`."""
    return sum(p.numel() for p in module.parameters())


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit root-mean-square (Karras et al., "Progressive
    Growing of GANs", ICLR 2018, §4.2): keeps a normalisation-free generator's activations in range."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class FactorEncoder(nn.Module):
    """Factors -> latent (ConfigNet's factor encoder, §3), with no cross-talk between slices.

    Attribute i's value x_i (in [0, 1]) feeds only slice i: slice_i = W2_i lrelu(W1_i (2 x_i - 1) + b1_i) + b2_i,
    one MLP per attribute, all computed at once by a batched matrix product. The identity / nuisance
    factors (columns A..F-1) feed only the identity slice through their own two-layer MLP.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        a, h, d = config.attribute_count, config.attribute_hidden, config.slice_dim
        self.attribute_in_weight = nn.Parameter(torch.randn(a, h))  # fan-in 1
        self.attribute_in_bias = nn.Parameter(torch.zeros(a, h))
        self.attribute_out_weight = nn.Parameter(torch.randn(a, h, d) / math.sqrt(h))
        self.attribute_out_bias = nn.Parameter(torch.zeros(a, d))
        self.identity = nn.Sequential(
            nn.Linear(config.factor_count - a, config.identity_hidden),
            nn.LeakyReLU(LEAK),
            nn.Linear(config.identity_hidden, config.identity_dim),
        )

    def forward(self, factors: Tensor) -> Tensor:
        """Args:
            factors: float32 [B, F] in [0, 1], `ATTRIBUTE_NAMES` first.
        Returns:
            latent float32 [B, L] in `ModelConfig.latent_layout` order.
        """
        a = self.config.attribute_count
        x = factors[:, :a] * 2.0 - 1.0  # [B, A], centred
        hidden = F.leaky_relu(x.unsqueeze(2) * self.attribute_in_weight + self.attribute_in_bias, LEAK)  # [B, A, H]
        slices = torch.matmul(hidden.transpose(0, 1), self.attribute_out_weight).transpose(0, 1)  # [B, A, D]
        slices = slices + self.attribute_out_bias
        identity = self.identity(factors[:, a:] * 2.0 - 1.0)
        return torch.cat([slices.flatten(1), identity], dim=1)


class Generator(nn.Module):
    """Latent -> image: a linear layer to a 4x4 map, then per doubling of the side a nearest-neighbour
    upsampling and two 3x3 convolutions (leaky ReLU, pixel norm) (the ProGAN shape, Karras et al. 2018,
    Table 2, without progressive growing). Every resolution has a 1x1 convolution to RGB; the RGB
    images are summed after bilinear upsampling (StyleGAN2's "skip" generator, Karras et al., CVPR
    2020, Fig. 7b) and a sigmoid maps the sum into [0, 1]. The skips let the coarse colours and
    layout train in the first few dozen steps, where a plain stack of this depth stalls on a CPU budget.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        first = config.channels(FIRST_SIDE)
        self.first = nn.Linear(config.latent_dim, first * FIRST_SIDE * FIRST_SIDE)
        self.first_conv = nn.Conv2d(first, first, 3, padding=1)
        blocks: list[nn.Module] = []
        for side in config.sides[1:]:
            c_in, c_out = config.channels(side // 2), config.channels(side)
            blocks.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.Conv2d(c_in, c_out, 3, padding=1),
                    nn.LeakyReLU(LEAK),
                    PixelNorm(),
                    nn.Conv2d(c_out, c_out, 3, padding=1),
                    nn.LeakyReLU(LEAK),
                    PixelNorm(),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList([nn.Conv2d(config.channels(side), 3, 1) for side in config.sides])

    def forward(self, latent: Tensor) -> Tensor:
        """Args:
            latent: float32 [B, L].
        Returns:
            image float32 [B, 3, S, S] in [0, 1].
        """
        c = self.config.channels(FIRST_SIDE)
        x = self.first(latent).view(-1, c, FIRST_SIDE, FIRST_SIDE)
        x = F.leaky_relu(x, LEAK)
        x = PixelNorm()(F.leaky_relu(self.first_conv(PixelNorm()(x)), LEAK))
        rgb = self.to_rgb[0](x)
        for block, to_rgb in zip(self.blocks, self.to_rgb[1:], strict=True):
            x = block(x)
            rgb = F.interpolate(rgb, scale_factor=2.0, mode="bilinear", align_corners=False) + to_rgb(x)
        return torch.sigmoid(rgb)


class ImageEncoder(nn.Module):
    """Image -> latent (ConfigNet's stage-2 encoder, §3): a 3x3 convolution from RGB, then per
    halving of the side a stride-2 3x3 convolution and a 3x3 convolution (leaky ReLU), down to 4x4,
    and two linear layers to the latent."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels(config.image_size), 3, padding=1), nn.LeakyReLU(LEAK)]
        for side in reversed(config.sides[1:]):
            c_in, c_out = config.channels(side), config.channels(side // 2)
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
                nn.LeakyReLU(LEAK),
                nn.Conv2d(c_out, c_out, 3, padding=1),
                nn.LeakyReLU(LEAK),
            ]
        self.features = nn.Sequential(*layers)
        flat = config.channels(FIRST_SIDE) * FIRST_SIDE * FIRST_SIDE
        self.head = nn.Sequential(nn.Linear(flat, 256), nn.LeakyReLU(LEAK), nn.Linear(256, config.latent_dim))

    def forward(self, image: Tensor) -> Tensor:
        """Args:
            image: float32 [B, 3, S, S] in [0, 1].
        Returns:
            latent float32 [B, L].
        """
        return self.head(self.features(image * 2.0 - 1.0).flatten(1))


class PatchDiscriminator(nn.Module):
    """A PatchGAN discriminator (Isola et al., "Image-to-Image Translation with Conditional
    Adversarial Networks", CVPR 2017, §3.2.2): stride-2 4x4 convolutions (leaky ReLU), then a 3x3
    convolution to one real-vs-generated logit per patch; spectral normalisation optional
    (Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

        def norm(layer: nn.Conv2d) -> nn.Module:
            return nn.utils.parametrizations.spectral_norm(layer) if config.spectral_norm else layer

        layers: list[nn.Module] = []
        c_in, c_out = 3, config.discriminator_channels
        for _ in range(config.discriminator_layers):
            layers += [norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1)), nn.LeakyReLU(LEAK)]
            c_in, c_out = c_out, min(c_out * 2, 8 * config.discriminator_channels)
        layers.append(norm(nn.Conv2d(c_in, 1, 3, padding=1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: Tensor) -> Tensor:
        """Args:
            image: float32 [B, 3, S, S] in [0, 1].
        Returns:
            logits float32 [B, 1, S / 2**layers, S / 2**layers] (> 0: looks like a procedural face).
        """
        return self.layers(image * 2.0 - 1.0)
