"""The phenotype walk-through `facet up --demo` runs: the SDK against a running Phenotype service.

It generates a face, edits it (a value, and an attribute copied from another face), prints the
measured report, interpolates skin tone, then does the same to a real photograph (scikit-image's
astronaut, when scikit-image is installed) and writes both grids as PNGs. A third grid shows eight
real face crops of scikit-image's `lfw_subset` (25 x 25 grey, Labeled Faces in the Wild) above
their reconstructions: what the encoder, trained on procedural faces only, makes of real faces.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import sdk

GRID_DIR_ENV = "FACET_DEMO_DIR"  # where the grids go (default: a temporary folder, printed)


def _report(report: sdk.EditReport) -> str:
    targets = ", ".join(f"{k} {report.target[k]:.2f} -> read {report.achieved[k]:.2f}" for k in report.target)
    drift = max(report.drift.items(), key=lambda kv: abs(kv[1])) if report.drift else ("-", 0.0)
    return (
        f"{targets}; largest drift {drift[0]} {drift[1]:+.2f}; identity similarity {report.identity_similarity:.2f}; "
        f"pixel change inside {report.pixel_change_inside:.3f} / outside {report.pixel_change_outside:.3f}"
    )


def _photo() -> np.ndarray | None:
    try:
        from skimage import data
    except ImportError:
        return None
    return np.asarray(data.astronaut()[30:330, 110:410])  # the face, roughly centred


def _lfw_faces(count: int = 8) -> np.ndarray | None:
    """The first `count` face crops of scikit-image's `lfw_subset` (its first 100 are faces) as
    uint8 [count, 25, 25] grey, or None without scikit-image."""
    try:
        from skimage import data
    except ImportError:
        return None
    return np.rint(np.asarray(data.lfw_subset()[:count]) * 255.0).astype(np.uint8)


def run_demo(client: sdk.Client, out_dir: Path | None = None) -> list[Path]:
    """Generate, edit and interpolate a face and a photograph, encode eight real faces; print the
    reports; write three grids (only the first without scikit-image).

    Returns:
        the PNG files written.
    """
    import os

    folder = Path(out_dir or os.environ.get(GRID_DIR_ENV) or tempfile.mkdtemp(prefix="facet-phenotype-"))
    folder.mkdir(parents=True, exist_ok=True)
    attributes = client.list_attributes()
    print(f"face model: {attributes.model}, {attributes.image_size} px; attributes: {', '.join(a.name for a in attributes.attributes)}")
    face = client.generate_face(seed=3)
    other = client.generate_face({"hair_colour": 1.0, "skin_tone": 0.1}, seed=11)
    darker, report = client.edit_phenotype(face, {"skin_tone": 0.85})
    print(f"\ngenerated face, skin_tone -> 0.85: {_report(report)}")
    blond, report = client.edit_phenotype(face, {"hair_colour": other})
    print(f"generated face, hair colour from another face: {_report(report)}")
    strip = client.interpolate_phenotype(face, "skin_tone", [0.0, 0.25, 0.5, 0.75, 1.0])
    written = [folder / "phenotype-generated.png"]
    sdk.save_grid([face, darker, other, blond, *strip], written[0], columns=4)
    photo = _photo()
    if photo is not None:
        edited, report = client.edit_phenotype(photo, {"nose_width": 0.9, "lip_fullness": 0.9})
        print(f"\nphotograph (astronaut), nose_width and lip_fullness -> 0.9: {_report(report)}")
        print(f"  reconstruction error {report.reconstruction_error:.3f}: the models were trained on procedural faces only")
        photo_strip = client.interpolate_phenotype(photo, "skin_tone", [0.0, 0.5, 1.0])
        written.append(folder / "phenotype-photo.png")
        encoded = client.encode_face(photo)
        sdk.save_grid([encoded.reconstruction, edited, *photo_strip], written[1], columns=5)
    lfw = _lfw_faces()
    if lfw is not None:
        encoded_faces = [client.encode_face(f) for f in lfw]
        errors = ", ".join(f"{e.reconstruction_error:.2f}" for e in encoded_faces)
        print(f"\n{len(lfw)} real faces (lfw_subset, 25 x 25 grey): reconstruction errors {errors}")
        written.append(folder / "phenotype-lfw.png")
        size = attributes.image_size
        shown = [_upscaled_rgb(f, size) for f in lfw]
        sdk.save_grid([*shown, *(e.reconstruction for e in encoded_faces)], written[-1], columns=len(lfw))
    for path in written:
        print(f"wrote {path}")
    return written


def _upscaled_rgb(grey: np.ndarray, size: int) -> np.ndarray:
    """A grey uint8 image as RGB at size x size (nearest neighbour: numpy only), to sit in a grid
    beside the reconstructions."""
    rows = (np.arange(size) * grey.shape[0]) // size
    cols = (np.arange(size) * grey.shape[1]) // size
    return np.repeat(grey[rows][:, cols][..., None], 3, axis=2)


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: generate one face (factor encoder, generator, regressor).

    Args:
        client: a client whose `phenotype` address is the service to check.
    Returns:
        One line for the report, e.g. "phenotype: a 64x64 face".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
    """
    face = client.generate_face(seed=0)
    return f"phenotype: a {face.shape[0]}x{face.shape[1]} face"
