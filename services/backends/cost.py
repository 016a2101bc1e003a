"""A running estimate of what one model's batches cost, learned from measured batch times.

A batch's cost is modelled as `seconds = overhead_s + per_cell_s * cells`, where `cells` is
the batch's padded size: rows times the row's width (the sequence length of token inputs, the
element count of fixed-size rows; `services.backends.padding.width`). The two coefficients
are fitted by exponentially weighted least squares over the measured batches (each new batch
has weight ALPHA, older ones fade geometrically), so the estimate follows a machine whose load
changes. Until batches of different sizes have been seen, the cost is taken as proportional to
size (no overhead): the measured batch's fixed overhead is then charged per cell, so a batch much
larger than the ones measured (a call of long texts after only short ones, or after the ONNX
Runtime warm-up's 2 x 16 tokens) is overestimated, by several times (the new-user review of
issue #14 saw ~4x on a first upsert of 10 kB texts; a 100,000-character rerank document was
estimated at ~141 s where such calls took 15-48 s). Admission messages therefore say "about" and
that the figure is an estimate from recent batches.
"""

from __future__ import annotations

# weight of the newest batch in the running estimate (an EWMA over batches: ~1/ALPHA batches of memory)
ALPHA = 0.1
# below this relative spread of batch sizes the sizes tell nothing about overhead vs. per-cell cost
_MIN_RELATIVE_SPREAD = 1e-3


class CostModel:
    """Seconds per batch as a function of its size, for one model.

    Example::

        cost = CostModel()
        cost.observe(cells=16 * 128, seconds=0.05)
        cost.estimate_s(cells=64 * 128, batches=1)   # ~0.2
    """

    def __init__(self, alpha: float = ALPHA) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self._alpha = alpha
        # exponentially weighted sums of 1, x, y, x*x, x*y over observed (cells, seconds)
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self._overhead_s = 0.0
        self._per_cell_s = 0.0
        self.batches = 0

    @property
    def calibrated(self) -> bool:
        """Whether at least one batch has been measured (before that, nothing is estimated)."""
        return self.batches > 0

    @property
    def overhead_s(self) -> float:
        """Fixed seconds per batch (>= 0)."""
        return self._overhead_s

    @property
    def per_cell_s(self) -> float:
        """Seconds per cell (row x width) of a batch (>= 0)."""
        return self._per_cell_s

    def observe(self, cells: int, seconds: float) -> None:
        """Record one measured batch.

        Args:
            cells: the batch's padded size, rows x width (>= 1).
            seconds: how long it ran, wall clock.
        """
        if cells <= 0 or not seconds >= 0:
            return
        a = self._alpha if self.batches else 1.0
        x, y = float(cells), float(seconds)
        self._w += a * (1.0 - self._w)
        self._x += a * (x - self._x)
        self._y += a * (y - self._y)
        self._xx += a * (x * x - self._xx)
        self._xy += a * (x * y - self._xy)
        self.batches += 1
        self._fit()

    def _fit(self) -> None:
        mean_x, mean_y = self._x / self._w, self._y / self._w
        var_x = self._xx / self._w - mean_x * mean_x
        if var_x > _MIN_RELATIVE_SPREAD * mean_x * mean_x:
            slope = (self._xy / self._w - mean_x * mean_y) / var_x
            intercept = mean_y - slope * mean_x
            if slope > 0 and intercept >= 0:
                self._per_cell_s, self._overhead_s = slope, intercept
                return
            if slope > 0:  # negative overhead: noise; a line through the origin fits the same data
                self._per_cell_s, self._overhead_s = self._xy / self._xx, 0.0
                return
        self._per_cell_s, self._overhead_s = mean_y / mean_x, 0.0

    def estimate_s(self, cells: float, batches: float = 1.0) -> float:
        """Estimated seconds to run `cells` cells in `batches` batches; 0.0 before any measurement."""
        return self._overhead_s * batches + self._per_cell_s * cells

    def cells_within(self, seconds: float) -> int | None:
        """The largest batch (in cells) estimated to run within `seconds`; None when unknown
        (nothing measured yet, or a cost that does not grow with size). At least 1."""
        if not self.calibrated or self._per_cell_s <= 0:
            return None
        return max(1, int((seconds - self._overhead_s) / self._per_cell_s))
