"""Inputs a decoder recomputes from the bytes it has decoded keep the code achievable: a top LM that reads the
pooled vectors of past segments (pooled_inputs), an expander that reads its compressor's entropy-model state
(expander_reads_lm_state), and an expander that reads the top LM's state (expander_reads_top_state). The codec,
which decodes step by step, round-trips with each and pays the code length the batched evaluation reports."""

from __future__ import annotations

import pytest
import torch

from components.codec.files import CodecParams
from components.evaluation.compression_eval import evaluate_compression, text_windows
from model import build_model
from tests.codec_helpers import WINDOW, codec_config, round_trip
from tests.model_helpers import real_text
from tests.test_model_code_length import sharpen_entropy_models

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

TEXT = real_text()


def pooled_model():
    """Untrained, with a varying entropy (boundaries from the entropy rule) and pooled vectors that move the
    top LM's distribution (at init they barely would)."""
    model = build_model(codec_config(top="pooled", level_changes={"max_segment_len": 6, "entropy_delta": 0.05}))
    sharpen_entropy_models(model)
    with torch.no_grad():
        model.top_lm.pooled_proj.weight.mul_(50.0)
        model.top_lm.log_inverse_temperature.fill_(3.0)
    return model.eval()


def lm_state_model():
    """Untrained, with a varying entropy, an LM-state projection large enough to move the expander and an
    expander head sharp enough to show it (at init its logits are nearly flat whatever it reads)."""
    model = build_model(
        codec_config(expander_reads_lm_state=True, level_changes={"max_segment_len": 6, "entropy_delta": 0.05})
    )
    sharpen_entropy_models(model)
    with torch.no_grad():
        model.expanders[0].lm_state_proj.weight.mul_(50.0)
        model.expanders[0].head.weight.mul_(50.0)
    return model.eval()


def top_state_model():
    """Untrained, a top LM reading pooled vectors and an expander reading the top LM's state
    (expander_reads_top_state), each projection large enough to move what reads it."""
    config = codec_config(
        top="pooled", expander_reads_top_state=True, level_changes={"max_segment_len": 6, "entropy_delta": 0.05}
    )
    model = build_model(config)
    sharpen_entropy_models(model)
    with torch.no_grad():
        model.top_lm.pooled_proj.weight.mul_(50.0)
        model.expanders[0].top_state_proj.weight.mul_(50.0)
        model.expanders[0].head.weight.mul_(50.0)
    return model.eval()


@pytest.mark.parametrize(
    "make_model", [pooled_model, lm_state_model, top_state_model], ids=["pooled", "lm_state", "top_state"]
)
def test_decoder_recomputed_inputs_round_trip_and_code_the_reported_length(make_model, tmp_path):
    """Four streams coded side by side (chunks of 150, 150, 150 and 100 bytes), so a decoder that
    mixes up the rows' recomputed inputs codes other distributions than the report's."""
    model = make_model()
    data, context, chunk = TEXT[:550], 8, 150
    restored, summary, _ = round_trip(model, data, tmp_path, CodecParams(context=context, chunk_bytes=chunk))
    assert restored == data
    reported_bits = 0.0
    for offset in range(0, len(data), chunk):  # each chunk is coded as the report codes a file
        piece = data[offset : offset + chunk]
        windows = text_windows(piece, WINDOW, 16, context=context)
        report = evaluate_compression(model, windows, torch.device("cpu"), reconstruction_windows=0)
        reported_bits += report["quantized_bits_per_byte"] * len(piece)
    assert summary.coded_bits == pytest.approx(reported_bits, rel=1e-3)
