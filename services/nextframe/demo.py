"""The next-frame walk-through `facet up --demo` runs: the SDK against a running NextFrame service."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import sdk


def run_demo(client: sdk.Client, horizon: int = 20) -> None:
    """Per frame model: simulate a clip, roll out `horizon` frames from its first 5, score them and
    estimate the clip's physical constant; GIFs go to the temporary directory."""
    models = client.list_frame_models()
    print("next-frame models (probe loss: random-init / pretrained; paper 1.28-6.24x):")
    for m in models:
        ratio = m.metrics.get("probe_ratio", float("nan"))
        print(f"  {m.id:<28} {m.constant} in [{m.constant_range[0]:g}, {m.constant_range[1]:g}] {m.units:<8} "
              f"next-frame loss {m.metrics['next_frame_loss']:.5f} (copy-last {m.metrics['copy_last_loss']:.5f})  probe ratio {ratio:.2f}x")  # fmt: skip
    out = Path(tempfile.gettempdir()) / "facet-demo"
    out.mkdir(exist_ok=True)
    print(f"\nrollouts of {horizon} frames from 5 simulated ones (MSE vs the simulation; GIFs in {out}):")
    for m in models:
        low, high = m.constant_range
        constant = low + 0.3 * (high - low)
        clip = client.simulate(m.dataset, constant=constant, frames=5 + horizon, seed=7)
        predicted = np.stack(list(client.rollout(m.id, clip[:5], horizon=horizon)))
        truth = clip[5:].astype(np.float32) / 255
        mse = float(((predicted.astype(np.float32) / 255 - truth) ** 2).mean())
        copy_last = float(((clip[4].astype(np.float32) / 255 - truth) ** 2).mean())
        estimate = client.estimate_constant(m.id, clip)
        gif = sdk.save_gif(np.concatenate([clip[:5], predicted]), out / f"{m.dataset}.gif")
        print(f"  {m.dataset:<18} rollout MSE {mse:.4f} (copy-last {copy_last:.4f})  {m.constant} {constant:.3g} -> estimate {estimate}  {gif.name}")
    print()


def check(client: sdk.Client) -> str:
    """`facet check`'s one cheap real call: list the frame models the service holds.

    Args:
        client: a client whose `nextframe` address is the service to check.
    Returns:
        One line for the report, e.g. "6 frame models: pendulum-unet, ...".
    Raises:
        sdk.FacetError: the call failed (Unavailable, Unauthenticated, ...).
        LookupError: the service holds no frame model.
    """
    models = client.list_frame_models()
    if not models:
        raise LookupError("the service holds no frame model")
    return f"{len(models)} frame models: {', '.join(m.id for m in models)}"
