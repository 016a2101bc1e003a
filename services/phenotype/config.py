"""The `[phenotype]` config section (`FACET_PHENOTYPE_*`): the default face model and the limits of
every Phenotype call, each checked before any pixel is decoded or any model runs."""

from __future__ import annotations

import dataclasses

from services.runtime.config import check

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class PhenotypeConfig:
    """Attributes:
    model: the face generator (kind "phenotype-generator", with its four companions beside it in
        the model repository: `services.phenotype.catalog.companion_name`) a call without `model`
        uses; every other generator in the repository is served too, by name.
    max_image_bytes: bytes of one image as sent: a PNG file, or raw pixels (height x width x
        channels). The default holds a raw RGBA image of max_image_side x max_image_side (16 MiB).
    max_image_side: pixels of an image's height and of its width, read from the PNG header
        before anything is decompressed (so a decompression bomb, a small file that inflates to
        gigabytes, is refused unread).
    min_image_side: the least height and width: smaller images carry too little of a face to
        encode (the default models work at 64 x 64).
    max_edits: attributes one Edit may change (each reference image among them costs an image
        encoder run); at most the number of attributes is meaningful.
    max_interpolation_values: values of one Interpolate call (one generator run and one
        regressor run each).
    """

    model: str = "configfaces-64"
    max_image_bytes: int = 16 * MIB
    max_image_side: int = 2048
    min_image_side: int = 16
    max_edits: int = 7
    max_interpolation_values: int = 16

    def __post_init__(self) -> None:
        check(bool(self.model), "phenotype.model must be set")
        for key in ("max_image_bytes", "max_image_side", "min_image_side", "max_edits", "max_interpolation_values"):
            check(getattr(self, key) >= 1, f"phenotype.{key} must be >= 1, got {getattr(self, key)}")
        check(
            self.min_image_side <= self.max_image_side,
            f"phenotype.min_image_side ({self.min_image_side}) must be <= phenotype.max_image_side ({self.max_image_side})",
        )
        smallest = self.min_image_side * self.min_image_side  # a grey image of the least size
        check(
            self.max_image_bytes >= smallest,
            f"phenotype.max_image_bytes ({self.max_image_bytes}) must be >= {smallest}: it would refuse "
            f"every raw image of phenotype.min_image_side ({self.min_image_side}) pixels a side",
        )
