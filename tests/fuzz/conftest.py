"""What the fuzz tests share: every capability's session server (its own fixtures plugin,
`tests/services/<capability>/fixtures.py`), on the onnxruntime backend only: the fuzzer checks what
the servicers do with a request, which is the same code on every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from services import registry

FUZZ_BACKEND = "onnxruntime"


def server_fixture(capability: str) -> str:
    """The session fixture of a capability's server (`<capability>_server`, one per backend)."""
    return f"{capability}_server"


def with_every_server(test: Callable[..., Any]) -> Callable[..., Any]:
    """Give `test` the server of every capability in the registry, on FUZZ_BACKEND."""
    for name in registry.names():
        test = pytest.mark.parametrize(server_fixture(name), [FUZZ_BACKEND], indirect=True, scope="session")(test)
    return pytest.mark.usefixtures(*(server_fixture(name) for name in registry.names()))(test)
