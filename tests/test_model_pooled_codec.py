"""A top LM that reads the pooled vectors of past segments (pooled_inputs) is still an achievable code: the
codec, which decodes step by step and recomputes those vectors from the bytes it has decoded, round-trips
with it and pays the code length the batched evaluation reports."""

from __future__ import annotations

import pytest
import torch

from components.codec.files import CodecParams
from components.evaluation.compression_eval import evaluate_compression, text_windows
from model import build_model
from tests.codec_helpers import WINDOW, codec_config, round_trip
from tests.model_helpers import real_text, torch_single_thread  # noqa: F401
from tests.test_model_code_length import sharpen_entropy_models

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


def test_pooled_top_lm_round_trips_and_codes_the_reported_length(tmp_path):
    model = pooled_model()
    data = TEXT[:400]
    context = 8
    restored, summary, _ = round_trip(model, data, tmp_path, CodecParams(context=context, streams=1))
    assert restored == data
    report = evaluate_compression(
        model, text_windows(data, WINDOW, 16, context=context), torch.device("cpu"), reconstruction_windows=0
    )
    assert summary.coded_bits == pytest.approx(report["quantized_bits_per_byte"] * len(data), rel=1e-3)
