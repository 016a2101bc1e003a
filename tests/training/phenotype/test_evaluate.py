"""`facet eval phenotype`: the evaluation table of a phenotype editor, on the tiny test face set
(16 x 16, trained by the project's own build on procedural faces: `phenotype_repository`)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from services.model_repository import ModelRepository
from services.phenotype import editing
from services.phenotype.catalog import ATTRIBUTE_NAMES, File
from tests.services.phenotype.fixtures import FACE_MODEL, TEST_IMAGE_SIZE
from training.phenotype.build import tiny_configs
from training.phenotype.evaluate import (
    Evaluation,
    FactorisedEditor,
    Readers,
    evaluate,
    frechet_distance,
    load_set,
    main,
    regressor_features,
)
from training.phenotype.faces import FACTOR_NAMES, make_faces

FIELDS = (
    "error",
    "within",
    "no_edit_error",
    "drift",
    "identity",
    "identity_edit",
    "pixel_inside",
    "pixel_outside",
    "frechet",
)


@pytest.fixture(scope="module")
def tiny_set(phenotype_repository: ModelRepository) -> tuple[FactorisedEditor, Readers]:
    torch.set_num_threads(1)
    return load_set(checkpoint_dir=phenotype_repository.get(FACE_MODEL).file(File.CHECKPOINT))


@pytest.fixture(scope="module")
def evaluation(tiny_set: tuple[FactorisedEditor, Readers]) -> Evaluation:
    return evaluate(*tiny_set, faces=60)


def _floats(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


# -- the Fréchet distance -------------------------------------------------------------------------
def test_frechet_distance_matches_the_closed_form_of_gaussians() -> None:
    # one dimension: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2; [0, 2]: mean 1, variance 2; [0, 4]: mean 2, variance 8
    assert frechet_distance(np.array([[0.0], [2.0]]), np.array([[0.0], [4.0]])) == pytest.approx(
        1.0 + (math.sqrt(2) - math.sqrt(8)) ** 2
    )
    a = np.random.default_rng(0).normal(size=(500, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.0, 0.5, 0.0, 3.0])  # a translation moves only the means
    assert frechet_distance(a, a + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)
    assert frechet_distance(a, 2.0 * a) > frechet_distance(a, a + 0.0)  # and a scaling the covariances
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(a, a[:, :3])


def test_frechet_distance_of_real_faces_is_smallest_against_other_real_faces(
    tiny_set: tuple[FactorisedEditor, Readers],
) -> None:
    _, readers = tiny_set
    faces = _floats(make_faces(240, seed=777, size=TEST_IMAGE_SIZE, progress=False).images)
    with torch.no_grad():

        def features(x: torch.Tensor) -> np.ndarray:
            return regressor_features(readers.regressor, x).numpy()

        first, second = features(faces[:120]), features(faces[120:])  # two disjoint real halves
        swapped = features(faces[120:, [2, 1, 0]])  # the same faces, red and blue swapped
        noise = features(
            torch.rand(120, 3, TEST_IMAGE_SIZE, TEST_IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
        )
    real = frechet_distance(first, second)
    assert real < 0.5 * frechet_distance(first, swapped), (real, frechet_distance(first, swapped))
    assert real < 0.5 * frechet_distance(first, noise), (real, frechet_distance(first, noise))


# -- the table ------------------------------------------------------------------------------------
def test_the_table_has_every_attribute_and_every_figure(evaluation: Evaluation) -> None:
    assert [r.attribute for r in evaluation.rows] == list(ATTRIBUTE_NAMES)
    for row in evaluation.rows:
        for field in FIELDS:
            assert math.isfinite(getattr(row, field)), (row.attribute, field)
        assert 0.0 <= row.within <= 1.0 and -1.0 <= row.identity <= 1.0 and -1.0 <= row.identity_edit <= 1.0
        assert row.frechet >= 0.0
        assert 0.0 <= row.pixel_inside <= 1.0 and 0.0 <= row.pixel_outside <= 1.0
    assert 0.0 < evaluation.reconstruction_error < 0.5 and evaluation.frechet_generated is not None
    assert (evaluation.faces, evaluation.seed, evaluation.image_size, evaluation.targets) == (
        60,
        777,
        16,
        (0.1, 0.5, 0.9),
    )
    table = evaluation.markdown()
    for text in (*ATTRIBUTE_NAMES, "within ±0.1", "drift", "identity cosine", "vs reconstruction", "pixel change inside / outside",
                 "reconstruction error", "real vs real (the floor)", "generated from the test faces' factors",
                 "not Inception-FID", "not comparable to the paper's numbers", "| mean |"):  # fmt: skip
        assert text in table, text
    data = json.loads(json.dumps(evaluation.to_dict()))
    assert [r["attribute"] for r in data["rows"]] == list(ATTRIBUTE_NAMES) and data["tolerance"] == 0.1


def test_edits_of_skin_and_hair_colour_reach_their_targets_far_better_than_no_edit(evaluation: Evaluation) -> None:
    # the unedited reconstruction's error against targets 0.1 / 0.5 / 0.9 is what doing nothing scores
    for name in ("skin_tone", "hair_colour"):
        row = evaluation.row(name)
        assert row.error < 0.7 * row.no_edit_error, (name, row.error, row.no_edit_error)
        assert row.within > 0.2, (name, row.within)
        assert row.pixel_inside > row.pixel_outside, name  # the change is where the attribute is drawn


def test_an_editor_that_does_nothing_scores_the_no_edit_error(tiny_set: tuple[FactorisedEditor, Readers]) -> None:
    """An editor that ignores the target scores exactly the no-edit error, zero drift and zero pixel change."""
    editor, readers = tiny_set

    class NoEdit(FactorisedEditor):
        def set_attribute(self, latent: torch.Tensor, attribute: str, value: float) -> torch.Tensor:
            return latent.clone()

    still = NoEdit(editor.factor_encoder, editor.generator, editor.image_encoder, editor.layout, name="no edit")
    result = evaluate(still, readers, faces=20, targets=(0.2, 0.8))
    for row in result.rows:
        assert row.error == pytest.approx(row.no_edit_error, abs=1e-6)
        assert row.drift == pytest.approx(0.0, abs=1e-6) and row.pixel_inside == pytest.approx(0.0, abs=1e-7)
        assert row.identity == pytest.approx(result.reconstruction_identity, abs=1e-5)
        assert row.identity_edit == pytest.approx(1.0, abs=1e-5)


class _TorchModelSet:
    """The service's `editing.ModelSet` over the PyTorch modules (what the ONNX graphs were exported from)."""

    def __init__(self, editor: FactorisedEditor, readers: Readers) -> None:
        self.editor, self.readers = editor, readers

    @property
    def image_size(self) -> int:
        return self.editor.image_size

    @property
    def layout(self) -> Mapping[str, tuple[int, int]]:
        return self.editor.layout

    @property
    def factor_names(self) -> Sequence[str]:
        return FACTOR_NAMES

    @staticmethod
    def _run(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(np.asarray(x, dtype=np.float32))).numpy())

    async def generate(self, latent: np.ndarray) -> np.ndarray:
        return self._run(self.editor.generator, latent)

    async def encode_factors(self, factors: np.ndarray) -> np.ndarray:
        return self._run(self.editor.factor_encoder, factors)

    async def encode_image(self, image: np.ndarray) -> np.ndarray:
        return self._run(self.editor.image_encoder, image)

    async def read_attributes(self, image: np.ndarray) -> np.ndarray:
        return self._run(self.readers.regressor, image)

    async def embed_identity(self, image: np.ndarray) -> np.ndarray:
        return self._run(self.readers.identity, image)


