"""AdamW with the usual decay exclusions, and the learning-rate schedules the configs name (warmup, then decay).

Weight decay applies to matrices only: never to norms, biases or embeddings. The EMA codebooks are buffers,
not parameters, so the optimizer never sees them. Frozen parameters (stage 2's base) are left out.

Both are built from the config's `optim` section alone. Schedules are pure functions of the step (a LambdaLR),
so a resumed run continues the same curve exactly. Names are transformers' scheduler names, so config files
written for it keep working: cosine_with_min_lr (kwargs min_lr or min_lr_rate), cosine, linear, constant,
constant_with_warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from configs.schema import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embedding_params = {
        id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()
    }
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and id(param) not in embedding_params else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    groups = [g for g in parameter_groups(model, config.weight_decay) if g["params"]]
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), eps=1e-8)


def lr_multiplier_fn(config: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """step -> factor on the base learning rate."""
    kind, warmup = config.scheduler_type, config.warmup_steps
    kwargs = config.scheduler_specific_kwargs
    if "min_lr_rate" in kwargs:
        floor = kwargs["min_lr_rate"]
    elif kind == "cosine_with_min_lr":
        floor = kwargs.get("min_lr", 0.0) / config.learning_rate
    else:
        floor = 0.0
    total_steps = max(total_steps, 1)

    def multiplier(step: int) -> float:
        if kind == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant_with_warmup":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier_fn(config, total_steps))
