"""Compressor: reconstruction gradient reaches the compression branch and pooler, causal segmentation,
no NaN with fully padded windows, step-wise LM branch == full forward."""

import math

import pytest
import torch

from model import build_model
from model.autoencoder import masked_cross_entropy
from model.code_length import code_length_breakdown
from tests.model_helpers import padded_batch, text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def test_reconstruction_gradient_reaches_compression_branch_and_pooler():
    model = build_model(tiny_config(top="discrete"))
    out = model(text_windows(48, 4))
    out.avg_reconstruction_loss.backward()
    compressor = model.compressors[0]
    for name, module in [
        ("compression_layers", compressor.compression_layers),
        ("pooler", compressor.pooler),
    ]:
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name
    # The reconstruction loss does not train the entropy branch (its gradient comes from the aux LM loss).
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in compressor.lm_head.parameters())


def test_top_lm_loss_sends_no_gradient_into_the_compressor():
    model = build_model(tiny_config(top="discrete"))
    out = model(text_windows(48, 4))
    out.avg_top_code_lm_loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.compressors.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.top_lm.parameters())


def test_segment_of_position_t_does_not_depend_on_tokens_at_or_after_t():
    torch.manual_seed(0)
    model = build_model(tiny_config(level_changes=dict(entropy_delta=0.0, max_segment_len=None))).eval()
    tokens = text_windows(40, 2)
    base = model.compressors[0](tokens).segment_ids
    assert base.max() > 3  # several boundaries, so the check is not vacuous
    for t in (5, 17, 30):
        changed = tokens.clone()
        changed[:, t:] = torch.randint(0, 256, changed[:, t:].shape)
        ids = model.compressors[0](changed).segment_ids
        assert torch.equal(ids[:, : t + 1], base[:, : t + 1])


def test_fully_padded_windows_give_no_nan():
    model = build_model(tiny_config(level_changes=dict(window=8)))
    tokens, kpm = padded_batch([b"short", b"a somewhat longer line of text that fills the window" * 2])
    assert kpm[0].sum() > 3 * 8  # whole windows of padding
    out = model(tokens, kpm)
    assert torch.isfinite(out.total_loss)
    out.total_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    compressed = out.compressed.levels[0]
    assert (compressed.segment_ids[kpm] == -1).all()
    assert compressed.row_valid[0].sum() < compressed.row_valid[1].sum()


def test_lm_step_matches_full_forward_logits_and_state():
    model = build_model(tiny_config()).eval()
    compressor = model.compressors[0]
    tokens = text_windows(20, 1)
    full = compressor(tokens)
    caches = compressor.new_caches()
    logits, states = zip(*(compressor.lm_step(tokens[:, t], caches) for t in range(20)), strict=True)
    torch.testing.assert_close(torch.stack(logits, dim=1), full.lm_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.stack(states, dim=1), full.lm_state, atol=1e-4, rtol=1e-4)


def test_continuous_expander_inputs_ablation_feeds_unquantized_vectors_and_trains_the_pooler():
    model = build_model(tiny_config(use_continuous_expander_inputs=True))
    out = model(text_windows(48, 4))
    level = out.compressed.levels[0]
    expander = model.expanders[0]
    args = (level.tokens, level.key_padding_mask, level.segment_ids)
    torch.testing.assert_close(out.reconstruction_logits[0], expander(*args, level.pre_vq, level.row_valid))
    assert not torch.allclose(out.reconstruction_logits[0], expander(*args, level.quantized, level.row_valid))
    out.avg_reconstruction_loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.compressors[0].pooler.parameters()) > 0


def test_continuous_expander_inputs_code_length_is_what_a_receiver_of_the_codes_pays():
    """A receiver holds codes, never pre-VQ vectors: the code length must use the quantized vectors."""
    model = build_model(tiny_config(use_continuous_expander_inputs=True)).eval()
    tokens = text_windows(48, 4)
    breakdown = code_length_breakdown(model, tokens)
    compressed = model.compress(tokens)
    level = compressed.levels[0]
    expander = model.expanders[0]
    args = (level.tokens, level.key_padding_mask, level.segment_ids)
    real = ~level.key_padding_mask

    def bits(memory):
        logits = expander(*args, memory, level.row_valid)
        return masked_cross_entropy(logits, level.tokens, real).sum(1) / math.log(2)

    torch.testing.assert_close(breakdown["levels"][0], bits(level.quantized))
    assert not torch.allclose(breakdown["levels"][0], bits(level.pre_vq))
