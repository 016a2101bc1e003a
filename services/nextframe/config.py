"""The `[nextframe]` config section (`FACET_NEXTFRAME_*`): the limits of every NextFrame RPC,
checked before any work is done. (The 5-frame context and the 64x64 frame size belong to the
models, not to the config.)"""

from __future__ import annotations

import dataclasses

from services.runtime.config import check


@dataclasses.dataclass(frozen=True)
class NextFrameConfig:
    """Attributes:
    max_frames: frames per PredictNext, Rollout or EstimateConstant request (context or clip).
    max_horizon: frames one Rollout streams.
    max_simulate_frames: frames one Simulate call returns.
    """

    max_frames: int = 64
    max_horizon: int = 256
    max_simulate_frames: int = 256

    def __post_init__(self) -> None:
        for key in ("max_frames", "max_horizon", "max_simulate_frames"):
            check(getattr(self, key) >= 1, f"nextframe.{key} must be >= 1")
        check(self.max_frames >= 5, "nextframe.max_frames must be >= 5 (the models' context)")
