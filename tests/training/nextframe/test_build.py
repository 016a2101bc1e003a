"""What `facet nextframe build` registers: per dataset the frame model with its figures and
metrics, its probe-feature model and its probe, linked to each other."""

from __future__ import annotations

import math

import pytest

from services.model_repository import ModelRepository
from services.nextframe.simulators import DATASETS
from training.nextframe.build import main, model_name

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
