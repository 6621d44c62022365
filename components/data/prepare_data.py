"""Pipeline step `prepare_data`: a text source -> train/val/test byte shards, eval sets, manifest (shards.py).

Splits are decided per document by a stable hash of its id (`split_of`), so adding documents never moves old
ones between splits. The step is deterministic (same documents -> byte-identical directory), idempotent (an
unchanged source whose prepared files still verify is skipped) and crash safe: everything is written into a
temp dir inside out_dir, moved into place, and manifest.json is written last; stale temp dirs are removed on
the next run, under a lock so two runs on one directory cannot interleave.

Nothing outside the project's own outputs is ever deleted: a folder we prepare carries a marker file
(`.abstractinator-prepared`, or a valid manifest of ours from before markers existed). An existing, non-empty
folder without one is somebody else's: it is refused (`DataSourceError`) unless the caller passes `force`.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from components.data.data_sources import DataSourceError, resolve_source
from components.data.eval_data import write_eval_sets
from components.data.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    SPLITS,
    FileInfo,
    Manifest,
    ManifestError,
    ShardWriter,
    compute_data_hash,
    find_problems,
    load_manifest,
    verify,
    write_manifest,
)
from components.infrastructure.file_hashes import sha256_of
from components.infrastructure.logs import get_logger
from components.infrastructure.settings import get_settings

log = get_logger(__name__)

SPLIT_MODULUS = 20  # int(sha256(doc_id)) % 20: 0 -> val, 1 -> test, else train (a twentieth each, docs/data.md)
TEMP_PREFIX = ".tmp-"
LOCK_NAME = ".prepare.lock"
MARKER_NAME = ".abstractinator-prepared"
MARKER_TEXT = "Written by `abstractinator prepare-data`: files in this folder may be replaced or removed by it.\n"
# What the evaluation commands write under <prepared>/eval before any preparation (`make eval-data`,
# `evaluate --lm-eval`): the same eval sets prepare-data writes there, so such a folder is still ours.
EVAL_SET_FOLDERS = frozenset({"canterbury", "lm_eval", "lm_eval_tasks"})


class PrepareDataParams(BaseModel):
    """Args of the prepare-data step (CLI flags, dvc params and kfp parameters alike)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("default", description="'default', file/folder/glob, s3://bucket/prefix or hf:org/name")
    out_dir: Path = Field(description="Where shards, eval sets and manifest.json go.")
    shard_bytes: int = Field(64 * 2**20, gt=0, description="Largest shard file (one document may exceed it).")
    text_column: str = Field("text", description="Text column of a Hugging Face dataset.")
    hf_config: str | None = Field(None, description="Hugging Face dataset config name.")
    hf_split: str = Field("train", description="Hugging Face split to read (we make our own splits from it).")
    include_eval_sets: bool = Field(True, description="Also extract the eval sets into out_dir/eval.")


class SplitSummary(BaseModel):
    documents: int
    bytes: int


class PrepareDataResult(BaseModel):
    out_dir: Path
    manifest_path: Path
    data_hash: str
    splits: dict[str, SplitSummary]
    skipped: bool = Field(description="True when out_dir was already up to date: nothing was written.")

    def summary(self) -> str:
        parts = ", ".join(f"{name} {s.documents} docs {s.bytes:,} B" for name, s in self.splits.items())
        state = "up to date" if self.skipped else "prepared"
        return f"{state}: {self.out_dir} ({parts}); data_hash {self.data_hash}"


def split_of(doc_id: str) -> str:
    bucket = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest(), 16) % SPLIT_MODULUS
    return "val" if bucket == 0 else "test" if bucket == 1 else "train"


def _result(out_dir: Path, manifest: Manifest, skipped: bool) -> PrepareDataResult:
    return PrepareDataResult(
        out_dir=out_dir,
        manifest_path=out_dir / MANIFEST_NAME,
        data_hash=manifest.data_hash,
        splits={  # in SPLITS order, not the manifest's sorted one
            name: SplitSummary(documents=manifest.splits[name].documents, bytes=manifest.splits[name].bytes)
            for name in SPLITS
        },
        skipped=skipped,
    )


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    with open(out_dir / LOCK_NAME, "a") as handle:  # "a": taking the lock leaves the file untouched
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        yield


def _up_to_date(out_dir: Path, fingerprint: str, params: dict) -> Manifest | None:
    """The existing manifest if it was made from this fingerprint and params and every file still verifies."""
    try:
        manifest = load_manifest(out_dir)
    except ManifestError:
        return None
    if manifest.fingerprint != fingerprint or manifest.params != params:
        return None
    problems = find_problems(out_dir, manifest)
    if problems:
        log.warning("prepared_data_damaged", out_dir=str(out_dir), problems=problems[:5], action="rebuilding")
        return None
    return manifest


def _write_all(source, params: PrepareDataParams, temp: Path) -> tuple[dict, dict[str, FileInfo]]:
    writers = {split: ShardWriter(temp, split, params.shard_bytes) for split in SPLITS}
    with tqdm(desc="writing shards", unit="B", unit_scale=True, file=sys.stderr, disable=None) as bar:
        for document in source.documents():
            writers[split_of(document.doc_id)].add(document.content)
            bar.update(len(document.content))
    splits = {split: writer.close() for split, writer in writers.items()}
    if not any(split.documents for split in splits.values()):
        raise DataSourceError(f"data source {params.source!r} yielded no documents")
    eval_sets = {}
    if params.include_eval_sets:
        for path in write_eval_sets(temp / "eval"):
            relative = path.relative_to(temp).as_posix()
            info = FileInfo(file=relative, bytes=path.stat().st_size, sha256=sha256_of(path))
            eval_sets[path.relative_to(temp / "eval").as_posix()] = info
    return splits, eval_sets


