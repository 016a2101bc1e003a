"""Temperature scaling of the cross-encoder's logits, and the expected calibration error.

Temperature scaling (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural
Networks", §4.2): one scalar T > 0 fitted on held-out data by minimising the negative
log-likelihood of `sigmoid(logit / T)`; the ranking is unchanged. Here the held-out data is the
RAR-b dev split's (query, candidate) pairs, binary: 1 for the gold, 0 for each other candidate.
The NLL is convex in the scale 1/T (logistic regression with one weight and no bias), so a
golden-section search over log T in [`LOG_T_MIN`, `LOG_T_MAX`] finds its minimum.

Expected calibration error (Naeini et al. 2015; Guo et al. 2017 §2, eq. 3) of the relevance
probability p = sigmoid(logit / T): the pairs are put into `ECE_BINS` = 15 equal-width bins of p
over [0, 1] (Guo et al.'s choice); ECE = sum over bins of (pairs in bin / pairs) * |mean p in bin −
share of relevant pairs in bin|. It measures whether "probability 0.8" means relevant 80% of
the time, which is what `min_probability` relies on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ECE_BINS = 15  # Guo et al. 2017, §5 ("we use M = 15 bins")
LOG_T_MIN, LOG_T_MAX = math.log(0.05), math.log(50.0)
_GOLDEN = (math.sqrt(5) - 1) / 2


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def binary_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood (nats) of `labels` (0/1) under sigmoid(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    y = np.asarray(labels, dtype=np.float64)
    # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(
    logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, iterations: int = 80
) -> float:
    """The temperature minimising `binary_nll` on (logits, labels) (Guo et al. 2017, §4.2).

    Args:
        logits: float [pairs], the model's raw scores.
        labels: {0, 1} [pairs], 1 for a relevant pair.
        iterations: golden-section steps over log T (80 shrink the interval by 0.618^80).
    Returns:
        T in [0.05, 50].
    Raises:
        ValueError: no pairs, lengths differ, or the labels are all one class.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"logits and labels must be non-empty and of one length, got {x.shape} and {y.shape}")
    if y.min() == y.max():
        raise ValueError("temperature scaling needs relevant and irrelevant pairs")
    lo, hi = LOG_T_MIN, LOG_T_MAX
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = binary_nll(x, y, math.exp(a)), binary_nll(x, y, math.exp(b))
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = binary_nll(x, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = binary_nll(x, y, math.exp(b))
    return math.exp((lo + hi) / 2)


def expected_calibration_error(
    probabilities: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE of relevance probabilities over `bins` equal-width bins of [0, 1] (see the module docstring).

    Args:
        probabilities: float [pairs] in [0, 1].
        labels: {0, 1} [pairs].
        bins: the number of bins (15, Guo et al. 2017).
    Returns:
        the ECE in [0, 1].
    Raises:
        ValueError: no pairs or lengths differ.
    """
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"probabilities and labels must be non-empty and of one length, got {p.shape} and {y.shape}")
    index = np.minimum((p * bins).astype(np.int64), bins - 1)  # p == 1.0 goes into the last bin
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            ece += in_bin.mean() * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(ece)


def calibrate(logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, data: str) -> dict[str, Any]:
    """Fit the temperature and measure ECE and NLL before (T = 1) and after, on the same pairs.

    Args:
        logits: float [pairs].
        labels: {0, 1} [pairs].
        data: what the pairs are (stored with the numbers).
    Returns:
        {"temperature", "data", "pairs", "positives", "bins", "ece_before", "ece_after",
        "nll_before", "nll_after", "method"} — the `Prop.CALIBRATION` dict.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    t = fit_temperature(x, y)
    return {
        "temperature": t,
        "data": data,
        "pairs": int(x.size),
        "positives": int(y.sum()),
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(sigmoid(x), y),
        "ece_after": expected_calibration_error(sigmoid(x / t), y),
        "nll_before": binary_nll(x, y, 1.0),
        "nll_after": binary_nll(x, y, t),
        "method": "temperature scaling (Guo et al. 2017, §4.2); ECE over 15 equal-width probability bins",
    }


def evaluate_calibration(
    logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, temperature: float
) -> dict[str, float]:
    """ECE with T = 1 and with `temperature` on other pairs (e.g. the RAR-b test split).

    Returns:
        {"pairs", "ece_uncalibrated", "ece_calibrated"}.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    return {
        "pairs": float(x.size),
        "ece_uncalibrated": expected_calibration_error(sigmoid(x), y),
        "ece_calibrated": expected_calibration_error(sigmoid(x / temperature), y),
    }
