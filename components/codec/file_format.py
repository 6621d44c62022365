"""The compressed file: a header that says what was coded and with which model, then range-coded blocks.

    magic  b"ABZC"                      4 bytes
    format version                      u16 little-endian (FORMAT_VERSION)
    header length                       u32 little-endian
    header                              UTF-8 JSON (CodecHeader)
    payload                             blocks, each: u32 word count, then that many u32 words (little-endian)

The header carries the original length and sha256 of the content, the payload's length and sha256 (so a
truncated or corrupted file is refused before any decoding), the model's identity (sha256 of its weights, where
it was loaded from, registry name and version when known) and the coding parameters the decoder must repeat
(window, context, windows per block, adaptation settings). Each block is one range coder's output, so memory
stays bounded by a block whatever the file size.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import BinaryIO

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

MAGIC = b"ABZC"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHI")
_WORDS = struct.Struct("<I")


class CodecError(Exception):
    """A problem the user can fix (wrong model, damaged file, bad input): one line, exit 2."""


class ModelIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weights_sha256: str
    source: str | None = None  # where it was loaded from (path, s3://, models:/...)
    registry_name: str | None = None
    registry_version: str | None = None


class AdaptSettings(BaseModel):
    """Online fine-tuning (components/codec/adaptation.py): the decoder repeats the same updates."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float
    steps_per_window: int = 1


class CodecHeader(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bytes: int
    sha256: str
    payload_bytes: int
    payload_sha256: str
    model: ModelIdentity
    window: int
    context: int
    windows_per_block: int
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
    body = header.model_dump_json(exclude_none=True).encode()
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def read_header(stream: BinaryIO, name: str) -> CodecHeader:
    prefix = stream.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[:4] != MAGIC:
        raise CodecError(f"{name}: not an abstractinator compressed file (no {MAGIC.decode()} magic)")
    _, version, length = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise CodecError(f"{name}: format version {version} is not supported (this build reads {FORMAT_VERSION})")
    body = stream.read(length)
    try:
        return CodecHeader.model_validate(json.loads(body))
    except (ValueError, ValidationError, UnicodeDecodeError):
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