def test_the_evaluation_edits_a_face_exactly_as_the_service_does(tiny_set: tuple[FactorisedEditor, Readers]) -> None:
    editor, readers = tiny_set
    models = _TorchModelSet(editor, readers)
    images = _floats(make_faces(3, seed=777, size=TEST_IMAGE_SIZE, progress=False).images)
    for attribute, value in (("skin_tone", 0.9), ("nose_width", 0.1)):
        with torch.no_grad():
            ours = editor.decode(editor.set_attribute(editor.encode(images), attribute, value)).numpy()
        for i in range(len(images)):
            served = asyncio.run(editing.edit(models, images[i].numpy(), {attribute: value}, {}))
            np.testing.assert_allclose(ours[i], served.image, atol=1e-5)


def test_bad_arguments_are_refused(tiny_set: tuple[FactorisedEditor, Readers]) -> None:
    for kwargs, message in (({"faces": 1}, "faces"), ({"targets": (0.5, 1.5)}, "targets"), ({"targets": ()}, "targets"),
                            ({"tolerance": 0.0}, "tolerance")):  # fmt: skip
        with pytest.raises(ValueError, match=message):
            evaluate(*tiny_set, **kwargs)  # type: ignore[arg-type]


# -- loading and the command ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `facet phenotype build --work-dir` layout written by the real trainings (a few steps: the
    loader is under test here, not the models' quality)."""
    import dataclasses

    from training.phenotype.build import GENERATOR_DIR, READERS_DIR
    from training.phenotype.readers import train_readers
    from training.phenotype.train import train

    training, readers = tiny_configs(TEST_IMAGE_SIZE)
    training = dataclasses.replace(
        training, stage1_steps=2, stage2_steps=2, train_faces=32, validation_faces=8, eval_every=2
    )
    readers = dataclasses.replace(readers, steps=2, train_identities=16, valid_identities=2, checkpoint_every=2)
    root = tmp_path_factory.mktemp("eval-work")
    train(training, root / GENERATOR_DIR, progress=False, device="cpu")
    train_readers(readers, root / READERS_DIR, progress=False, device="cpu")
    return root


