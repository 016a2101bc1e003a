"""What `facet nextframe build` registers: per dataset the frame model with its figures and
metrics, its probe-feature model and its probe, linked to each other."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.model_repository import ModelRepository
from services.nextframe.catalog import File, Prop
from services.nextframe.simulators import DATASETS, simulate
from training.nextframe.build import FrameBuildOptions, main, model_name
from training.nextframe.model import CONTEXT, FrameModelConfig, FrameUNet, to_unit
from training.nextframe.probe import FittedProbe, video_features
from training.onnx_export import cpu_session

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_each_dataset_gets_a_model_a_probe_and_their_figures(nextframe_repository: ModelRepository, dataset: str) -> None:
    entry = nextframe_repository.get(model_name(dataset))
    props = entry.metadata["properties"]
    assert entry.kind == "frame-model" and props["dataset"] == dataset and props["constant"] == DATASETS[dataset].constant
    assert nextframe_repository.get(props["features_model"]).kind == "frame-features"
    assert nextframe_repository.get(props["probe_model"]).kind == "constant-probe"
    metrics = props["metrics"]
    wanted = {"next_frame_loss", "copy_last_loss", "probe_loss_pretrained", "probe_loss_random_init", "probe_ratio", "probe_loss_end_to_end"}
    assert wanted <= set(metrics) and all(math.isfinite(metrics[k]) for k in wanted)
    assert metrics["probe_ratio"] == pytest.approx(metrics["probe_loss_random_init"] / metrics["probe_loss_pretrained"])
    curves = props["rollout_curves"]
    assert set(curves["mse"]) == set(curves["ssim"]) == {"model", "copy_last", "linear"}
    assert all(len(v) == props["frames"] - 5 for v in curves["mse"].values())
    figure = entry.path / entry.metadata["files"]["rollouts"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (entry.path / entry.metadata["files"]["weights"]).stat().st_size > 0


def test_the_command_rejects_unknown_datasets(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_info:
        main(["--repository", str(tmp_path), "--datasets", "pendulum,tennis"])
    assert exit_info.value.code == 2
    assert "tennis" in capsys.readouterr().err and not any(tmp_path.iterdir())


@pytest.mark.parametrize("dataset", ["pendulum", "colliding_blocks"])
def test_the_onnx_models_match_the_pytorch_checkpoint_measured_here(nextframe_repository: ModelRepository, dataset: str) -> None:
    """Parity measured by the test on videos the build never saw: the registered PyTorch weights
    and probe against the registered ONNX frame model, probe features and probe."""
    entry = nextframe_repository.get(model_name(dataset))
    props = entry.properties
    model = FrameUNet(FrameModelConfig(**props["model"]))
    model.load_state_dict(torch.load(entry.path / entry.metadata["files"][File.WEIGHTS], weights_only=True))
    model.eval()
    spec = DATASETS[dataset]
    clips = simulate(dataset, spec.random_constants(3, np.random.default_rng(11)), frames=12, seed=11).frames
    context = to_unit(torch.from_numpy(clips[:, :CONTEXT]))
    with torch.no_grad():
        expected_next, expected_features = model(context).numpy(), model.probe_features(context).numpy()
    (got_next,) = cpu_session(entry.model_file).run(None, {"context": context.numpy()})
    assert np.abs(got_next - expected_next).max() < 1e-4
    (got_features,) = cpu_session(nextframe_repository.get(props[Prop.FEATURES_MODEL]).model_file).run(None, {"context": context.numpy()})
    assert np.abs(got_features - expected_features).max() / np.abs(expected_features).max() < 1e-4
    probe_entry = nextframe_repository.get(props[Prop.PROBE_MODEL])
    fitted = FittedProbe.load(probe_entry.path / probe_entry.metadata["files"][File.PROBE_WEIGHTS])
    features = video_features(model, clips, int(props[Prop.WINDOWS_PER_VIDEO]))
    expected_constant, expected_score = fitted.predict(features)
    constant, score = cpu_session(probe_entry.model_file).run(None, {"features": features.numpy()})
    np.testing.assert_allclose(constant, expected_constant.numpy(), rtol=1e-4, atol=1e-4 * (spec.high - spec.low))
    np.testing.assert_allclose(score, expected_score.numpy(), rtol=1e-4, atol=1e-5)


def test_each_probe_records_its_trained_range_and_out_of_distribution_threshold(nextframe_repository: ModelRepository) -> None:
    for dataset in DATASETS:
        probe = nextframe_repository.get(nextframe_repository.get(model_name(dataset)).properties[Prop.PROBE_MODEL]).properties
        spec = DATASETS[dataset]
        # the training videos' constants: inside the simulated range (3D bounces: the count that happened)
        assert probe[Prop.TRAINED_LOW] < probe[Prop.TRAINED_HIGH]
        if not spec.integer:
            assert spec.low <= probe[Prop.TRAINED_LOW] and probe[Prop.TRAINED_HIGH] <= spec.high
        calibration = probe[Prop.OOD_CALIBRATION]
        assert probe[Prop.OOD_THRESHOLD] == pytest.approx(FrameBuildOptions().ood_margin * calibration["held_out_p99"])
        assert 0 < calibration["held_out_p50"] <= calibration["held_out_p99"] <= calibration["held_out_max"] < probe[Prop.OOD_THRESHOLD]


def test_models_built_before_the_out_of_distribution_score_are_not_current(nextframe_repository: ModelRepository, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`facet models build` rebuilds a dataset whose probe predates the score (the service would
    serve it without one)."""
    import shutil

    from training.nextframe.build import has_defaults

    copy = ModelRepository(shutil.copytree(nextframe_repository.root, tmp_path / "models"))
    assert has_defaults(copy)
    probe = copy.get(copy.get(model_name("pendulum")).properties[Prop.PROBE_MODEL])
    old = {k: v for k, v in probe.properties.items() if k not in (Prop.OOD_THRESHOLD, Prop.OOD_CALIBRATION)}
    copy.update_metadata(probe.name, probe.version, properties=old)
    assert not has_defaults(copy)
