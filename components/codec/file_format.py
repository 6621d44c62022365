"""The compressed file: a header that says what was coded and with which model, then range-coded blocks.

    magic  b"ABZC"                      4 bytes
    format version                      u16 (FORMAT_VERSION)
    fixed fields                        u64 bytes, u64 payload bytes, u32 window, u32 context, u32 streams,
                                        u32 groups (version 4), u64 chunk bytes, u32 rounds per block, u8
                                        precision bits, then sha256 of the content, of the payload and of the
                                        model's weights (32 bytes each)
    details                             u16 length + UTF-8 JSON: model source, registry name/version, adapt
    header checksum                     u32 CRC-32 of everything above (versions 3 and 4)
    payload                             blocks; each block is one segment per stream group, in group order,
                                        each segment: u32 word count, then that many u32 words

All integers little-endian. The header carries the original length and sha256 of the content, the payload's
length and sha256 (so a truncated or corrupted file is refused before any decoding), the model's identity
(sha256 of its weights, where it was loaded from, registry name and version when known) and the coding
parameters the decoder must repeat (window, context, the chunk layout, rounds per block, adaptation settings):
about 150 bytes plus the model's source. The content is cut into `streams` chunks of `chunk bytes` (the last
one shorter), coded side by side (components/codec/files.py). The streams form `groups` stream groups
(components/codec/stream_groups.py: contiguous, sizes differing by at most one), each an independent lockstep
batch with its own range coder, so that the groups can be coded in parallel; a round codes one window of every
stream of a group, and a block holds, for `rounds per block` rounds, each group's range coder output (an empty
segment for a group that has no round left). Memory stays bounded by a block whatever the file size. The file
depends on the group count, never on how many worker processes coded it.

The header checksum makes a damaged header field (a window, a context, the adaptation settings) a refusal before
any decoding instead of a decoding that diverges, perhaps an hour later. Version 2 (the same header without the
checksum) and version 3 (the same header without the group count) are still read: their payload is the
one-group case of version 4, byte for byte. Version 1 (one stream, windows per block) is refused: its files
decode only with the build that wrote them.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import BinaryIO

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.errors import UserError

MAGIC = b"ABZC"
FORMAT_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)  # 2: without the checksum; 2 and 3: without the group count (one group)
_PREFIX = struct.Struct("<4sH")
_FIXED = struct.Struct("<QQIIIIQIB32s32s32sH")
_FIXED_ONE_GROUP = struct.Struct("<QQIIIQIB32s32s32sH")  # versions 2 and 3
_WORDS = struct.Struct("<I")
_CHECKSUM = struct.Struct("<I")
MAX_ADAPT_LR = 0.1  # 100x the default; far past where adapting helps (docs/benchmarks.md)
MAX_ADAPT_STEPS = 1000


class CodecError(UserError):
    """A problem the user can fix (wrong model, damaged file, bad input): one line, exit 2."""


class ModelIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights_sha256: str
    source: str | None = None  # where it was loaded from: models:/..., s3://, or a checkpoint's file name
    registry_name: str | None = None
    registry_version: str | None = None


class AdaptSettings(BaseModel):
    """Online fine-tuning (components/codec/adaptation.py): the decoder repeats the same updates."""

    model_config = ConfigDict(extra="forbid")

    # The best measured on the demo model (docs/benchmarks.md): 2e-3 codes worse, fewer steps adapt less. Bounded
    # so that a typo (1e6, inf) is refused up front rather than diverging into distributions that cannot be coded.
    learning_rate: float = Field(1e-3, gt=0, le=MAX_ADAPT_LR, allow_inf_nan=False)
    # optimizer steps after each round, on the round's windows
    steps_per_round: int = Field(4, ge=1, le=MAX_ADAPT_STEPS)


class CodecHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    sha256: str
    payload_bytes: int
    payload_sha256: str
    model: ModelIdentity
    window: int
    context: int
    streams: int = Field(ge=1)  # chunks coded side by side
    groups: int = Field(1, ge=1)  # stream groups, each its own lockstep batch and range coder (version 4)
    chunk_bytes: int = Field(ge=1)  # bytes of each chunk (the last one: what is left)
    rounds_per_block: int = Field(ge=1)
    precision_bits: int
    adapt: AdaptSettings | None = None


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order: the model's identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        array = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)}\n".encode())
        digest.update(array.view(torch.uint8).numpy().tobytes() if array.numel() else b"")
    return digest.hexdigest()


def header_bytes(header: CodecHeader) -> bytes:
    details = {"model": header.model.model_dump(exclude={"weights_sha256"}, exclude_none=True)}
    if header.adapt is not None:
        details["adapt"] = header.adapt.model_dump()
    body = json.dumps(details, separators=(",", ":")).encode()
    fixed = _FIXED.pack(
        header.bytes,
        header.payload_bytes,
        header.window,
        header.context,
        header.streams,
        header.groups,
        header.chunk_bytes,
        header.rounds_per_block,
        header.precision_bits,
        bytes.fromhex(header.sha256),
        bytes.fromhex(header.payload_sha256),
        bytes.fromhex(header.model.weights_sha256),
        len(body),
    )
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION) + fixed + body
    return head + _CHECKSUM.pack(zlib.crc32(head))


def read_header(stream: BinaryIO, name: str) -> CodecHeader:
    prefix = stream.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[:4] != MAGIC:
        raise CodecError(f"{name}: not an abstractinator compressed file (no {MAGIC.decode()} magic)")
    _, version = _PREFIX.unpack(prefix)
    if version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise CodecError(f"{name}: format version {version} is not supported (this build reads {readable})")
    layout = _FIXED if version >= 4 else _FIXED_ONE_GROUP
    fixed = stream.read(layout.size)
    if len(fixed) < layout.size:
        raise CodecError(f"{name}: truncated (the header is cut short)")
    fields = list(layout.unpack(fixed))
    if version < 4:
        fields.insert(5, 1)  # one group: the whole payload is one lockstep batch's, as version 4 codes one group
    (size, payload, window, context, streams, groups, chunk, per_block, precision, content, payload_sha, weights) = (
        fields[:-1]
    )
    length = fields[-1]
    body = stream.read(length)
    checksum = stream.read(_CHECKSUM.size) if version >= 3 else b""
    if len(body) < length or len(checksum) < (_CHECKSUM.size if version >= 3 else 0):
        raise CodecError(f"{name}: truncated (the header is cut short)")
    if checksum and _CHECKSUM.unpack(checksum)[0] != zlib.crc32(prefix + fixed + body):
        raise CodecError(f"{name}: corrupted header (its checksum does not match)")
    try:
        details = json.loads(body)
        if not isinstance(details, dict):
            raise ValueError("the details are not a JSON object")
        return CodecHeader(
            bytes=size,
            sha256=content.hex(),
            payload_bytes=payload,
            payload_sha256=payload_sha.hex(),
            model=ModelIdentity(weights_sha256=weights.hex(), **details.get("model", {})),
            window=window,
            context=context,
            streams=streams,
            groups=groups,
            chunk_bytes=chunk,
            rounds_per_block=per_block,
            precision_bits=precision,
            adapt=AdaptSettings(**details["adapt"]) if details.get("adapt") else None,
        )
    except (ValueError, TypeError, ValidationError, UnicodeDecodeError):
        raise CodecError(f"{name}: corrupted header") from None


def write_block(stream: BinaryIO, words: np.ndarray) -> bytes:
    """Write one block; returns its bytes (the caller hashes them)."""
    data = _WORDS.pack(len(words)) + np.asarray(words, dtype="<u4").tobytes()
    stream.write(data)
    return data


def read_block(stream: BinaryIO, name: str) -> np.ndarray:
    prefix = stream.read(_WORDS.size)
    if len(prefix) < _WORDS.size:
        raise CodecError(f"{name}: truncated (a block is missing)")
    (count,) = _WORDS.unpack(prefix)
    data = stream.read(4 * count)
    if len(data) < 4 * count:
        raise CodecError(f"{name}: truncated (a block is cut short)")
    return np.frombuffer(data, dtype="<u4").astype(np.uint32)
