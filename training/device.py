"""The device training runs on: `--device auto` (the default) is CUDA when this torch has a GPU,
else the CPU; "cpu", "cuda" and "cuda:N" ask for one. Exports and their parity checks always run
on the CPU (the model is moved there first), whatever trained it."""

from __future__ import annotations

import torch

AUTO = "auto"
CHOICES_HELP = "auto (CUDA when torch has a GPU, else cpu), cpu, cuda or cuda:N"


def resolve_device(name: str = AUTO) -> torch.device:
    """The torch device `name` stands for on this machine.

    Args:
        name: "auto", "cpu", "cuda" or "cuda:N".
    Returns:
        the device ("auto": cuda if `torch.cuda.is_available()`, else cpu).
    Raises:
        ValueError: a name that is none of those, or CUDA asked for where torch has none (or has
            fewer GPUs than N + 1); the message says what to use instead.
    """
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not one of {CHOICES_HELP}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {name!r} is not one of {CHOICES_HELP}")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
            "use --device cpu, or auto to take a GPU only when there is one"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} asked for, but there are {torch.cuda.device_count()} CUDA GPUs (cuda:0..)")
    return device


def ray_use_gpu(name: str = AUTO) -> bool | None:
    """What `name` asks of Ray Train workers, whose devices are the cluster's, not this machine's.

    Args:
        name: "auto", "cpu" or "cuda" (a GPU index means nothing to Ray: each worker gets one).
    Returns:
        None for "auto" (GPU workers when the cluster has a GPU per worker), False for "cpu",
        True for "cuda".
    Raises:
        ValueError: any other name.
    """
    if name == AUTO:
        return None
    if name in ("cpu", "cuda"):
        return name == "cuda"
    raise ValueError(f"device {name!r} for Ray Train workers: use auto, cpu or cuda (each worker gets one GPU)")
