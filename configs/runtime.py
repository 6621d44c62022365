"""The one device policy (`choose_device`: training, evaluation, the benchmarks and the seed's `DEVICE` all ask
it), and what the seed's config files export beside `exp_config`: the device to use and the CPU count."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from configs.errors import UserError

if TYPE_CHECKING:
    import torch


class DeviceUnavailableError(UserError, RuntimeError):
    """CUDA was asked for and no CUDA device is visible (a RuntimeError too, as it was before it was a UserError)."""


def choose_device(
    requested: str | None = "auto",
    local_rank: int | None = None,
    on_missing_cuda: Callable[[str], None] | None = None,
    apple_gpu: bool = False,
) -> torch.device:
    """The device to run on.

    - 'auto' (or None, ''): CUDA when a GPU is visible, else Apple's mps when `apple_gpu` (the seed's `DEVICE`
      rule only: training and evaluation never picked mps), else the CPU.
    - a named device ('cpu', 'cuda', 'cuda:1', 'mps'): that device.
    - CUDA with `local_rank` (a torchrun rank): `cuda:<local_rank>`; without it, the device as named.
    - CUDA named while none is visible: `DeviceUnavailableError` (a run meant for a GPU must not crawl on the CPU
      unnoticed), unless `on_missing_cuda` is given: it is called with the request and the CPU is used (lm-eval
      asks for cuda:0 by default; on a machine without CUDA the CPU is the only choice).
    """
    import torch  # here, as before: importing `configs` itself needs no torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif apple_gpu and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    else:
        chosen = torch.device(requested)
    if chosen.type != "cuda":
        return chosen
    if not torch.cuda.is_available():
        if on_missing_cuda is None:
            raise DeviceUnavailableError(f"device {requested!r} was requested but no CUDA device is visible")
        on_missing_cuda(str(requested))
        return torch.device("cpu")
    return torch.device("cuda", local_rank) if local_rank is not None else chosen


def detect_device() -> str:
    """'cuda' if a GPU is visible, else 'mps' on Apple silicon, else 'cpu' (the seed's rule)."""
    return choose_device("auto", apple_gpu=True).type


DEVICE = detect_device()
N_CPU = os.cpu_count() or 1
