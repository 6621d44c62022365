"""Compress and decompress files with a model: streaming, atomic, verified.

`compress_file` reads the input twice (its sha256 and length first, for the header), then window by window
(components/codec/window_coder.py), one range coder per block of windows; `decompress_file` checks the payload
against the header before decoding anything and the content against its sha256 after. Memory is bounded by a
block and a window whatever the file size. Both write to a temporary file beside the destination and rename it
into place only when everything checked out, so a failure leaves nothing partial behind.

Determinism: one thread, fp32, CPU, eval mode, at both ends (`coding_mode`). The same model on the same kind of
CPU and torch build then computes bit-identical distributions; the content sha256 catches any other case.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from components.codec.adaptation import OnlineAdapter
from components.codec.file_format import (
    AdaptSettings,
    CodecError,
    CodecHeader,
    ModelIdentity,
    header_bytes,
    read_block,
    read_header,
    weights_sha256,
    write_block,
)
from components.codec.range_coding import DecodingChannel, EncodingChannel
from components.codec.window_coder import default_context, encode_window, plan_windows, run_window
from model.code_length import PRECISION_BITS, require_code_probabilities
from model.tokenizer import BOS_ID, EOS_ID, NUM_BYTES

CHUNK = 1 << 20


class CodecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: int | None = Field(None, description="known tokens carried into each window (default: window // 8)")
    windows_per_block: int = Field(64, ge=1, description="windows per range-coder block (memory bound)")
    adapt: AdaptSettings | None = None


class CodecSummary(BaseModel):
    bytes_in: int
    bytes_out: int
    bits_per_byte: float  # 8 * compressed size / original size (header included)
    payload_bits_per_byte: float  # the range-coded blocks only
    coded_bits: float | None = None  # sum of -log2 of the quantized probabilities the encoder coded (compress)
    seconds: float
    bytes_per_second: float


@contextmanager
def coding_mode(model):
    """One thread, eval mode, fp32 on CPU: what both ends need for identical distributions."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    model.float().cpu().eval()
    try:
        yield model
    finally:
        torch.set_num_threads(previous)


