"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from training.rerank.calibration import expected_calibration_error, fit_temperature, sigmoid


def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 20_000)
    labels = (rng.random(true_logits.size) < sigmoid(true_logits)).astype(int)
    assert fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.05)  # over-confident by 3x
    assert fit_temperature(0.5 * true_logits, labels) == pytest.approx(0.5, rel=0.05)


def test_ece_by_hand() -> None:
    # 4 pairs at p=0.1 (1 relevant): bin gap |0.1 - 0.25|; 2 pairs at p=0.95 (both relevant): gap 0.05
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.95, 0.95])
    y = np.array([1, 0, 0, 0, 1, 1])
    assert expected_calibration_error(p, y) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.05)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0


def test_one_class_cannot_be_calibrated() -> None:
    with pytest.raises(ValueError, match="relevant and irrelevant"):
        fit_temperature([1.0, 2.0], [1, 1])
