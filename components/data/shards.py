"""The prepared-data format: flat byte shards, document offset indexes and the manifest that vouches for them.

    <dir>/train-00000.bin       uint8 [n_bytes]   documents back to back, no separators (a document never
    <dir>/train-00000.idx.npy   int64 [n_docs+1]  spans shards); document i is bin[idx[i]:idx[i+1]]
    <dir>/val-00000.bin ...     likewise for val and test (a split with no documents has no shards)
    <dir>/eval/...              held-out evaluation files (eval_data.py), when prepared
    <dir>/manifest.json         written last; lists every file with its size and sha256

Readers trust a file only if a valid manifest lists it and its size (and, when checked, sha256) match: a
crash at any point leaves either the previous complete state or a directory without a manifest. The manifest
is deterministic (sorted keys, no timestamps), so the same documents give a byte-identical directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from components.data.data_sources import DataSourceError
from components.infrastructure.atomic_files import write_text_atomic
from components.infrastructure.file_hashes import sha256_of

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")


class ManifestError(DataSourceError):
    """A prepared-data directory has no usable manifest, or its files do not match it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShardInfo(_Strict):
    file: str
    bytes: int
    documents: int
    sha256: str
    index_file: str
    index_bytes: int
    index_sha256: str


class SplitInfo(_Strict):
    documents: int = 0
    bytes: int = 0
    shards: list[ShardInfo] = []


class FileInfo(_Strict):
    file: str
    bytes: int
    sha256: str


class Manifest(_Strict):
    format_version: int
    source: str
    fingerprint: str
    params: dict[str, Any]
    splits: dict[str, SplitInfo]
    eval_sets: dict[str, FileInfo] = {}
    data_hash: str

    def listed_files(self) -> list[FileInfo]:
        """Every file the manifest vouches for (relative paths), shards, indexes and eval sets alike."""
        files = []
        for split in self.splits.values():
            for shard in split.shards:
                files.append(FileInfo(file=shard.file, bytes=shard.bytes, sha256=shard.sha256))
                index = FileInfo(file=shard.index_file, bytes=shard.index_bytes, sha256=shard.index_sha256)
                files.append(index)
        return files + list(self.eval_sets.values())


def compute_data_hash(splits: dict[str, SplitInfo]) -> str:
    """The data's identity for MLflow tags and skip checks: sha256 over each split's shard and index hashes.
    File names and eval sets are left out: the same documents in the same splits give the same hash."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        for shard in splits[name].shards:
            digest.update(f"{name}\t{shard.sha256}\t{shard.index_sha256}\n".encode())
    return digest.hexdigest()


class ShardWriter:
    """Appends one split's documents to `<split>-NNNNN.bin` files in `directory`, starting a new shard when
    the next document would push the current one past `shard_bytes` (a bigger document gets its own shard)."""

    def __init__(self, directory: Path, split: str, shard_bytes: int):
        self.directory, self.split, self.shard_bytes = Path(directory), split, shard_bytes
        self.shards: list[ShardInfo] = []
        self._handle = None

    def add(self, content: bytes) -> None:
        if self._handle is not None and self._offsets[-1] + len(content) > self.shard_bytes:
            self._finish_shard()
        if self._handle is None:
            name = f"{self.split}-{len(self.shards):05d}"
            self._name, self._handle = name, open(self.directory / f"{name}.bin", "wb")
            self._digest, self._offsets = hashlib.sha256(), [0]
        self._handle.write(content)
        self._digest.update(content)
        self._offsets.append(self._offsets[-1] + len(content))

    def _finish_shard(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        self._handle = None
        index_path = self.directory / f"{self._name}.idx.npy"
        np.save(index_path, np.asarray(self._offsets, dtype=np.int64))
        self.shards.append(
            ShardInfo(
                file=f"{self._name}.bin",
                bytes=self._offsets[-1],
                documents=len(self._offsets) - 1,
                sha256=self._digest.hexdigest(),
                index_file=index_path.name,
                index_bytes=index_path.stat().st_size,
                index_sha256=sha256_of(index_path),
            )
        )

    def close(self) -> SplitInfo:
        if self._handle is not None:
            self._finish_shard()
        return SplitInfo(
            documents=sum(s.documents for s in self.shards),
            bytes=sum(s.bytes for s in self.shards),
            shards=self.shards,
        )


def manifest_json(manifest: Manifest) -> str:
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Atomically (temp file + fsync + rename): a reader sees the old manifest, the new one, or none."""
    return write_text_atomic(Path(directory) / MANIFEST_NAME, manifest_json(manifest))


def load_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{directory}: no {MANIFEST_NAME} (not prepared, or preparation did not finish); "
            "run `abstractinator prepare-data`"
        )
    try:
        manifest = Manifest.model_validate_json(path.read_bytes())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ManifestError(f"{path}: corrupt manifest ({where}: {first['msg']}); prepare it again") from None
    if manifest.format_version != FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format version {manifest.format_version}, expected {FORMAT_VERSION}; prepare it again"
        )
    return manifest


def find_problems(directory: Path, manifest: Manifest, check_hashes: bool = True) -> list[str]:
    """Listed files missing or differing in size (or sha256) from the manifest; empty when all is well."""
    problems = []
    for info in manifest.listed_files():
        path = Path(directory) / info.file
        if not path.is_file():
            problems.append(f"{info.file}: missing")
        elif path.stat().st_size != info.bytes:
            problems.append(f"{info.file}: {path.stat().st_size} bytes, manifest says {info.bytes}")
        elif check_hashes and sha256_of(path) != info.sha256:
            problems.append(f"{info.file}: sha256 differs from the manifest")
    return problems


def verify(directory: Path, check_hashes: bool = True) -> Manifest:
    """The manifest of `directory` once every listed file is present and intact; ManifestError otherwise."""
    manifest = load_manifest(directory)
    problems = find_problems(directory, manifest, check_hashes)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ManifestError(f"{directory}: prepared data damaged: {'; '.join(problems[:5])}{more}")
    return manifest


def open_split(
    directory: Path, split: str, manifest: Manifest | None = None, check_hashes: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's shards as (bytes: uint8 memmap [n_bytes], offsets: int64 [n_docs+1]) pairs, after checking
    them against the manifest; the byte arrays are memory-mapped, never read into memory whole."""
    directory = Path(directory)
    manifest = manifest or load_manifest(directory)
    if split not in manifest.splits:
        raise ManifestError(f"{directory}: no split {split!r} (has {', '.join(sorted(manifest.splits))})")
    shards = manifest.splits[split].shards
    # Check just the files this split reads.
    only_split = manifest.model_copy(update={"eval_sets": {}, "splits": {split: manifest.splits[split]}})
    problems = find_problems(directory, only_split, check_hashes)
    if problems:
        raise ManifestError(f"{directory}: split {split!r} damaged: {'; '.join(problems[:5])}")
    opened = []
    for shard in shards:
        empty = np.zeros(0, dtype=np.uint8)  # mmap cannot map an empty file
        data = np.memmap(directory / shard.file, dtype=np.uint8, mode="r") if shard.bytes else empty
        offsets = np.load(directory / shard.index_file)
        if offsets.shape != (shard.documents + 1,) or offsets[-1] != shard.bytes:
            raise ManifestError(f"{directory / shard.index_file}: does not index {shard.file}")
        opened.append((data, offsets))
    return opened
