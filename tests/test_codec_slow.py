"""Long codec runs: whole Canterbury texts with a trained tiny model, static and adaptive, and a multi-megabyte
round trip in bounded memory. The codec codes its streams side by side (docs/codec.md, "Speed"), so each takes
from seconds to a few minutes on one thread."""

from __future__ import annotations

import tracemalloc

import pytest

from components.codec.file_format import AdaptSettings
from components.codec.files import CodecParams, compress_file, decompress_file
from tests.codec_helpers import identity, round_trip, trained_model
from tests.model_helpers import (
    real_text,
    torch_single_thread,  # noqa: F401
)
from tests.test_codec_roundtrip import canterbury_texts

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["alice29", "asyoulik", "lcet10", "plrabn12"])
def test_whole_canterbury_text_round_trips(name, tmp_path):
    data = canterbury_texts()[name]
    restored, summary, _ = round_trip(trained_model(), data, tmp_path, CodecParams(streams=256))
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
    restored, _, _ = round_trip(trained_model(), data, tmp_path, CodecParams(streams=256, rounds_per_block=4))
    assert restored == data


def test_memory_does_not_grow_with_the_input(tmp_path):
    """tracemalloc's peak (every Python and numpy allocation: where a copy of the input, of the output or of the
    coded blocks would live, and garbage that waits for the cycle collector) while 32 KB and 288 KB go through
    compress and decompress, one round per block. A codec bounded by a round (streams x window) and a block
    peaks at about the same height for both (measured: the larger 68-75 KB higher whatever the sizes, its rounds
    are fuller); keeping the input, or the output, would add at least the 256 KB between them."""
    model, params, peaks = trained_model(), CodecParams(streams=64, rounds_per_block=1), []
    small, large = 32 * 1024, 288 * 1024
    for size in (small, large):
        source, packed, restored = tmp_path / f"{size}.bin", tmp_path / f"{size}.abz", tmp_path / f"{size}.out"
        source.write_bytes((real_text() * 50)[:size])
        tracemalloc.start()
        try:
            compress_file(model, identity(model), source, packed, params)
            decompress_file(model, packed, restored)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert restored.read_bytes() == source.read_bytes()
    assert peaks[1] - peaks[0] < (large - small) / 2, f"peaks {peaks}: memory must not grow with the input"
