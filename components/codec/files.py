"""Compress and decompress files with a model: streaming, atomic, verified.

Streams: the content is cut into up to `streams` chunks (`chunk_layout`), each coded as the evaluation codes a
file (BOS + bytes + EOS in context-carrying windows, components/codec/window_coder.py), all of them side by side:
round r codes window r of every stream that has one, the streams' step-by-step decoders running in lockstep as
one batch (model/lockstep_decoding.py). That is what makes coding fast: one model call per position computes
every stream. Context carries across windows inside a stream; a chunk starts cold, which costs about one window
boundary's bits. One range coder per block of rounds.

`compress_file` reads the input once, into a snapshot hashed on the way (components/codec/endpoints.py), and codes
that snapshot: the header's sha256 describes exactly the bytes coded, whatever happens to the file meanwhile; with
`verify` it decodes the result before publishing it. `decompress_file` checks the payload against the header before
decoding anything, writes each stream's bytes at its chunk's offset, and checks the content against its sha256 after.
Apart from the snapshots (in memory up to 64 MB, a private temporary file beyond), memory is bounded by a block and
a round whatever the file size. Both write to a temporary file beside the destination (or hold the bytes for
standard output) and publish only when everything checked out, so a failure leaves nothing partial behind.

Determinism: one thread, fp32, CPU, eval mode, at both ends (`coding_mode`). The same model on the same kind of
CPU and torch build then computes bit-identical distributions; the content sha256 catches any other case.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from components.codec.adaptation import OnlineAdapter
from components.codec.endpoints import Snapshot, is_stdio, open_output, snapshot_input
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
from components.codec.window_coder import encode_round, run_round
from components.infrastructure.file_hashes import sha256_of
from model.code_length import PRECISION_BITS, require_code_probabilities
from model.tokenizer import BOS_ID, EOS_ID, NUM_BYTES
from model.window_plan import default_context, plan_windows

CHUNK = 1 << 20


class CodecParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: int | None = Field(None, description="known tokens carried into each window (default: window // 8)")
    streams: int = Field(64, ge=1, description="chunks coded side by side (at most; small files get fewer)")
    chunk_bytes: int | None = Field(None, ge=1, description="bytes per chunk (default: from streams)")
    rounds_per_block: int = Field(16, ge=1, description="rounds (one window of every stream) per range-coder block")
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


def _progress(total: int, enabled: bool, description: str):
    from tqdm import tqdm

    # disable=None: a bar on a terminal only; never one in logs or pipes.
    return tqdm(total=total, unit="B", unit_scale=True, desc=description, disable=None if enabled else True)


def chunk_layout(size: int, streams: int, window: int, chunk_bytes: int | None = None) -> tuple[int, int]:
    """(streams, chunk bytes) for `size` bytes: at most `streams` chunks, none shorter than a window (a chunk
    starts cold, so tiny chunks would cost bits for little speed), unless chunk_bytes says otherwise."""
    chunk = chunk_bytes or max(-(-size // streams), window, 1)
    return max(1, -(-size // chunk)), chunk


def _chunks(size: int, streams: int, chunk: int) -> list[tuple[int, int]]:
    """(offset, length) of each stream's chunk."""
    return [(index * chunk, min(chunk, size - index * chunk)) for index in range(streams)]


def _stream_tokens(content: BinaryIO, offset: int, length: int, start: int, end: int) -> list[int]:
    """Tokens [start, end) of the stream BOS + the chunk's bytes + EOS, read from the input's snapshot."""
    first, last = max(start - 1, 0), min(end - 1, length)
    content.seek(offset + first)
    data = content.read(last - first)
    return ([BOS_ID] if start == 0 else []) + list(data) + ([EOS_ID] if end == length + 2 else [])


def _rounds(chunks: list[tuple[int, int]], window: int, context: int) -> Iterator[list[tuple[int, tuple]]]:
    """Each round: (stream, (start, known_end, end)) of the next window of every stream that has one. Each
    stream's plan is drawn lazily (the plan of a huge file is never held)."""
    plans = [plan_windows(length + 2, window, context) for _, length in chunks]
    while round_ := [(stream, w) for stream, plan in enumerate(plans) if (w := next(plan, None)) is not None]:
        yield round_


