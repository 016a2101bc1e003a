"""Next-frame load: predict the next frame, stream rollouts and estimate the physical constant on
simulated clips.

The first user of a locust process lists the frame models and has the service simulate one clip
per model (its constant a third of the way into the model's range), as `facet up --demo` does.
"""

from __future__ import annotations

import random

import numpy as np
from locust import task

from load.scenarios._user import FacetUser, shared

CLIP_FRAMES = 12  # frames simulated per model; EstimateConstant reads them all
CONTEXT = 5  # the models' context: PredictNext and Rollout start from the first 5 frames
HORIZON = 8  # frames one Rollout streams


class NextframeUser(FacetUser):
    """Tasks (weights): PredictNext 5, EstimateConstant 3, Rollout (a stream of HORIZON frames) 2."""

    capability = "nextframe"
    rpcs = ("PredictNext", "Rollout", "EstimateConstant")

    def setup(self) -> None:
        self.rng = random.Random()
        self.clips: dict[str, np.ndarray] = shared("nextframe.clips", self._simulate) or {}
        self.models = sorted(self.clips)

    def _simulate(self) -> dict[str, np.ndarray] | None:
        models = self.call("ListModels", self.client.list_frame_models)
        if not models:
            return None
        clips: dict[str, np.ndarray] = {}
        for seed, m in enumerate(models):
            low, high = m.constant_range
            clip = self.call(
                "Simulate",
                self.client.simulate,
                m.dataset,
                constant=low + 0.3 * (high - low),
                frames=CLIP_FRAMES,
                seed=seed,
            )
            if clip is not None:
                clips[m.id] = clip
        return clips or None

    @task(5)
    def predict_next(self) -> None:
        if self.models:
            model = self.rng.choice(self.models)
            self.call("PredictNext", self.client.predict_next, model, self.clips[model][:CONTEXT])

    @task(2)
    def rollout(self) -> None:
        if self.models:
            model = self.rng.choice(self.models)
            self.call("Rollout", self.client.rollout, model, self.clips[model][:CONTEXT], horizon=HORIZON)

    @task(3)
    def estimate_constant(self) -> None:
        if self.models:
            model = self.rng.choice(self.models)
            self.call("EstimateConstant", self.client.estimate_constant, model, self.clips[model])
