"""The codec's building blocks: quantized frequencies, the range coder's size, the header and the model identity."""

from __future__ import annotations

import io
from collections import deque

import numpy as np
import pytest
import torch

from components.codec.file_format import (
    AdaptSettings,
    CodecError,
    CodecHeader,
    ModelIdentity,
    header_bytes,
    read_header,
    weights_sha256,
)
from components.codec.range_coding import DecodingChannel, EncodingChannel
from model import build_model
from model.code_length import PRECISION_BITS, quantized_frequencies
from model.window_plan import default_context, plan_windows
from tests.codec_helpers import codec_config


def test_quantized_frequencies_are_a_full_positive_integer_table():
    rng = np.random.default_rng(0)
    logits = np.concatenate(
        [
            rng.standard_normal((50, 259)) * 3,
            rng.standard_normal((50, 259)) * 80,  # extremely peaked: the tail must still get 1 each
            np.zeros((1, 259)),
        ]
    ).astype(np.float32)
    frequencies = quantized_frequencies(logits)
    assert frequencies.dtype == np.int64 and frequencies.min() >= 1
    assert (frequencies.sum(-1) == 1 << PRECISION_BITS).all()
    assert (quantized_frequencies(logits) == frequencies).all(), "a pure function of the logits"
    assert (frequencies[-1].max() - frequencies[-1].min()) <= 1 + (1 << PRECISION_BITS) % 259, "flat stays flat"
    probabilities = torch.softmax(torch.from_numpy(logits[:50]).double(), -1).numpy()
    assert np.abs(frequencies[:50] / (1 << PRECISION_BITS) - probabilities).max() < 1e-4


def test_the_range_coder_codes_with_exactly_these_frequencies():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy((rng.standard_normal((3000, 259)) * 4).astype(np.float32))
    channel = EncodingChannel()
    probabilities = torch.softmax(logits.double(), -1).numpy()
    symbols = [int(rng.choice(259, p=p / p.sum())) for p in probabilities]
    # One request per symbol, then whole batches of rows per request: the same code either way.
    for stream_logits, symbol in zip(logits[:1000], symbols[:1000], strict=True):
        channel.intended = {0: {0: deque([symbol])}}
        channel.code(0, [0], stream_logits[None])
    for start in range(1000, 3000, 100):
        rows = list(range(100))
        channel.intended = {0: {row: deque([symbols[start + row]]) for row in rows}}
        channel.code(0, rows, logits[start : start + 100])
    words = channel.finish()
    assert channel.bits <= 32 * len(words) <= channel.bits * 1.001 + 64
    decoder = DecodingChannel(words)
    decoded = [decoder.code(0, [0], stream_logits[None])[0] for stream_logits in logits[:1000]]
    for start in range(1000, 3000, 100):
        decoded += decoder.code(0, list(range(100)), logits[start : start + 100])
    assert decoded == symbols


def sample_header(**changes) -> CodecHeader:
    header = CodecHeader(
        bytes=123,
        sha256="ab" * 32,
        payload_bytes=40,
        payload_sha256="cd" * 32,
        model=ModelIdentity(
            weights_sha256="ef" * 32,
            source="models:/abstractinator/3",
            registry_name="abstractinator",
            registry_version="3",
        ),
        window=256,
        context=32,
        streams=64,
        chunk_bytes=2,
        rounds_per_block=16,
        precision_bits=PRECISION_BITS,
        adapt=AdaptSettings(learning_rate=1e-4, steps_per_round=2),
    )
    return header.model_copy(update=changes)


def test_header_round_trips_and_damage_is_refused():
    header = sample_header()
    data = header_bytes(header)
    assert read_header(io.BytesIO(data + b"payload"), "f") == header
    assert len(data) < 320
    with pytest.raises(CodecError, match="truncated"):
        read_header(io.BytesIO(data[:30]), "f")
    with pytest.raises(CodecError, match="corrupted header"):
        read_header(io.BytesIO(data[:-3] + b"}}}"), "f")
    for position in range(6, len(data)):  # any damaged field (window, context, adapt...) is caught by the checksum
        damaged = bytearray(data)
        damaged[position] ^= 0x04
        with pytest.raises(CodecError, match="corrupted header|truncated"):
            read_header(io.BytesIO(bytes(damaged) + b"payload"), "f")


def test_version_2_headers_without_a_checksum_are_still_read():
    header = sample_header(model=ModelIdentity(weights_sha256="ef" * 32, source="/models/a.pt"), adapt=None)
    version_2 = bytearray(header_bytes(header)[:-4])  # the same header without its checksum
    del version_2[34:38]  # and without the group count (u32 after the magic, version, 2 u64 and 3 u32): one group
    version_2[4:6] = (2).to_bytes(2, "little")
    assert read_header(io.BytesIO(bytes(version_2) + b"payload"), "f") == header
    not_an_object = version_2[: -len(b'{"model":{"source":"/models/a.pt"}}') - 2] + b"\x03\x00[1]"
    with pytest.raises(CodecError, match="corrupted header"):
        read_header(io.BytesIO(bytes(not_an_object)), "f")


def test_weights_sha256_names_the_weights():
    model = build_model(codec_config())
    first = weights_sha256(model)
    assert first == weights_sha256(build_model(codec_config())), "same seed, same weights, same identity"
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert weights_sha256(model) != first


@pytest.mark.parametrize("window,context", [(16, 2), (64, 8), (128, 16), (256, 16), (1024, 16)])
def test_the_default_context_is_an_eighth_of_the_window_and_at_most_16_tokens(window, context):
    # 16 coded the demo champion's texts as small as 32 did, in 16 fewer replayed steps per window; adapting,
    # fewer windows meant fewer optimizer steps and a larger file
    assert default_context(window) == context
    assert default_context(window, adapting=True) == window // 8


@pytest.mark.parametrize("total,window,context", [(2, 4, 0), (3, 4, 1), (50, 16, 0), (50, 16, 5), (17, 16, 15)])
def test_windows_code_every_token_after_bos_once_with_the_context_before_it(total, window, context):
    plan = list(plan_windows(total, window, context))
    assert plan[0][:2] == (0, 1)
    coded = [t for _, known_end, end in plan for t in range(known_end, end)]
    assert coded == list(range(1, total))
    for (start, known_end, end), previous in zip(plan[1:], plan, strict=False):
        assert end - start <= window and known_end == previous[2] and known_end - start == min(context, known_end)
    with pytest.raises(ValueError):
        list(plan_windows(10, 8, 8))
