"""An expander that reads the top LM's state (`expander_reads_top_state`): it reads only what a decoder holds when
a segment opens, its loss trains the top LM, and configs that cannot train it (the two-stage workflow) are
refused in one line. The code length and the codec with it are checked in test_model_code_length.py and
test_model_pooled_codec.py."""

import pytest
import torch

from components.training.stages import stage_configs
from components.training.train import stage_of
from configs import ConfigError
from model import build_model
from tests.model_helpers import text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def top_state_model():
    """Untrained, a top LM reading pooled vectors, projections large enough to move what reads them."""
    config = tiny_config(top="pooled", expander_reads_top_state=True, level_changes={"max_segment_len": 4})
    model = build_model(config).eval()
    with torch.no_grad():
        model.top_lm.pooled_proj.weight.mul_(50.0)
        model.expanders[0].top_state_proj.weight.mul_(50.0)
    return model


def logits_with_top_state_of(model, out, text_for_top_lm: torch.Tensor) -> torch.Tensor:
    """The expander's teacher-forced logits over `out` (its tokens, codes, segments), reading the top LM's
    state computed from another text: only what reaches the expander through that state differs."""
    hidden = model.top_lm_loss(model.compress(text_for_top_lm))["hidden"]
    top_state = model.top_state_per_position(hidden, out.segment_ids)
    expander = model.expanders[0]
    return expander(out.tokens, out.key_padding_mask, out.segment_ids, out.quantized, out.row_valid, None, top_state)


@torch.no_grad()
def test_the_top_state_keeps_a_segment_blind_to_its_own_bytes_and_later_ones():
    """Changing the bytes of segment s from position p on leaves the logits of positions <= p unchanged through
    the top LM's state (segment s's own positions before the change included), and changes later ones."""
    model = top_state_model()
    tokens = text_windows(48, 2)
    out = model.compress(tokens).levels[0]
    segment = 4
    opening = int((out.segment_ids[0] == segment).nonzero()[0])
    assert int((out.segment_ids[0] == segment).sum()) >= 2, "the change must fall inside the segment"
    change = opening + 1  # segment s's first position precedes it; the rest of the segment and after change
    changed = tokens.clone()
    changed[:, change:] = (changed[:, change:] + 1) % 256
    base = logits_with_top_state_of(model, out, tokens)
    after = logits_with_top_state_of(model, out, changed)
    torch.testing.assert_close(after[:, : change + 1], base[:, : change + 1])
    assert not torch.allclose(after[:, change + 1 :], base[:, change + 1 :]), "later segments read the change"


def test_the_expanders_loss_trains_the_top_lm_through_its_state():
    model = top_state_model().train()
    model(text_windows(48, 2)).avg_reconstruction_loss.backward()
    grad = model.top_lm.layers[0].attn.qkv.weight.grad
    assert grad is not None and grad.abs().sum() > 0, "the top LM is trained as a context model"


def test_the_flag_needs_the_joint_workflow():
    config = tiny_config(top="pooled", expander_reads_top_state=True)
    with pytest.raises(ConfigError, match="needs the joint workflow"):
        stage_configs(config, 10, 10, "/tmp/artifacts", "run")
    with pytest.raises(ConfigError, match="needs the joint workflow"):
        stage_of(config, "base_components.pt")
    with pytest.raises(ValueError, match="needs the joint workflow"):
        tiny_config(top=None, expander_reads_top_state=True)


@torch.no_grad()
def test_generation_reads_the_top_state_of_the_codes_it_predicts():
    """generate_bytes runs the top LM for codes it predicts (not only known ones) and passes its state down:
    greedy continuations are reproducible, and the state moves them (a zero projection gives others)."""
    model = top_state_model()
    prompt = text_windows(24, 1)[0]
    first = model.generate_bytes(prompt, 24)
    assert first.numel() > 0 and torch.equal(first, model.generate_bytes(prompt, 24))
    model.expanders[0].top_state_proj.weight.zero_()
    assert not torch.equal(model.generate_bytes(prompt, 24), first), "the top state reaches the bytes"
