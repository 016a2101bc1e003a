"""The check every service runs on what it is about to answer: no NaN or inf leaves as OK.

A non-finite number computed from finite, in-range input is the server's fault (a model or an
index misbehaving), not the caller's: it is INTERNAL, logged as an error under the call's
request id and counted as INTERNAL, never an OK reply and never INVALID_ARGUMENT. Inputs that
would overflow are refused before any work by each capability's own limit (for example
`sae.max_abs_activation`, `retrieval.max_vector_norm`).
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike

from services.runtime.errors import InternalError
from services.runtime.logs import REQUEST_ID

log = logging.getLogger("facet.outputs")


class NonFiniteOutput(InternalError):
    """An output held NaN or inf (INTERNAL; the message carries the request id)."""


def finite_output(what: str, values: ArrayLike) -> np.ndarray:
    """`values` as an array when every entry is finite.

    Args:
        what: the output, as a user reads it ("the reconstruction of SAE 'x'").
        values: any array-like of numbers.
    Returns:
        np.ndarray: `values` (not copied when already an array).
    Raises:
        NonFiniteOutput: some entry is NaN or inf; logged as an error first.
    """
    array = np.asarray(values)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        request_id = REQUEST_ID.get()
        log.error("non-finite output: %s has %d non-finite entries of %d", what, bad, array.size)
        raise NonFiniteOutput(
            f"{what} came out non-finite ({bad} of {array.size} entries): a server fault, "
            f"logged under request id {request_id}"
        )
    return array
