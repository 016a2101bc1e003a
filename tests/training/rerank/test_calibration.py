"""Temperature scaling with the logit level (Platt), and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from training.rerank.calibration import calibrate, expected_calibration_error, fit_shift_and_temperature, sigmoid


def test_the_fit_recovers_the_temperature_and_level_the_labels_were_drawn_with() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 2.0, 8_000)
    labels = (rng.random(true_logits.size) < sigmoid(true_logits)).astype(int)
    shift, t = fit_shift_and_temperature(3.0 * true_logits, labels)  # over-confident by 3x
    assert t == pytest.approx(3.0, rel=0.05) and abs(shift) < 0.3
    shift, t = fit_shift_and_temperature(0.5 * true_logits, labels)
    assert t == pytest.approx(0.5, rel=0.05) and abs(shift) < 0.1


def test_a_listwise_model_s_offset_logits_are_shifted_back_not_flattened() -> None:
    """A listwise loss leaves the logits' level free: logits that all sit near -9 carry the same
    information as centred ones. Temperature alone could only flatten them (T at its bound, every
    probability the base rate); the fitted shift recovers the level and the temperature."""
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0.0, 2.0, 8_000)
    labels = (rng.random(true_logits.size) < sigmoid(true_logits)).astype(int)
    shift, t = fit_shift_and_temperature(2.0 * true_logits - 9.0, labels)
    assert shift == pytest.approx(-9.0, abs=0.3) and t == pytest.approx(2.0, rel=0.05)
    record = calibrate(2.0 * true_logits - 9.0, labels, "synthetic")
    assert record["logit_shift"] == pytest.approx(shift) and record["ece_after"] < 0.05 < 0.3 < record["ece_before"]


def test_ece_by_hand() -> None:
    # 4 pairs at p=0.1 (1 relevant): bin gap |0.1 - 0.25|; 2 pairs at p=0.95 (both relevant): gap 0.05
    p = np.array([0.1, 0.1, 0.1, 0.1, 0.95, 0.95])
    y = np.array([1, 0, 0, 0, 1, 1])
    assert expected_calibration_error(p, y) == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.05)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0


def test_one_class_cannot_be_calibrated() -> None:
    with pytest.raises(ValueError, match="relevant and irrelevant"):
        fit_shift_and_temperature([1.0, 2.0], [1, 1])
