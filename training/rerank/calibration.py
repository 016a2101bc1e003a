"""Temperature scaling of the cross-encoder's logits, and the expected calibration error.

Temperature scaling (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural
Networks", §4.2): one scalar T > 0 fitted on held-out data by minimising the negative
log-likelihood of `sigmoid(logit / T)`; the ranking is unchanged. Here the held-out data is the
RAR-b dev split's (query, candidate) pairs, binary: 1 for the gold, 0 for each other candidate.
The NLL is convex in the scale 1/T (logistic regression with one weight and no bias), so a
golden-section search over log T in [`LOG_T_MIN`, `LOG_T_MAX`] finds its minimum.

A listwise loss (softmax over a group's candidates) leaves the logits' level free: adding a
constant to every logit changes neither the loss nor the ranking, so the trained logits may all
sit far from 0 (the default reranker's lay around -8 to -10), where `sigmoid(logit / T)` can only
say "irrelevant" or, with a huge T, 0.5 for everything. `fit_shift_and_temperature` therefore also
fits the logit level: `sigmoid((logit - shift) / T)`, Platt scaling's two parameters (Platt 1999,
"Probabilistic Outputs for Support Vector Machines", §2.1), and the build folds the shift into the
classifier's bias, so the served logits are `logit - shift` and the probability stays
`sigmoid(logit / T)`. For each T the best shift solves a one-dimensional convex problem (bisection);
the NLL minimised over the shift stays unimodal in log T (a partial minimum of a jointly convex
function), so the same golden-section search finds T.

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


def _best_offset(z: np.ndarray, y: np.ndarray, iterations: int = 60) -> float:
    """The c minimising mean softplus(z + c) - y (z + c): the root of its derivative
    mean(sigmoid(z + c)) - mean(y), increasing in c, found by bisection (Newton oscillates when the
    logits sit far from 0)."""
    target = float(np.mean(y))
    lo, hi = -float(np.max(z)) - 50.0, -float(np.min(z)) + 50.0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if float(np.mean(sigmoid(z + mid))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit_shift_and_temperature(
    logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, iterations: int = 80
) -> tuple[float, float]:
    """The (shift, T) minimising the NLL of `labels` under sigmoid((logits - shift) / T) (see the module docstring).

    Args:
        logits: float [pairs], the model's raw scores.
        labels: {0, 1} [pairs], 1 for a relevant pair.
        iterations: golden-section steps over log T.
    Returns:
        (shift in logit units, T in [0.05, 50]).
    Raises:
        ValueError: no pairs, lengths differ, or the labels are all one class.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"logits and labels must be non-empty and of one length, got {x.shape} and {y.shape}")
    if y.min() == y.max():
        raise ValueError("calibration needs relevant and irrelevant pairs")

    def profile(log_t: float) -> tuple[float, float]:
        t = math.exp(log_t)
        c = _best_offset(x / t, y)
        shift = -c * t
        return binary_nll(x - shift, y, t), shift

    lo, hi = LOG_T_MIN, LOG_T_MAX
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = profile(a)[0], profile(b)[0]
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = profile(a)[0]
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = profile(b)[0]
    log_t = (lo + hi) / 2
    return profile(log_t)[1], math.exp(log_t)


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
    """Fit the logit shift and the temperature; measure ECE and NLL before (the trained logits,
    T = 1) and after (`sigmoid((logit - shift) / T)`), on the same pairs.

    Args:
        logits: float [pairs], as trained (before the shift is folded into the head).
        labels: {0, 1} [pairs].
        data: what the pairs are (stored with the numbers).
    Returns:
        {"temperature", "logit_shift", "data", "pairs", "positives", "bins", "ece_before", "ece_after",
        "nll_before", "nll_after", "method"} — the `Prop.CALIBRATION` dict.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    shift, t = fit_shift_and_temperature(x, y)
    return {
        "temperature": t,
        "logit_shift": shift,
        "data": data,
        "pairs": int(x.size),
        "positives": int(y.sum()),
        "bins": ECE_BINS,
        "ece_before": expected_calibration_error(sigmoid(x), y),
        "ece_after": expected_calibration_error(sigmoid((x - shift) / t), y),
        "nll_before": binary_nll(x, y, 1.0),
        "nll_after": binary_nll(x - shift, y, t),
        "method": "temperature scaling (Guo et al. 2017, §4.2) with the logit level fitted too (Platt 1999, §2.1) and "
        "folded into the classifier's bias; ECE over 15 equal-width probability bins",
    }


def evaluate_calibration(
    logits: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, temperature: float, shift: float = 0.0
) -> dict[str, float]:
    """ECE of the trained logits as they are (T = 1, no shift) and calibrated
    (`sigmoid((logit - shift) / temperature)`) on other pairs (e.g. the RAR-b test split).

    Args:
        logits: float [pairs], as trained (before the shift).
        labels: {0, 1} [pairs].
        temperature: the fitted T.
        shift: the fitted logit level (`calibrate`'s "logit_shift").
    Returns:
        {"pairs", "ece_uncalibrated", "ece_calibrated"}.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    return {
        "pairs": float(x.size),
        "ece_uncalibrated": expected_calibration_error(sigmoid(x), y),
        "ece_calibrated": expected_calibration_error(sigmoid((x - shift) / temperature), y),
    }
