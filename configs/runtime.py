"""What the seed's config files export beside `exp_config`: the device to use and the CPU count."""

from __future__ import annotations

import os


def detect_device() -> str:
    """'cuda' if a GPU is visible, else 'mps' on Apple silicon, else 'cpu' (the seed's rule)."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


DEVICE = detect_device()
N_CPU = os.cpu_count() or 1
