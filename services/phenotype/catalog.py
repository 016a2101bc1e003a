"""What the phenotype export writes into the model repository and the phenotype service reads.

After Yucer et al., "Disentangling Racial Phenotypes: Fine-Grained Control of Race-related Facial
Phenotype Characteristics" (§3), which follows ConfigNet (Kowalski et al., ECCV 2020, §3): a
generator whose latent is split into named slices, one per phenotype attribute, plus an identity
part; a factor encoder maps known factor values to that latent (stage 1, trained on images whose
factors are known, here Facet's procedural faces); an image encoder maps an image to it (stage 2).
Editing an attribute overwrites its slice and decodes again.

Attribute values are normalised to [0, 1] (`ATTRIBUTES` gives each end's meaning). Images are
float32 RGB in [0, 1], channels first, `Prop.IMAGE_SIZE` square (64 by default). A phenotype
model set is five ONNX graphs in the repository, named after the generator:

``<name>`` (kind `Kind.GENERATOR`): the model users name; holds the metadata (`Prop.*`)::

    inputs:  latent      float32 [batch, latent_dim]
    outputs: image       float32 [batch, 3, size, size]   in [0, 1]

``<name>-factor-encoder`` (kind `Kind.FACTOR_ENCODER`)::

    inputs:  factors     float32 [batch, factor_count]    every factor in [0, 1], in `Prop.FACTORS` order:
                                                          the attributes first (`ATTRIBUTES` order), then
                                                          the identity / nuisance factors
    outputs: latent      float32 [batch, latent_dim]

``<name>-image-encoder`` (kind `Kind.IMAGE_ENCODER`)::

    inputs:  image       float32 [batch, 3, size, size]
    outputs: latent      float32 [batch, latent_dim]

``<name>-regressor`` (kind `Kind.REGRESSOR`): reads the attributes off an image; trained
independently of the generator (another seed, other images) so the edit report is not the
generator grading itself::

    inputs:  image       float32 [batch, 3, size, size]
    outputs: attributes  float32 [batch, len(ATTRIBUTES)]  in `ATTRIBUTES` order, ~[0, 1]

``<name>-identity`` (kind `Kind.IDENTITY`): an identity embedding trained on the identity factors
(not on the attributes), for the report's identity similarity::

    inputs:  image       float32 [batch, 3, size, size]
    outputs: embedding   float32 [batch, identity_dim]    L2-normalised

The latent's layout is `Prop.LATENT_LAYOUT`: {slice name: [start, stop)} over `latent_dim`, one
slice per attribute name plus `IDENTITY_SLICE`, contiguous, in `ATTRIBUTES` order then identity.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One editable phenotype attribute.

    Attributes:
        name: the API name (`edit_phenotype(image, {name: value})`).
        low, high: what the normalised values 0.0 and 1.0 mean.
        region: the canonical image region it changes, (top, left, bottom, right) as fractions of
            the image side, for the report's pixel change outside the edited regions (faces are
            centred and upright, with small pose, so a box per attribute is a fair approximation).
        meaning: one line for `ListAttributes`.
    """

    name: str
    low: str
    high: str
    region: tuple[float, float, float, float]
    meaning: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("skin_tone", "Fitzpatrick type I (lightest)", "Fitzpatrick type VI (darkest)",
              (0.12, 0.15, 0.98, 0.85), "skin colour of face, ears and neck, along a Fitzpatrick-like I-VI range"),
    Attribute("hair_colour", "black", "light blond",
              (0.0, 0.0, 0.55, 1.0), "hair colour along black, dark brown, brown, auburn, blond"),
    Attribute("eye_openness", "narrow (hooded, almond)", "wide open (round)",
              (0.36, 0.2, 0.52, 0.8), "vertical opening of the eyes relative to their width"),
    Attribute("eye_size", "small", "large", (0.34, 0.18, 0.54, 0.82), "width of the eyes"),
    Attribute("nose_width", "narrow", "wide", (0.42, 0.36, 0.7, 0.64), "width of the nose at the nostrils"),
    Attribute("nose_length", "short", "long", (0.4, 0.36, 0.72, 0.64), "length of the nose from the bridge to the tip"),
    Attribute("lip_fullness", "thin", "full", (0.64, 0.3, 0.84, 0.7), "height of the upper and lower lips"),
)  # fmt: skip
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(a.name for a in ATTRIBUTES)
IDENTITY_SLICE = "identity"  # the latent slice of everything that is not an attribute
DEFAULT_IMAGE_SIZE = 64  # pixels per side of the default models


class Kind:
    """Model kinds (`facet.json` "kind")."""

    GENERATOR = "phenotype-generator"  # latent -> image; the model users name
    FACTOR_ENCODER = "phenotype-factor-encoder"  # factors -> latent
    IMAGE_ENCODER = "phenotype-image-encoder"  # image -> latent
    REGRESSOR = "phenotype-regressor"  # image -> attributes
    IDENTITY = "phenotype-identity"  # image -> identity embedding


class Tensor:
    """Input and output names of the five ONNX graphs."""

    LATENT = "latent"
    IMAGE = "image"
    FACTORS = "factors"
    ATTRIBUTES = "attributes"
    EMBEDDING = "embedding"


class Prop:
    """Property keys (`facet.json` "properties") of a generator (`Kind.GENERATOR`)."""

    IMAGE_SIZE = "image_size"  # int: pixels per side
    LATENT_DIM = "latent_dim"  # int
    LATENT_LAYOUT = "latent_layout"  # {slice name: [start, stop)}: ATTRIBUTE_NAMES then IDENTITY_SLICE
    FACTORS = "factors"  # [name, ...]: the factor encoder's input order (attributes first)
    IDENTITY_DIM = "identity_dim"  # int: the identity embedding's width
    COMPANIONS = "companions"  # {"factor_encoder": name, "image_encoder": name, "regressor": name, "identity": name}
    TRAINING = "training"  # the training configs (dicts), seeds and time_s of every model of the set
    METRICS = "metrics"  # the evaluation (controllability, drift, identity, reconstruction, Frechet distance)
    ARCHITECTURE = "architecture"  # the model configs (dict)
    GENERATOR = "generator"  # on a companion model: the generator whose set it belongs to


class File:
    """Keys of the files stored beside the generator (`facet.json` "files")."""

    CHECKPOINT = "checkpoint"  # the PyTorch weights (safetensors) and configs the ONNX graphs came from


COMPANION_KINDS: dict[str, str] = {
    "factor_encoder": Kind.FACTOR_ENCODER,
    "image_encoder": Kind.IMAGE_ENCODER,
    "regressor": Kind.REGRESSOR,
    "identity": Kind.IDENTITY,
}


def companion_name(generator: str, role: str) -> str:
    """The repository name of one of a generator's companion models: `<generator>-<role with dashes>`.

    Args:
        generator: the generator's name, e.g. "configfaces-64".
        role: a key of `COMPANION_KINDS`.
    Raises:
        KeyError: an unknown role.
    """
    if role not in COMPANION_KINDS:
        raise KeyError(f"unknown companion role {role!r}; known: {', '.join(COMPANION_KINDS)}")
    return f"{generator}-{role.replace('_', '-')}"
