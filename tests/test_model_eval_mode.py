"""`model.eval_mode`: eval mode inside the block for every submodule, the previous mode (training or not) after
it, also when the block raises."""

from __future__ import annotations

import pytest
import torch

from model.eval_mode import eval_mode


def modes(model: torch.nn.Module) -> set[bool]:
    return {module.training for module in model.modules()}


@pytest.mark.parametrize("training", [True, False])
def test_the_previous_mode_is_back_after_the_block_even_when_it_raises(training: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5)).train(training)
    with eval_mode(model) as inside:
        assert inside is model and modes(model) == {False}
    assert modes(model) == {training}
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("measuring failed")
    assert modes(model) == {training}
