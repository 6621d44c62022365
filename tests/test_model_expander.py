"""Expander: cross-attention aligned by segment, causal teacher forcing, KV-cache steps == forward."""

import pytest
import torch

from model import build_model
from tests.model_helpers import text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def setup(lookback=1, num_queries=1, reads_lm_state=False):
    config = tiny_config(
        cross_lookback=lookback,
        level_changes=dict(num_queries=num_queries, max_segment_len=4),
        expander_reads_lm_state=reads_lm_state,
    )
    model = build_model(config).eval()
    tokens = text_windows(40, 2)
    out = model.compress(tokens).levels[0]
    return model, out


def logits_with(model, out, memory):
    return model.expanders[0](out.tokens, out.key_padding_mask, out.segment_ids, memory, out.row_valid, out.lm_state)


def test_prediction_depends_on_own_segment_and_lookback_not_on_later_codes():
    for lookback, L in [(1, 1), (0, 1), (2, 2)]:
        model, out = setup(lookback, L)
        base = logits_with(model, out, out.quantized)
        seg = out.segment_ids[0]
        k = 3
        assert seg.max() >= k + lookback + 1
        memory = out.quantized.clone()
        memory[0, k * L : (k + 1) * L] = torch.randn(L, memory.shape[-1]) * 3  # perturb segment k's code rows
        changed = logits_with(model, out, memory)
        differs = (changed[0] - base[0]).abs().amax(-1) > 1e-6  # (S,)
        torch.testing.assert_close(changed[1], base[1])  # other batch row untouched
        own_and_lookback = (seg >= k) & (seg <= k + lookback)
        assert not differs[seg < k].any(), "earlier segments must not see a later code"
        assert not differs[seg > k + lookback].any(), "segments beyond the look-back must not see it"
        assert differs[own_and_lookback].all()


def test_teacher_forced_prediction_at_t_ignores_tokens_at_or_after_t():
    model, out = setup()
    base = logits_with(model, out, out.quantized)
    tokens = out.tokens.clone()
    tokens[:, 25:] = (tokens[:, 25:] + 1) % 256
    changed = model.expanders[0](tokens, out.key_padding_mask, out.segment_ids, out.quantized, out.row_valid)
    torch.testing.assert_close(changed[:, :26], base[:, :26])
    assert not torch.allclose(changed[:, 26:], base[:, 26:])


def test_reading_the_lm_state_keeps_prediction_at_t_blind_to_tokens_at_or_after_t():
    model, out = setup(reads_lm_state=True)
    base = logits_with(model, out, out.quantized)
    tokens = out.tokens.clone()
    tokens[:, 25:] = (tokens[:, 25:] + 1) % 256
    lm_state = model.compressors[0](tokens, out.key_padding_mask).lm_state  # the state of the changed tokens
    expander = model.expanders[0]
    changed = expander(tokens, out.key_padding_mask, out.segment_ids, out.quantized, out.row_valid, lm_state)
    torch.testing.assert_close(changed[:, :26], base[:, :26])
    assert not torch.allclose(changed[:, 26:], base[:, 26:])
    zeroed_state = torch.zeros_like(out.lm_state)  # and it does read the state: without it, it predicts otherwise
    blind = expander(out.tokens, out.key_padding_mask, out.segment_ids, out.quantized, out.row_valid, zeroed_state)
    assert not torch.allclose(blind[:, 1:], base[:, 1:])


@pytest.mark.parametrize("reads_lm_state", [False, True])
def test_kv_cache_steps_match_teacher_forced_logits(reads_lm_state):
    model, out = setup(lookback=1, num_queries=2, reads_lm_state=reads_lm_state)
    expander = model.expanders[0]
    full = logits_with(model, out, out.quantized)[:1]
    caches = expander.new_caches()
    steps = []
    L = 2
    for t in range(out.tokens.shape[1]):
        segment = int(out.segment_ids[0, t])
        first = max(0, segment - 1)
        memory = out.quantized[:1, first * L : (segment + 1) * L]
        previous = None if t == 0 else out.tokens[:1, t - 1]
        lm_state = None if t == 0 or not reads_lm_state else out.lm_state[:1, t - 1]
        steps.append(expander.step(previous, torch.tensor([segment]), memory, first, caches, lm_state))
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-4, rtol=1e-4)
