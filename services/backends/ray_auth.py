"""Ray's token authentication, as a driver or job client must opt in to it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def opt_in_token_auth() -> None:
    """`ray start` (Ray 2.60) turns on token authentication with ~/.ray/auth_token; a driver or
    job client must opt in to send it. Does nothing when RAY_AUTH_MODE is set or there is no token."""
    if "RAY_AUTH_MODE" in os.environ or not (os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import Config  # type: ignore[attr-defined]  # an imported ray reads the mode again

        Config.initialize("")
