"""`eval_mode(model)`: run a block in eval mode (no dropout, no VQ statistic moves) and put the model back in the
mode it was in, training or not, however the block ends. Measuring, decoding and sampling in the middle of
training use it, so that they neither change what they measure nor leave training in eval mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
