"""What the next-frame build writes into the model repository and this service reads: model kinds,
property keys and file keys. Three models per dataset: the frame model, its probe features and the
probe (paper: "The Power of Next-Frame Prediction for Learning Physical Laws", the probing setup)."""

from __future__ import annotations


class Kind:
    """Model kinds (`facet.json` "kind")."""

    FRAME_MODEL = "frame-model"  # context frames float32 [n, 5, 64, 64] in [0, 1] -> next frame [n, 1, 64, 64]
    FRAME_FEATURES = "frame-features"  # the frozen frame model's pooled features of a context window
    CONSTANT_PROBE = "constant-probe"  # linear probe: mean features of a video -> its physical constant


class Prop:
    """Property keys (`facet.json` "properties")."""

    DATASET = "dataset"
    CONSTANT = "constant"  # the constant's name, e.g. "gravity"
    UNITS = "units"
    LOW = "low"  # the constant's simulated range
    HIGH = "high"
    METRICS = "metrics"  # build metrics (losses, probe ratio, rollout scores)
    FEATURES_MODEL = "features_model"  # FRAME_MODEL -> its FRAME_FEATURES model
    PROBE_MODEL = "probe_model"  # FRAME_MODEL -> its CONSTANT_PROBE model
    WINDOWS_PER_VIDEO = "windows_per_video"  # context windows averaged per video by the probe
    ROLLOUT_CURVES = "rollout_curves"


class File:
    """Keys of the files stored beside a frame model (`facet.json` "files")."""

    WEIGHTS = "weights"  # PyTorch state dict of the frame model
    ROLLOUTS = "rollouts"  # rollout figure beside the truth (PNG)