def test_cli_evaluates_a_registered_set_and_writes_json(phenotype_repository: ModelRepository, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "eval.json"
    code = main(["--repository", str(phenotype_repository.root), "--model", FACE_MODEL, "--faces", "12",
                 "--targets", "0.2,0.8", "--device", "cpu", "--json", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    assert all(f"| {name} |" in printed for name in ATTRIBUTE_NAMES) and "not Inception-FID" in printed
    data = json.loads(out.read_text())
    assert data["faces"] == 12 and data["targets"] == [0.2, 0.8] and FACE_MODEL in data["source"]
    assert [r["attribute"] for r in data["rows"]] == list(ATTRIBUTE_NAMES)


def test_cli_evaluates_a_build_work_dir_and_its_two_checkpoints(
    work_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--work-dir", str(work_dir), "--faces", "6", "--targets", "0.5", "--device", "cpu"]) == 0
    assert "| lip_fullness |" in capsys.readouterr().out
    code = main(["--generator-checkpoint", str(work_dir / "generator" / "phenotype.safetensors"),
                 "--readers-checkpoint", str(work_dir / "readers" / "readers.safetensors"), "--faces", "6", "--targets", "0.5"])  # fmt: skip
    assert code == 0 and "| skin_tone |" in capsys.readouterr().out


def test_cli_says_what_is_missing_and_how_to_build_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--repository", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "holds no phenotype model 'configfaces-64'" in err and "facet phenotype build" in err
    assert main(["--work-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path / "generator" / "phenotype.safetensors") in err and "facet phenotype build" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--faces", "1"], "--faces must be >= 2"),
        (["--targets", "0.5,1.5"], "--targets must be in [0, 1]"),
        (["--targets", "high"], "--targets must be comma-separated numbers"),
        (["--tolerance", "0"], "--tolerance must be in (0, 1)"),
        (["--generator-checkpoint", "g.safetensors"], "go together"),
        (["--work-dir", "w", "--model", "m"], "pass one of"),
        (["--device", "tpu"], "device 'tpu'"),
    ],
)
def test_cli_refuses_bad_options_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_unknown_flag_is_argparse_status_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--no-such-flag"])
    assert exc.value.code == 2
