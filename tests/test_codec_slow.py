"""Long codec runs: whole Canterbury texts with a trained tiny model, static and adaptive, and a multi-megabyte
round trip in bounded memory. The codec codes its streams side by side (docs/codec.md, "Speed"), so each takes
from seconds to a few minutes on one thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from components.codec.file_format import AdaptSettings
from components.codec.files import CodecParams
from tests.codec_helpers import round_trip, trained_model
from tests.model_helpers import real_text
from tests.test_codec_roundtrip import canterbury_texts

pytestmark = [pytest.mark.torch_single_thread, pytest.mark.slow]


@pytest.mark.parametrize("name", ["alice29", "asyoulik", "lcet10", "plrabn12"])
def test_whole_canterbury_text_round_trips(name, tmp_path):
    data = canterbury_texts()[name]
    restored, summary, _ = round_trip(trained_model(), data, tmp_path, CodecParams(streams=256), workers=2)
    assert restored == data
    assert summary.payload_bits_per_byte < 6.0


def test_adaptive_canterbury_text_round_trips_and_beats_static(tmp_path):
    data = canterbury_texts()["alice29"][:20_000]
    (tmp_path / "s").mkdir(), (tmp_path / "a").mkdir()
    _, static, _ = round_trip(trained_model(), data, tmp_path / "s", CodecParams(streams=8))
    restored, adaptive, _ = round_trip(
        trained_model(),
        data,
        tmp_path / "a",
        CodecParams(streams=8, adapt=AdaptSettings(learning_rate=1e-3, steps_per_round=1)),
    )
    assert restored == data
    assert adaptive.payload_bits_per_byte < static.payload_bits_per_byte


def test_multi_megabyte_round_trip(tmp_path):
    data = (real_text() * 250)[: 2 * 1024 * 1024 + 17]  # 2 MB and a bit: many blocks, a partial last one
    params = CodecParams(streams=256, rounds_per_block=4)
    restored, _, _ = round_trip(trained_model(), data, tmp_path, params, workers=2)  # CI's two cores
    assert restored == data


def test_memory_does_not_grow_with_the_input(tmp_path):
    """The codec's memory is bounded by a round (streams x window) and a block, whatever the file size:
    tracemalloc's peak while 16 KB and 96 KB go through compress and decompress (one round per block, files read
    in 4 KB chunks) in a fresh interpreter (tests/codec_memory_probe.py), so that nothing earlier tests left
    behind moves it. Measured: the larger peaks within 1 KB of the smaller; keeping the input, the output or the
    coded blocks would add at least the 80 KB between the sizes."""
    small, large = 16 * 1024, 96 * 1024
    result = subprocess.run(
        [sys.executable, "-m", "tests.codec_memory_probe", str(tmp_path), str(small), str(large)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])["peaks"]
    assert peaks[1] - peaks[0] < (large - small) / 2, f"peaks {peaks}: memory must not grow with the input"
