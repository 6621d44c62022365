"""Optimizer groups and learning-rate schedules."""

import math

import pytest
import torch
from torch import nn

from components.training.optimization import build_optimizer, build_scheduler, lr_multiplier_fn, parameter_groups
from configs import OptimConfig


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.linear = nn.Linear(4, 4)
        self.norm = nn.RMSNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.register_buffer("codebook", torch.zeros(8, 4))


def test_decay_only_on_trainable_matrices_never_norms_biases_embeddings_or_buffers() -> None:
    model = Tiny()
    decay, no_decay = parameter_groups(model, 0.1)
    assert [p is model.linear.weight for p in decay["params"]] == [True]
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["embedding.weight", "linear.bias", "norm.weight"]
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0


def test_a_fully_frozen_model_is_an_error() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(model, OptimConfig())


def test_cosine_with_min_lr_warms_up_then_decays_to_the_floor() -> None:
    config = OptimConfig(learning_rate=1e-3, warmup_steps=10, scheduler_specific_kwargs={"min_lr": 1e-4})
    f = lr_multiplier_fn(config, total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


@pytest.mark.parametrize(
    ("kind", "at_half", "at_end"),
    [("cosine", 0.5, 0.0), ("linear", 0.5, 0.0), ("constant", 1.0, 1.0), ("constant_with_warmup", 1.0, 1.0)],
)
def test_other_seed_schedules(kind: str, at_half: float, at_end: float) -> None:
    config = OptimConfig(scheduler_type=kind, warmup_steps=0, scheduler_specific_kwargs={})
    f = lr_multiplier_fn(config, total_steps=100)
    assert f(50) == pytest.approx(at_half) and f(100) == pytest.approx(at_end, abs=1e-12)


def test_scheduler_state_resumes_the_same_curve() -> None:
    config = OptimConfig(learning_rate=1.0, warmup_steps=3, scheduler_specific_kwargs={"min_lr": 0.0})
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=20)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    fresh_optimizer = build_optimizer(model, config)
    resumed = build_scheduler(fresh_optimizer, config, total_steps=20)
    resumed.load_state_dict(saved)
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    expected = 0.5 * (1 + math.cos(math.pi * (7 - 3) / 17))
    assert scheduler.get_last_lr()[0] == pytest.approx(expected)