def compress_file(
    model,
    identity: ModelIdentity,
    source: Path | str,
    destination: Path | str,
    params: CodecParams,
    progress: bool = False,
    verify: bool = False,
) -> CodecSummary:
    """Code `source` (`-`: standard input) into `destination` (`-`: standard output). verify: decode the result
    here before it is published, so that success means it decompresses on this machine."""
    try:
        require_code_probabilities(model, "compressing")
    except ValueError as error:
        raise CodecError(str(error)) from None
    window = int(model.exp_config.data.sequence_length)
    context = default_context(window) if params.context is None else params.context
    if not 0 <= context < window:
        raise CodecError(f"--context must be in [0, {window}) for a window of {window} tokens (got {context})")
    started = time.perf_counter()
    coder = copy.deepcopy(model) if params.adapt else model  # adapting changes a copy, never the caller's model
    beside = None if is_stdio(destination) or not Path(destination).parent.exists() else Path(destination).parent
    with snapshot_input(source) as content:  # read once: the bytes hashed are the bytes coded
        streams, chunk = chunk_layout(content.size, params.streams, window, params.chunk_bytes)
        chunks = _chunks(content.size, streams, chunk)
        payload, coded_bits = hashlib.sha256(), 0.0
        with (
            coding_mode(coder),
            tempfile.TemporaryFile(dir=beside) as body,
            _progress(content.size, progress, "compress") as bar,
        ):
            adapter = OnlineAdapter(coder, params.adapt) if params.adapt else None
            channel = EncodingChannel()
            for index, round_ in enumerate(_rounds(chunks, window, context)):
                if index and index % params.rounds_per_block == 0:
                    coded_bits += channel.bits
                    payload.update(write_block(body, channel.finish()))
                    channel.bits = 0.0
                windows = [_stream_tokens(content.handle, *chunks[s], start, end) for s, (start, _, end) in round_]
                try:
                    encode_round(coder, windows, [known_end - start for _, (start, known_end, _) in round_], channel)
                except ValueError as error:  # constriction: "Probability distribution not normalizable"
                    if adapter is None:
                        raise
                    raise CodecError(
                        f"{content.name}: --adapt diverged at round {index} ({error}); use a lower --adapt-lr"
                    ) from None
                if adapter:
                    adapter.update(windows)
                bar.update(sum(min(end, chunks[s][1] + 1) - known_end for s, (_, known_end, end) in round_))
            coded_bits += channel.bits
            payload.update(write_block(body, channel.finish()))
            header = CodecHeader(
                bytes=content.size,
                sha256=content.sha256,
                payload_bytes=body.tell(),
                payload_sha256=payload.hexdigest(),
                model=identity,
                window=window,
                context=context,
                streams=streams,
                chunk_bytes=chunk,
                rounds_per_block=params.rounds_per_block,
                precision_bits=PRECISION_BITS,
                adapt=params.adapt,
            )
            prefix = header_bytes(header)
            with open_output(destination, readable=verify) as out:
                out.write(prefix)
                body.seek(0)
                while data := body.read(CHUNK):
                    out.write(data)
                if verify:
                    _verify(model, out, content.name)
    summary = _summary(
        content.size, len(prefix) + header.payload_bytes, header.payload_bytes, time.perf_counter() - started
    )
    return summary.model_copy(update={"coded_bits": coded_bits})


def _verify(model, packed: BinaryIO, name: str) -> None:
    """Decode what was just written (the caller's model, as decompress would load it) and check its content."""
    packed.flush()
    packed.seek(0)
    header = read_header(packed, name)
    with coding_mode(model), tempfile.TemporaryFile() as scratch:
        try:
            _decode(model, header, packed, scratch, name, _progress(0, False, ""))
        except CodecError:
            raise CodecError(
                f"{name}: the compressed file does not decompress on this machine (verification failed); "
                "nothing written"
            ) from None


def _summary(original: int, compressed: int, payload: int, seconds: float) -> CodecSummary:
    return CodecSummary(
        bytes_in=original,
        bytes_out=compressed,
        bits_per_byte=8 * compressed / max(original, 1),
        payload_bits_per_byte=8 * payload / max(original, 1),
        seconds=seconds,
        bytes_per_second=original / max(seconds, 1e-9),
    )


def read_verified_header(packed: BinaryIO, name: str) -> CodecHeader:
    """The header of a compressed file whose payload matches it (length and sha256), else CodecError. The
    handle is left at the start of the file."""
    packed.seek(0)
    header = read_header(packed, name)
    digest, length = hashlib.sha256(), 0
    while chunk := packed.read(CHUNK):
        digest.update(chunk)
        length += len(chunk)
    packed.seek(0)
    if length != header.payload_bytes:
        state = "truncated" if length < header.payload_bytes else "has trailing data"
        raise CodecError(f"{name}: {state} ({length} payload bytes, the header says {header.payload_bytes})")
    if digest.hexdigest() != header.payload_sha256:
        raise CodecError(f"{name}: corrupted (the payload does not match its sha256)")
    return header


