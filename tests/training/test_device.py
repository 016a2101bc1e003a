"""`--device`: auto takes CUDA only when torch has it; an explicit device torch cannot use is
refused with a message that says what to use; Ray workers take auto, cpu or cuda."""

from __future__ import annotations

import pytest
import torch

from training.device import ray_use_gpu, resolve_device
from training.nextframe.build import FrameBuildOptions
from training.sae.build import BuildOptions


def test_auto_is_cuda_only_when_torch_has_it() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", ""])
def test_unknown_devices_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="auto .*cpu, cuda or cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU; use --device cpu"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        BuildOptions(device="cuda")  # before anything is cached or trained
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        FrameBuildOptions(device="cuda")


def test_ray_workers_take_auto_cpu_or_cuda() -> None:
    assert (ray_use_gpu("auto"), ray_use_gpu("cpu"), ray_use_gpu("cuda")) == (None, False, True)
    with pytest.raises(ValueError, match="each worker gets one GPU"):
        ray_use_gpu("cuda:1")
