"""Long codec runs: whole Canterbury texts with a trained tiny model, static and adaptive, and a multi-megabyte
round trip in bounded memory. The codec codes its streams side by side (docs/codec.md, "Speed"), so each takes
from seconds to a few minutes on one thread."""

from __future__ import annotations

import pytest

from components.codec.file_format import AdaptSettings
from components.codec.files import CodecParams
from tests.codec_helpers import round_trip, trained_model
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
