"""The resumable checkpoint every Facet trainer keeps in its work dir (`state.pt`: weights,
optimisers, step, history, and the config that made them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch


class Config(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def resumable_state(state_path: Path, config: Config, resume: bool, outputs: Sequence[Path]) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None to start afresh.

    Args:
        state_path: the checkpoint file (`<work_dir>/state.pt`).
        config: the run's config; a checkpoint is resumed only if it was made with the same one.
        resume: False: start over, deleting `state_path` and `outputs` (best weights, results).
        outputs: the run's other files that a fresh start must not leave behind.
    Returns:
        the checkpoint's dict (loaded on the CPU, weights only), or None.
    Raises:
        ValueError: `resume` and the checkpoint was made with another config (naming its type).
    """
    if resume and state_path.is_file():
        state: dict[str, Any] = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["config"] != config.to_dict():
            raise ValueError(
                f"{state_path.parent} holds a checkpoint of another {type(config).__name__}; pass resume=False or another work_dir"
            )
        return state
    if not resume:
        for path in (state_path, *outputs):
            path.unlink(missing_ok=True)
    return None
