"""Generation: a continuation (not a reconstruction) of the prompt, segment by segment, that stops at EOS or
the length cap; greedy decompression from codes."""

import pytest
import torch

from model import build_model
from model.tokenizer import EOS_ID, PAD_ID
from tests.model_helpers import padded_batch, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


class FixedLogits(torch.nn.Module):
    """Replaces an expander head: every position predicts the same distribution."""

    def __init__(self, vocab: int, favourite: int, banned: int | None = None):
        super().__init__()
        self.logits = torch.zeros(vocab)
        self.logits[favourite] = 20.0
        if banned is not None:
            self.logits[banned] = -1e9

    def forward(self, x):
        return self.logits.expand(*x.shape[:-1], -1)


def prompt():
    tokens, _ = padded_batch([b"Once upon a time"], add_eos=False)
    return tokens[0]


def test_generation_stops_at_eos_and_returns_only_the_continuation():
    model = build_model(tiny_config())
    model.expanders[0].head = FixedLogits(259, EOS_ID)
    assert model.generate_bytes(prompt(), max_new_bytes=50).numel() == 0


def test_generation_respects_the_byte_cap_and_never_emits_padding():
    model = build_model(tiny_config())
    model.expanders[0].head = FixedLogits(259, PAD_ID, banned=EOS_ID)
    out = model.generate_bytes(prompt(), max_new_bytes=17)
    assert out.shape == (17,)
    assert not (out == PAD_ID).any()


@pytest.mark.parametrize("num_levels", [1, 2])
def test_generation_is_deterministic_greedy_and_reproducible_when_sampled(num_levels):
    model = build_model(tiny_config(num_levels=num_levels, level_changes=dict(max_segment_len=3)))
    model.train()
    a = model.generate_bytes(prompt(), max_new_bytes=12)
    b = model.generate_bytes(prompt(), max_new_bytes=12)
    assert torch.equal(a, b) and 0 < a.numel() <= 12
    assert model.training  # mode restored
    s1 = model.generate_bytes(prompt(), 12, temperature=1.0, generator=torch.Generator().manual_seed(3))
    s2 = model.generate_bytes(prompt(), 12, temperature=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2)


def test_batched_prompts_give_padded_rows():
    model = build_model(tiny_config())
    tokens, _ = padded_batch([b"short", b"a longer prompt here"], add_eos=False)
    out = model.generate_bytes(tokens, max_new_bytes=6)
    assert out.shape[0] == 2 and out.shape[1] <= 6
    single = model.generate_bytes(tokens[0][tokens[0] != PAD_ID], max_new_bytes=6)
    assert torch.equal(out[0, : single.numel()], single)


def test_generation_needs_a_top_lm():
    with pytest.raises(ValueError, match="top LM"):
        build_model(tiny_config(top=None)).generate_bytes(prompt(), 5)


def test_decompress_stops_when_codes_run_out():
    model = build_model(tiny_config(level_changes=dict(max_segment_len=4)))
    tokens, kpm = padded_batch([b"abcdefghijklmnopqrstuvwxyz"], add_eos=False)
    compressed = model.compress(tokens, kpm)
    n_codes = int(compressed.top_valid.sum())
    restored = model.decompress(compressed.top_codes, compressed=compressed, max_len=500)
    assert restored.shape[1] <= 4 * n_codes  # each code's segment holds at most max_segment_len bytes


def test_generation_continues_the_prompt_instead_of_reconstructing_it():
    """With an expander that always predicts the byte after the previous one, the continuation of a prompt
    ending in 'e' is 'fgh...': a generator that decodes the prompt again (from its codes) starts elsewhere."""
    model = build_model(tiny_config())
    expander = model.expanders[0]
    real_step = expander.step

    def successor_step(previous_token, *args):
        logits = real_step(previous_token, *args) * 0.0
        favourite = ord("A") if previous_token is None or int(previous_token[0]) >= 255 else int(previous_token[0]) + 1
        logits[:, favourite] = 30.0
        return logits

    expander.step = successor_step
    out = model.generate_bytes(prompt(), max_new_bytes=10)
    assert bytes(out.tolist()) == b"fghijklmno"