def file_digest(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


@contextmanager
def atomic_output(destination: Path):
    """A temporary file beside `destination`, renamed onto it on success and removed on any failure."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
    )
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, destination)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _progress(total: int, enabled: bool, description: str):
    from tqdm import tqdm

    # disable=None: a bar on a terminal only; never one in logs or pipes.
    return tqdm(total=total, unit="B", unit_scale=True, desc=description, disable=None if enabled else True)


def _stream_tokens(path: Path, size: int, start: int, end: int) -> list[int]:
    """Tokens [start, end) of BOS + file bytes + EOS, read from the file."""
    first, last = max(start - 1, 0), min(end - 1, size)
    with path.open("rb") as stream:
        stream.seek(first)
        data = stream.read(last - first)
    return ([BOS_ID] if start == 0 else []) + list(data) + ([EOS_ID] if end == size + 2 else [])


def _blocks(windows: Iterator, per_block: int) -> Iterator[list]:
    """Consecutive groups of per_block windows, drawn lazily (the plan of a huge file is never held)."""
    while block := list(itertools.islice(windows, per_block)):
        yield block


def compress_file(
    model, identity: ModelIdentity, source: Path, destination: Path, params: CodecParams, progress: bool = False
) -> CodecSummary:
    if not source.is_file():
        raise CodecError(f"{source}: no such file")
    try:
        require_code_probabilities(model, "compressing")
    except ValueError as error:
        raise CodecError(str(error)) from None
    window = int(model.config.sequence_length)
    context = default_context(window) if params.context is None else params.context
    if not 0 <= context < window:
        raise CodecError(f"--context must be in [0, {window}) for a window of {window} tokens (got {context})")
    started = time.perf_counter()
    model = copy.deepcopy(model) if params.adapt else model  # adapting changes a copy, never the caller's model
    size, content_sha = file_digest(source)
    windows = plan_windows(size + 2, window, context)
    payload, coded_bits = hashlib.sha256(), 0.0
    with (
        coding_mode(model),
        tempfile.TemporaryFile(dir=destination.parent if destination.parent.exists() else None) as body,
        _progress(size, progress, "compress") as bar,
    ):
        adapter = OnlineAdapter(model, params.adapt) if params.adapt else None
        for block in _blocks(windows, params.windows_per_block):
            channel = EncodingChannel()
            for start, known_end, end in block:
                tokens = _stream_tokens(source, size, start, end)
                encode_window(model, tokens, known_end - start, channel)
                if adapter:
                    adapter.update(tokens)
                bar.update(min(end, size + 1) - known_end)
            coded_bits += channel.bits
            payload.update(write_block(body, channel.finish()))
        header = CodecHeader(
            bytes=size,
            sha256=content_sha,
            payload_bytes=body.tell(),
            payload_sha256=payload.hexdigest(),
            model=identity,
            window=window,
            context=context,
            windows_per_block=params.windows_per_block,
            precision_bits=PRECISION_BITS,
            adapt=params.adapt,
        )
        with atomic_output(destination) as out:
            out.write(header_bytes(header))
            body.seek(0)
            while chunk := body.read(CHUNK):
                out.write(chunk)
    summary = _summary(size, destination.stat().st_size, header.payload_bytes, time.perf_counter() - started)
    return summary.model_copy(update={"coded_bits": coded_bits})


def _summary(original: int, compressed: int, payload: int, seconds: float) -> CodecSummary:
    return CodecSummary(
        bytes_in=original,
        bytes_out=compressed,
        bits_per_byte=8 * compressed / max(original, 1),
        payload_bits_per_byte=8 * payload / max(original, 1),
        seconds=seconds,
        bytes_per_second=original / max(seconds, 1e-9),
    )


def read_verified_header(source: Path) -> CodecHeader:
    """The header of a compressed file whose payload matches it (length and sha256), else CodecError."""
    if not source.is_file():
        raise CodecError(f"{source}: no such file")
    with source.open("rb") as stream:
        header = read_header(stream, str(source))
        digest, length = hashlib.sha256(), 0
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            length += len(chunk)
    if length != header.payload_bytes:
        state = "truncated" if length < header.payload_bytes else "has trailing data"
        raise CodecError(f"{source}: {state} ({length} payload bytes, the header says {header.payload_bytes})")
    if digest.hexdigest() != header.payload_sha256:
        raise CodecError(f"{source}: corrupted (the payload does not match its sha256)")
    return header


def check_model(model, header: CodecHeader, source: Path) -> None:
    actual = weights_sha256(model)
    if actual != header.model.weights_sha256:
        made_with = header.model.source or "another model"
        raise CodecError(
            f"{source}: made with another model ({made_with}, weights sha256 {header.model.weights_sha256[:12]}); "
            f"this one is {actual[:12]}"
        )


def decompress_file(model, source: Path, destination: Path, progress: bool = False) -> CodecSummary:
    header = read_verified_header(source)
    check_model(model, header, source)
    if header.precision_bits != PRECISION_BITS:
        raise CodecError(
            f"{source}: coded at {header.precision_bits}-bit precision, this build codes at {PRECISION_BITS}"
        )
    started = time.perf_counter()
    model = copy.deepcopy(model) if header.adapt else model
    windows = plan_windows(header.bytes + 2, header.window, header.context)
    digest, written = hashlib.sha256(), 0
    with (
        coding_mode(model),
        source.open("rb") as stream,
        atomic_output(destination) as out,
        _progress(header.bytes, progress, "decompress") as bar,
    ):
        read_header(stream, str(source))
        adapter = OnlineAdapter(model, header.adapt) if header.adapt else None
        tail = [BOS_ID]  # the stream so far, as far as the next window can look back
        for block in _blocks(windows, header.windows_per_block):
            channel = DecodingChannel(read_block(stream, str(source)))
            for start, known_end, end in block:
                known = tail[len(tail) - (known_end - start) :]
                new = run_window(model, known, end - known_end, channel)
                data = _check_tokens(new, known_end, header.bytes, source)
                out.write(data)
                digest.update(data)
                written += len(data)
                if adapter:
                    adapter.update(known + new)
                tail = (known + new)[-max(header.context, 1) :]
                bar.update(len(data))
        if written != header.bytes or digest.hexdigest() != header.sha256:
            raise CodecError(
                f"{source}: the decoded content does not match its sha256 (decoded on another kind of "
                "CPU or torch build than it was coded on?)"
            )
    return _summary(header.bytes, source.stat().st_size, header.payload_bytes, time.perf_counter() - started)


def _check_tokens(tokens: list[int], first: int, size: int, source: Path) -> bytes:
    """Bytes of decoded stream tokens [first, first + len); the last stream token must be EOS."""
    for index, token in enumerate(tokens, start=first):
        expected_eos = index == size + 1
        if (token == EOS_ID) != expected_eos or (not expected_eos and token >= NUM_BYTES):
            raise CodecError(f"{source}: decoding diverged at byte {index - 1} (not the model it was made with?)")
    return bytes(token for token in tokens if token < NUM_BYTES)
