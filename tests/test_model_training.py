"""Short training runs on real text (tests/data/model_text.txt): the codes carry information, and a tiny model
overfits one text so that greedy decoding from its codes restores it exactly."""

import math

import pytest
import torch
import torch.nn.functional as F

from model import build_model
from model.tokenizer import ByteTokenizer
from tests.model_helpers import padded_batch, text_windows, tiny_config, train

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def test_codes_carry_information_about_their_window():
    torch.manual_seed(0)
    # The expander (1 layer) is no deeper than the entropy branch (1 shared + 1 LM layer): a strong expander
    # could otherwise pass by being a good byte LM that ignores the codes.
    config = tiny_config(
        top=None, level_changes=dict(window=16, codebook_size=64, max_segment_len=8, entropy_delta=0.2)
    )
    model = build_model(config)
    data = text_windows(64, 400, stride=23)
    train_rows, held_out = data[:300], data[300:332]

    def batches(step):
        g = torch.Generator().manual_seed(step)
        return train_rows[torch.randint(0, 300, (16,), generator=g)], None

    train(model, batches, steps=200, lr=3e-3)
    model.eval()
    with torch.no_grad():
        out = model(held_out)
        level = out.compressed.levels[0]
        other = torch.roll(torch.arange(held_out.shape[0]), 1)  # decode each window with its neighbour's codes
        logits = model.expanders[0](
            level.tokens,
            level.key_padding_mask,
            level.segment_ids,
            level.quantized[other],
            level.row_valid[other],
        )
        with_other_codes = F.cross_entropy(logits.transpose(1, 2), level.tokens)
    with_codes, byte_lm = float(out.avg_reconstruction_loss), float(out.avg_aux_lm_loss)
    assert with_codes < byte_lm - 0.25, (with_codes, byte_lm)
    assert with_codes < float(with_other_codes) - 1.0, (with_codes, float(with_other_codes))
    assert float(out.all_codebook_perplexities[0]) > 8  # many codes in use, not a collapsed codebook


def test_overfit_one_text_restores_it_exactly_and_codes_it_in_few_bits():
    torch.manual_seed(0)
    text = b"The lighthouse stood at the end of a narrow spit of land, where the road gave up and the rocks began."
    config = tiny_config(top="discrete", level_changes=dict(dim=48, window=16, codebook_size=32, max_segment_len=6))
    model = build_model(config)
    tokens, kpm = padded_batch([text])  # BOS + text + EOS
    train(model, lambda step: (tokens, kpm), steps=300, lr=3e-3)
    model.eval()

    compressed = model.compress(tokens, kpm)
    restored = model.decompress(compressed.top_codes, compressed=compressed)
    assert torch.equal(restored[0], tokens[0]), ByteTokenizer().decode(restored[0])
    bits_per_byte = float(model.code_length_bits(tokens, kpm)[0]) / len(text)
    assert math.isfinite(bits_per_byte) and bits_per_byte < 2.0
    # and the top LM continues a prompt with the text it learned
    continuation = model.generate_bytes(tokens[0, :50], max_new_bytes=20)
    assert ByteTokenizer().decode(continuation[:10]) == text[49:59]
