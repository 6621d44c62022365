"""Stream groups coded in parallel (components/codec/stream_groups.py, group_workers.py): the file depends on the
group count in its header, never on how many worker processes coded it or decode it, and files written before
groups existed (format version 3, tests/data/codec_v3_*.abz, made by the build before them) still decode."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import torch

from components.codec.file_format import AdaptSettings, CodecError, read_header
from components.codec.files import CodecParams, compress_file, decompress_file
from components.codec.stream_groups import group_layout
from model import build_model
from tests.codec_helpers import codec_config, identity
from tests.model_helpers import real_text

pytestmark = pytest.mark.torch_single_thread  # tiny models: one thread (tests/conftest.py)

DATA = Path(__file__).parent / "data"


def seeded_model():
    """The untrained tiny model of seed 0 (the version-3 files were made with it)."""
    torch.manual_seed(0)
    return build_model(codec_config()).eval()


@pytest.mark.parametrize("adapt", [None, AdaptSettings(steps_per_round=1)], ids=["static", "adaptive"])
def test_one_and_two_workers_write_the_same_file_and_read_each_others(adapt, tmp_path):
    """Three groups over two workers: worker 0 codes groups 0 and 2, so a layout or a state that followed the
    workers (or a worker computing on two threads, which the workers refuse) would show here."""
    model = seeded_model()
    text = real_text()[:1200]
    source = tmp_path / "in.txt"
    source.write_bytes(text)
    params = CodecParams(context=8, chunk_bytes=160, groups=3, rounds_per_block=2, adapt=adapt)
    packed = {}
    for workers in (1, 2):
        packed[workers] = tmp_path / f"by{workers}.abz"
        summary = compress_file(model, identity(model), source, packed[workers], params, workers=workers)
        assert (summary.groups, summary.workers) == (3, workers)
    assert packed[1].read_bytes() == packed[2].read_bytes()
    assert read_header(packed[1].open("rb"), "f").groups == 3
    for workers in (1, 2):
        restored = tmp_path / f"back{workers}.txt"
        decompress_file(model, packed[3 - workers], restored, workers=workers)
        assert restored.read_bytes() == text


def test_more_groups_than_streams_is_one_group_per_stream():
    assert group_layout(3, 8) == [range(0, 1), range(1, 2), range(2, 3)]
    layout = group_layout(64, 3)
    assert [len(group) for group in layout] == [21, 21, 22]
    assert [stream for group in layout for stream in group] == list(range(64))


@pytest.mark.parametrize("name", ["static", "adaptive"])
def test_version_3_files_still_decode(name, tmp_path):
    """Made by the build before stream groups (commit 4d7fd85) from the first 600 bytes of the test text, with
    the untrained tiny model of seed 0 (chunks of 150 bytes, context 8, two rounds per block; adaptive: one step
    per round)."""
    model = seeded_model()
    packed = DATA / f"codec_v3_{name}.abz"
    assert packed.read_bytes()[4:6] == (3).to_bytes(2, "little")
    for workers in (1, 2):
        restored = tmp_path / f"restored{workers}.txt"
        decompress_file(model, packed, restored, workers=workers)
        assert restored.read_bytes() == real_text()[:600]


def test_a_header_with_more_groups_than_streams_is_refused(tmp_path):
    model = seeded_model()
    source, packed = tmp_path / "in.txt", tmp_path / "in.abz"
    source.write_bytes(real_text()[:300])
    compress_file(model, identity(model), source, packed, CodecParams(context=8, chunk_bytes=150, groups=2))
    data = bytearray(packed.read_bytes())
    assert int.from_bytes(data[34:38], "little") == 2  # the group count (u32 after 2 u64 and 3 u32)
    data[34:38] = (3).to_bytes(4, "little")
    header_end = data.index(b"}}") + 2  # the details' JSON, then the CRC-32 of everything before it
    data[header_end : header_end + 4] = zlib.crc32(bytes(data[:header_end])).to_bytes(4, "little")
    packed.write_bytes(bytes(data))
    with pytest.raises(CodecError, match="corrupted header"):
        decompress_file(model, packed, tmp_path / "out.txt")
