"""bench/quality.py's pieces: the plain model is scored like its training loss, slices cover the steps, the
time-based schedule, and one-line errors for bad input."""

import math
import sys
from pathlib import Path

import pytest
import torch

from tests.model_helpers import padded_batch, torch_single_thread  # noqa: F401

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402
from model_throughput import PlainByteTransformer  # noqa: E402


def test_plain_bits_are_the_training_cross_entropy_over_real_positions():
    torch.manual_seed(0)
    model = PlainByteTransformer(32, 1, 2).eval()
    tokens, padding = padded_batch([b"the sea and the lamp", b"short"])
    bits = quality.plain_bits(model, tokens, padding)
    first, _ = padded_batch([b"the sea and the lamp"])
    assert float(bits[0]) == pytest.approx(
        float(model(first)["total_loss"]) * (first.shape[1] - 1) / math.log(2), rel=1e-5
    )
    short, _ = padded_batch([b"short"])  # padding costs nothing
    assert float(bits[1]) == pytest.approx(float(quality.plain_bits(model, short, short == -1)[0]), rel=1e-5)


def test_slices_end_at_the_last_step_and_the_schedule_follows_time():
    assert quality.slice_ends(500, 3) == [167, 333, 500] and quality.slice_ends(2, 5) == [1, 2]
    config = quality.load_pipeline_config("demo")
    assert quality.lr_at(config, 0, 0.0) == pytest.approx(config.learning_rate / config.warmup_steps)
    assert quality.lr_at(config, 10_000, 0.0) == pytest.approx(config.learning_rate)
    assert quality.lr_at(config, 10_000, 1.0) == pytest.approx(config.scheduler_specific_kwargs["min_lr"])


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert quality.main(["--config", "no_such"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such" in err and "\n" not in err
    assert quality.main(["--config", "stage1_super_tiny"]) == 2  # no top LM: no bits per byte
    assert "no top LM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--steps", "0"])
    assert exit_info.value.code == 2
