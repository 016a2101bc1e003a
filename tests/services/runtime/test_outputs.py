"""The shared output check: NaN or inf never leaves a service as OK or as the caller's fault."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from services.runtime.logs import REQUEST_ID
from services.runtime.outputs import NonFiniteOutput, finite_output


def test_finite_values_pass_unchanged() -> None:
    values = np.array([[1.0, -2.5], [3e38, 0.0]], dtype=np.float32)
    assert finite_output("the latents", values) is values
    assert finite_output("the scores", [0.5, 1.0]).tolist() == [0.5, 1.0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_entry_is_internal_with_the_request_id_and_logged(bad: float, caplog: pytest.LogCaptureFixture) -> None:
    token = REQUEST_ID.set("rid-123")
    try:
        with caplog.at_level(logging.ERROR, logger="facet.outputs"), pytest.raises(NonFiniteOutput) as info:
            finite_output("the reconstruction of SAE 's'", np.array([1.0, bad, 2.0]))
    finally:
        REQUEST_ID.reset(token)
    assert info.value.code == grpc.StatusCode.INTERNAL  # the server's fault, never INVALID_ARGUMENT
    assert "the reconstruction of SAE 's'" in info.value.message and "1 of 3" in info.value.message
    assert "rid-123" in info.value.message
    assert any("non-finite output" in r.getMessage() for r in caplog.records)
