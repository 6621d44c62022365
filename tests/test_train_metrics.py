"""StepMetrics: the seed's averaged loss names plus the codebook's state (EMA perplexity, live codes, resets)."""

import pytest
import torch

from components.training.train_metrics import StepMetrics
from model import build_model
from tests.model_helpers import text_windows, tiny_config

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


def test_codebook_state_is_reported_after_each_step_and_follows_resets():
    torch.manual_seed(0)
    model = build_model(tiny_config(level_changes={"vq_reset_interval": 1, "codebook_size": 256}))
    metrics = StepMetrics([256])
    seen = []
    for step in range(10):
        model.set_training_progress(step, 100)
        metrics.reset()
        for micro in range(2):
            outputs = model(text_windows(48, 4, offset=997 * (2 * step + micro)))
            metrics.add(outputs)
        averages = metrics.averages()
        quantizer_metrics = outputs.compressed.levels[0].metrics
        assert averages["vq_metrics/live_codes_L0"] == float(quantizer_metrics["live_codes"])
        assert averages["vq_metrics/resets_L0"] == float(model.compressors[0].quantizer.total_resets)
        assert averages["vq_metrics/ema_perplexity_L0"] == float(quantizer_metrics["ema_perplexity"])
        assert 1.0 <= averages["vq_metrics/ema_perplexity_L0"] <= 256.0
        seen.append(averages["vq_metrics/resets_L0"])
    assert seen[-1] > 0, "a fresh codebook with resets every step resets some dead codes"
    assert seen == sorted(seen)
