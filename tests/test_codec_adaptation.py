"""The adaptive codec's optimizer (components/codec/adaptation.py): its updates are torch.optim.Adam's to the bit,
so files written with torch's Adam decode, and adapting never imports torch._dynamo (what made torch.optim's
construction cost seconds on every adaptive run)."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch

from components.codec.adaptation import OnlineAdapter
from components.codec.file_format import AdaptSettings
from model import build_model
from tests.model_helpers import real_text, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

WINDOWS = [[256, *real_text()[start : start + 47]] for start in (0, 300, 900)]


def test_the_codec_adam_updates_are_torch_adam_to_the_bit():
    torch.manual_seed(0)
    model = build_model(tiny_config(num_levels=2)).eval()
    theirs, initial = copy.deepcopy(model), copy.deepcopy(model)
    adapter = OnlineAdapter(model, AdaptSettings(learning_rate=3e-3, steps_per_round=3))
    parameters = [p for p in theirs.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=3e-3, foreach=False)  # what the codec used before
    for round_windows in (WINDOWS, WINDOWS[1:], WINDOWS):
        adapter.update(round_windows)
        for _ in range(3):
            out = theirs(torch.tensor(round_windows), torch.zeros(len(round_windows), 48, dtype=torch.bool))
            optimizer.zero_grad(set_to_none=True)
            out.total_loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(model.parameters(), initial.parameters(), strict=True))
    for ours, reference in zip(model.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(ours, reference)


def test_adapting_does_not_import_torch_dynamo():
    script = textwrap.dedent(
        """
        import sys, torch
        from components.codec.adaptation import OnlineAdapter
        from components.codec.file_format import AdaptSettings
        from model import build_model
        from tests.model_helpers import tiny_config
        adapter = OnlineAdapter(build_model(tiny_config()).eval(), AdaptSettings(steps_per_round=1))
        adapter.update([[256, *b"some text to adapt on"]])
        print("torch._dynamo" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