def _install(temp: Path, out_dir: Path, manifest: Manifest) -> None:
    """Moves the listed files from `temp` into out_dir, drops files of an older preparation, writes the
    manifest. The old manifest goes first: if we die midway, there is no manifest and nothing is trusted."""
    (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
    listed = {info.file for info in manifest.listed_files()}
    for relative in sorted(listed):
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        (temp / relative).replace(target)
    old_shards = [p for split in SPLITS for p in out_dir.glob(f"{split}-[0-9]*") if p.is_file()]
    old_eval = [p for p in (out_dir / "eval").rglob("*") if p.is_file()] if (out_dir / "eval").is_dir() else []
    for path in old_shards + old_eval:
        if path.relative_to(out_dir).as_posix() not in listed:
            path.unlink()
    write_manifest(out_dir, manifest)


def is_ours(out_dir: Path) -> bool:
    """True when `out_dir` is missing, empty (but for our own lock/temp files and eval sets) or was prepared by
    us."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return True
    if not out_dir.is_dir():
        return False
    if (out_dir / MARKER_NAME).is_file():
        return True
    if (out_dir / MANIFEST_NAME).is_file():
        return _manifest_source(out_dir) is not None  # a valid manifest of ours, written before markers existed
    return all(_is_own_entry(entry) for entry in out_dir.iterdir())


def _is_own_entry(entry: Path) -> bool:
    """Our lock, our temp folders, or an eval/ folder holding only the eval sets our commands write."""
    if entry.name == LOCK_NAME or entry.name.startswith(TEMP_PREFIX):
        return True
    return (
        entry.name == "eval"
        and entry.is_dir()
        and not entry.is_symlink()
        and all(sub.name in EVAL_SET_FOLDERS and sub.is_dir() for sub in entry.iterdir())
    )


def _claim(out_dir: Path, force: bool) -> None:
    """Create out_dir (or check that it is ours to write) and mark it as ours."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DataSourceError(f"{out_dir}: exists and is not a folder")
    if not is_ours(out_dir):
        if not force:
            raise DataSourceError(
                f"{out_dir}: not empty and not prepared by abstractinator; choose an empty or new folder, or pass "
                "--force to prepare data there (files named like shards and everything under eval/ get replaced)"
            )
        log.warning("preparing_into_foreign_folder", out_dir=str(out_dir), reason="--force")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / MARKER_NAME
    if not marker.is_file():
        marker.write_text(MARKER_TEXT, encoding="utf-8")


def prepare_data(params: PrepareDataParams, force: bool = False) -> PrepareDataResult:
    """Prepares `params.source` into `params.out_dir`; see the module docstring for the guarantees. `force`
    prepares into a non-empty folder that is not ours (by default refused)."""
    out_dir = Path(params.out_dir)
    # Resolved first: a source that does not exist should not leave an empty out_dir behind.
    source = resolve_source(
        params.source, text_column=params.text_column, hf_config=params.hf_config, hf_split=params.hf_split
    )
    _claim(out_dir, force)
    # out_dir is where the data lands, not what it is: leaving it out keeps manifests of copies identical.
    stored_params = params.model_dump(mode="json", exclude={"out_dir"})
    with _locked(out_dir):
        for stale in out_dir.glob(f"{TEMP_PREFIX}*"):
            log.info("removing_stale_temp_dir", path=str(stale))
            shutil.rmtree(stale, ignore_errors=True)
        fingerprint = source.fingerprint()
        manifest = _up_to_date(out_dir, fingerprint, stored_params)
        if manifest is not None:
            log.info(
                "prepare_data_skipped",
                out_dir=str(out_dir),
                reason="up to date",
                data_hash=manifest.data_hash,
            )
            return _result(out_dir, manifest, skipped=True)
        started = time.monotonic()
        temp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=out_dir))
        try:
            splits, eval_sets = _write_all(source, params, temp)
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                source=params.source,
                fingerprint=fingerprint,
                params=stored_params,
                splits=splits,
                eval_sets=eval_sets,
                data_hash=compute_data_hash(splits),
            )
            _install(temp, out_dir, manifest)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DataSourceError(f"{out_dir}: disk full while preparing data (nothing was installed)") from None
            raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    for name, split in manifest.splits.items():
        log.info(
            "split_written",
            split=name,
            documents=split.documents,
            bytes=split.bytes,
            shards=len(split.shards),
        )
    seconds = round(time.monotonic() - started, 1)
    log.info("prepare_data_done", out_dir=str(out_dir), data_hash=manifest.data_hash, seconds=seconds)
    return _result(out_dir, manifest, skipped=False)


def ensure_prepared(out_dir: Path | None = None) -> Path:
    """A prepared directory for commands given none: `out_dir` (default: the data home's default corpus dir)
    if it already holds intact prepared data of any source, else the default corpus prepared there."""
    out_dir = Path(out_dir or get_settings().default_prepared_dir)
    try:
        verify(out_dir)
        return out_dir
    except ManifestError as error:
        if (out_dir / MANIFEST_NAME).is_file() and _manifest_source(out_dir) not in (None, "default"):
            raise  # somebody else's corpus, damaged: not ours to overwrite with the default one
        log.info("preparing_default_corpus", out_dir=str(out_dir), reason=str(error))
    prepare_data(PrepareDataParams(source="default", out_dir=out_dir))
    return out_dir


def _manifest_source(out_dir: Path) -> str | None:
    try:
        return load_manifest(out_dir).source
    except ManifestError:
        return None
