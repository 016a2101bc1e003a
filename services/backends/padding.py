"""Padding requests into one batch: shared by Facet's dynamic batcher and the Triton and Ray
Serve model wrappers. Only numpy: the local Triton server's python stub imports it too (a copy
beside each wrapped model).

Inputs whose non-batch axes differ (token sequences of different lengths) are right-padded with
zeros to the longest; models that take an attention mask are unaffected by that padding. To keep
padding from costing more than batching saves, requests are ordered by length and cut into groups
whose padded size stays within MAX_PADDING_RATIO of the real size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

MAX_PADDING_RATIO = 1.3


def length_groups(
    widths: Sequence[int], rows: Sequence[int] | None = None, *, max_rows: int = 0, max_padding_ratio: float = MAX_PADDING_RATIO
) -> list[list[int]]:
    """Indices ordered by width and cut into groups that pad cheaply.

    A group ends where padding every member to the group's widest would exceed
    `max_padding_ratio` times the real size, or at `max_rows` rows (0: no cap). On a CPU
    a padded batch costs its padded size, so sorting by length is what makes batching pay.
    """
    counts = [1] * len(widths) if rows is None else list(rows)
    groups: list[list[int]] = []
    current: list[int] = []
    n_rows = real = 0
    for i in sorted(range(len(widths)), key=lambda j: widths[j]):
        w, r = int(widths[i]), counts[i]
        too_wide = (n_rows + r) * w > max_padding_ratio * (real + r * w)
        if current and (too_wide or (max_rows and n_rows + r > max_rows)):
            groups.append(current)
            current, n_rows, real = [], 0, 0
        current.append(i)
        n_rows += r
        real += r * w
    if current:
        groups.append(current)
    return groups


def pad_concat(arrays: list[np.ndarray]) -> np.ndarray:
    if len(arrays) == 1:
        return arrays[0]
    ndim = arrays[0].ndim
    if any(a.ndim != ndim for a in arrays):
        raise ValueError("inputs of one model must all have the same rank")
    target = [max(a.shape[d] for a in arrays) for d in range(1, ndim)]
    padded = []
    for a in arrays:
        pads = [(0, 0)] + [(0, t - s) for t, s in zip(target, a.shape[1:], strict=True)]
        padded.append(np.pad(a, pads) if any(p[1] for p in pads) else a)
    return np.concatenate(padded, axis=0)



def width(arrays: Sequence[np.ndarray]) -> int:
    """The longest non-batch extent of a request's inputs: its sequence length, 1 for fixed rows."""
    return max((int(np.prod(a.shape[1:], dtype=np.int64)) for a in arrays), default=1)


def run_together(
    run: Callable[[dict[str, np.ndarray]], Sequence[np.ndarray]], outputs: Sequence[str], requests: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray] | Exception]:
    """Run requests that arrived together in groups that pad cheaply; each request gets its rows
    of the outputs (padded axes stay padded, as from Facet's batcher) or its group's exception."""
    results: list[dict[str, np.ndarray] | Exception] = [ValueError("not run")] * len(requests)
    rows = [len(next(iter(r.values()))) for r in requests]
    for indices in length_groups([width(list(r.values())) for r in requests], rows):
        try:
            feeds = {name: pad_concat([requests[i][name] for i in indices]) for name in requests[indices[0]]}
            merged = run(feeds)
            start = 0
            for i in indices:
                results[i] = {name: np.ascontiguousarray(v[start : start + rows[i]]) for name, v in zip(outputs, merged, strict=True)}
                start += rows[i]
        except Exception as exc:  # noqa: BLE001 - delivered to every request of the group
            for i in indices:
                results[i] = exc
    return results