def check_model(model, header: CodecHeader, name: str) -> None:
    actual = weights_sha256(model)
    if actual != header.model.weights_sha256:
        made_with = header.model.source or "another model"
        raise CodecError(
            f"{name}: made with another model ({made_with}, weights sha256 {header.model.weights_sha256[:12]}); "
            f"this one is {actual[:12]}"
        )


def decompress_file(model, source: Path | str, destination: Path | str, progress: bool = False) -> CodecSummary:
    """Restore `source` (`-`: standard input) into `destination` (`-`: standard output)."""
    with snapshot_input(source) as packed:
        header = read_verified_header(packed.handle, packed.name)
        return decompress_snapshot(model, header, packed, destination, progress)


def decompress_snapshot(model, header: CodecHeader, packed: Snapshot, destination, progress: bool) -> CodecSummary:
    """Decode a verified compressed file's snapshot (`read_verified_header`) into `destination`."""
    check_model(model, header, packed.name)
    if header.precision_bits != PRECISION_BITS:
        raise CodecError(
            f"{packed.name}: coded at {header.precision_bits}-bit precision, this build codes at {PRECISION_BITS}"
        )
    layout = chunk_layout(header.bytes, header.streams, header.window, header.chunk_bytes)
    if layout != (header.streams, header.chunk_bytes) or not 0 <= header.context < header.window:
        raise CodecError(f"{packed.name}: corrupted header (inconsistent chunk layout or window)")
    started = time.perf_counter()
    packed.handle.seek(0)
    read_header(packed.handle, packed.name)
    with (
        coding_mode(model),
        open_output(destination, readable=True) as out,
        _progress(header.bytes, progress, "decompress") as bar,
    ):
        _decode(model, header, packed.handle, out, packed.name, bar)
    return _summary(header.bytes, packed.size, header.payload_bytes, time.perf_counter() - started)


def _decode(model, header: CodecHeader, stream: BinaryIO, out: BinaryIO, name: str, bar) -> None:
    """Decode the payload at `stream`'s position into `out` (seekable, readable), each stream's bytes at its
    chunk's offset, then check the content's length and sha256. Any damage is a CodecError."""
    model = copy.deepcopy(model) if header.adapt else model
    chunks = _chunks(header.bytes, header.streams, header.chunk_bytes)
    tails = [[BOS_ID] for _ in chunks]  # each stream so far, as far as its next window can look back
    written = 0
    adapter = OnlineAdapter(model, header.adapt) if header.adapt else None
    for index, round_ in enumerate(_rounds(chunks, header.window, header.context)):
        if index % header.rounds_per_block == 0:
            channel = DecodingChannel(read_block(stream, name))
        knowns = [tails[s][len(tails[s]) - (known_end - start) :] for s, (start, known_end, _) in round_]
        try:
            news = run_round(model, knowns, [end - known_end for _, (_, known_end, end) in round_], channel)
        except (AssertionError, ValueError):
            # A payload forged to pass its sha256 (and the header's checksum) makes constriction's decoder assert
            # ("Tried to decode from compressed data that is invalid for the employed entropy model"), or an
            # adaptation on garbage diverge ("Probability distribution not normalizable").
            raise CodecError(f"{name}: decoding failed in round {index} (a damaged or forged payload?)") from None
        for (stream_index, (_, known_end, _)), known, new in zip(round_, knowns, news, strict=True):
            offset, length = chunks[stream_index]
            data = _check_tokens(new, known_end, length, offset, name)
            out.seek(offset + known_end - 1)
            out.write(data)
            written += len(data)
            tails[stream_index] = (known + new)[-max(header.context, 1) :]
            bar.update(len(data))
        if adapter:
            adapter.update([known + new for known, new in zip(knowns, news, strict=True)])
    out.flush()
    if written != header.bytes or sha256_of(out) != header.sha256:
        raise CodecError(
            f"{name}: the decoded content does not match its sha256 (decoded with the same weights under "
            "another configuration, or on another kind of CPU or torch build than it was coded on?)"
        )


def _check_tokens(tokens: list[int], first: int, length: int, offset: int, name: str) -> bytes:
    """Bytes of a chunk's decoded stream tokens [first, first + len); the chunk's last token must be EOS."""
    for index, token in enumerate(tokens, start=first):
        expected_eos = index == length + 1
        if (token == EOS_ID) != expected_eos or (not expected_eos and token >= NUM_BYTES):
            raise CodecError(
                f"{name}: decoding diverged at byte {offset + index - 1} (not the model it was made with?)"
            )
    return bytes(token for token in tokens if token < NUM_BYTES)
