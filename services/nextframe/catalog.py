"""What the next-frame build writes into the model repository and this service reads: model kinds,
property keys and file keys. Three models per dataset: the frame model, its probe features and the
probe (paper: "The Power of Next-Frame Prediction for Learning Physical Laws", the probing setup)."""

from __future__ import annotations


class Kind:
    """Model kinds (`facet.json` "kind")."""

    FRAME_MODEL = "frame-model"  # context frames float32 [n, 5, 64, 64] in [0, 1] -> next frame [n, 1, 64, 64]
    FRAME_FEATURES = "frame-features"  # the frozen frame model's pooled features of a context window
    CONSTANT_PROBE = "constant-probe"  # mean features of a video -> its physical constant ("constant") and "ood_score"


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
    # on CONSTANT_PROBE (models built before these keys: the service falls back to LOW/HIGH and sends no score)
    TRAINED_LOW = "trained_low"  # the smallest and largest constant of the videos the probe was fitted on
    TRAINED_HIGH = "trained_high"
    OOD_THRESHOLD = "ood_threshold"  # ood_score above this: unlike the training videos
    OOD_CALIBRATION = "ood_calibration"  # how the threshold was set: the scores of train and held-out videos


class File:
    """Keys of the files stored beside a frame model (`facet.json` "files")."""

    WEIGHTS = "weights"  # PyTorch state dict of the frame model
    ROLLOUTS = "rollouts"  # rollout figure beside the truth (PNG)
    PROBE_WEIGHTS = "probe_weights"  # beside a CONSTANT_PROBE: the probe and its feature distribution, PyTorch tensors
