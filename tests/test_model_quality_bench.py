"""bench/quality.py's pieces: the plain model is scored like its training loss, the project model's code
statistics (bits per code, bytes per code, codebook perplexity, the top LM's share) come from the code length it
is scored by, slices cover the steps, the time-based schedule, and one-line errors for bad input."""

import math
import sys
from pathlib import Path

import pytest
import scipy.stats
import torch

from model.autoencoder import build_model
from model.tokenizer import NUM_BYTES
from tests.model_helpers import padded_batch, real_text, tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402
from model_throughput import PlainByteTransformer  # noqa: E402

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)


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


def test_code_statistics_add_up_to_the_code_length_and_count_every_sent_code():
    torch.manual_seed(0)
    model = build_model(tiny_config(level_changes={"codebook_size": 8})).eval()
    text = real_text()
    tokens, padding = padded_batch([text[:90], text[200:240], text[500:620]])
    tally = quality.CodeTally(8)
    bits = quality.project_bits(model, tokens, padding, tally=tally)
    assert torch.allclose(bits, model.code_length_bits(tokens, padding), rtol=1e-5)
    assert tally.top_bits + tally.level_bits == pytest.approx(float(bits.sum()), rel=1e-5)
    compressed = model.compress(tokens, padding)
    sent = compressed.top_codes[compressed.top_valid]
    real_bytes = int(((tokens < NUM_BYTES) & ~padding).sum())
    stats = tally.result(real_bytes)
    assert stats["codes"] == len(sent) > 3
    assert stats["bytes_per_code"] == pytest.approx(real_bytes / len(sent))
    assert stats["bits_per_code"] == pytest.approx(tally.top_bits / len(sent))
    assert stats["top_share"] == pytest.approx(tally.top_bits / float(bits.sum()), rel=1e-5)
    frequencies = torch.bincount(sent, minlength=8).numpy()
    assert stats["codebook_perplexity"] == pytest.approx(math.exp(scipy.stats.entropy(frequencies)))


def test_slices_end_at_the_last_step_and_the_schedule_follows_time():
    assert quality.slice_ends(500, 3) == [167, 333, 500] and quality.slice_ends(2, 5) == [1, 2]
    config = quality.load_pipeline_config("demo")
    assert quality.lr_at(config, 0, 0.0) == pytest.approx(config.optim.learning_rate / config.optim.warmup_steps)
    assert quality.lr_at(config, 10_000, 0.0) == pytest.approx(config.optim.learning_rate)
    assert quality.lr_at(config, 10_000, 1.0) == pytest.approx(config.optim.scheduler_specific_kwargs["min_lr"])


def test_bad_input_is_one_line_and_exit_2(capsys):
    assert quality.main(["--config", "no_such"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no_such" in err and "\n" not in err
    assert quality.main(["--config", "stage1_super_tiny"]) == 2  # no top LM: no bits per byte
    assert "no top LM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        quality.main(["--steps", "0"])
    assert exit_info.value.code == 2
