"""Training checkpoints: written atomically, pruned to the last N, found again through a `latest` pointer.

A checkpoint is a plain dict of tensors and JSON-like data (model, optimizer, scheduler, RNG states, step, epoch,
data-loader position, config, git commit, data hash), so it loads with `torch.load(weights_only=True)`.

Where it goes (`checkpoint_dir`): a local folder, written as temp file + fsync + rename; or `s3://bucket/prefix`,
written as one upload of a complete local file, so readers never see half a checkpoint. After the file, the
`latest` pointer (a small text object naming it) is replaced; then checkpoints beyond the newest N are removed.

A process killed mid-write leaves a hidden temp file (`.checkpoint_stepN.pt.XXXX`) or a staging folder in the
system temp dir named with its pid; `remove_interrupted_writes` (called when training starts) deletes both, and
aborts the unfinished multipart uploads under an S3 prefix. `check_writable` proves, before the first step, that
a checkpoint can be written (an S3 prefix: a small object written and removed).
A full disk is reported as "disk full", never as torch's `[enforce fail at inline_container.cc:672] unexpected pos`:
torch.save turns the file's OSError into a RuntimeError whose text varies by version, so the errno is taken from
the write itself (`_ErrnoKeepingWriter`), or from the exception chain, or, failing both, from a free-space check.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from components.infrastructure.atomic_files import atomic_write, write_text_atomic
from components.infrastructure.storage import StorageError, is_s3, parse_s3_uri
from configs.errors import UserError, torch_load_failure

CHECKPOINT_FORMAT = "abstractinator-checkpoint"
CHECKPOINT_VERSION = 1
LATEST_POINTER = "latest"
_NAME = re.compile(r"^checkpoint_step(\d+)\.pt$")


class CheckpointError(UserError):
    """A checkpoint that cannot be read or used; the message names the file."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint_step{step}.pt"


def step_of(name: str) -> int | None:
    match = _NAME.match(Path(name).name)
    return int(match.group(1)) if match else None


_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# Seconds one checkpoint upload may take over its retries: an S3 outage slows each checkpoint step by about this
# much at most, not the ~40 s of every attempt with botocore's retries.
UPLOAD_BUDGET_S = 20.0
_LOW_SPACE_BYTES = 64 * 2**20  # below this, a failed write is taken to be a full disk


def staging_dir(kind: str) -> tempfile.TemporaryDirectory:
    """A temp folder named with our pid (`abstractinator-<kind>-<pid>-XXXX`), so a later start can tell that its
    owner was killed and remove it."""
    return tempfile.TemporaryDirectory(prefix=f"abstractinator-{kind}-{os.getpid()}-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _remove_orphaned_staging() -> int:
    """Removes staging folders (see `staging_dir`) whose process is gone; returns the bytes freed."""
    freed = 0
    for folder in Path(tempfile.gettempdir()).glob("abstractinator-*-*-*"):
        parts = folder.name.split("-")
        if parts[1] not in ("train", "ckpt") or not parts[2].isdigit() or not folder.is_dir():
            continue
        if not _pid_alive(int(parts[2])):
            freed += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            shutil.rmtree(folder, ignore_errors=True)
    return freed


class _ErrnoKeepingWriter:
    """The file handle torch.save writes to, keeping the OSError of a failed write: torch reports it as a
    RuntimeError ("unexpected pos" here) whose text says nothing of the cause."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.failure: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.failure = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def _os_error_in_chain(error: BaseException | None) -> OSError | None:
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def _is_disk_full(error: BaseException, folder: Path) -> bool:
    cause = _os_error_in_chain(error)
    if cause is not None:
        return cause.errno in _DISK_FULL_ERRNOS
    # A RuntimeError of torch.save with no OSError behind it: a nearly full disk explains it.
    if isinstance(error, RuntimeError):
        try:
            return shutil.disk_usage(folder).free < _LOW_SPACE_BYTES
        except OSError:
            return False
    return False


def _write_failure(error: BaseException, path: Path, staged_for: str | None = None) -> CheckpointError | None:
    """A one-line CheckpointError for a write that failed for want of space or permission; None for others.
    `staged_for`: the checkpoint's own URI when `path` is only a local staging copy of it (an S3 upload), which
    the message names instead of our temporary folder."""
    full = _is_disk_full(error, path.parent)
    error = _os_error_in_chain(error)
    denied = error is not None and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    if staged_for is not None and (full or denied):
        reason = "disk full" if full else os.strerror(error.errno).lower()
        return CheckpointError(f"{staged_for}: cannot stage it on the local disk first ({reason}; TMPDIR sets where)")
    if full:
        return CheckpointError(f"{path.parent}: disk full while writing {path.name}")
    if denied:
        return CheckpointError(f"{path.parent}: cannot write {path.name} ({os.strerror(error.errno).lower()})")
    return None


def ensure_writable_folder(folder: Path, purpose: str, error_type: type[Exception] = CheckpointError) -> None:
    """Create `folder` if needed and prove that a file can be made in it; else one line naming it and why.
    Checked when a command starts, so a read-only or full folder fails before the work, not after it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as error:
        reason = "disk full" if error.errno in _DISK_FULL_ERRNOS else os.strerror(error.errno or 0).lower()
        raise error_type(f"{folder}: {purpose} cannot be written here ({reason})") from None


def atomic_torch_save(obj: Any, path: Path, staged_for: str | None = None) -> None:
    """torch.save to `path` so that a crash at any moment leaves either the old file or the new one (`staged_for`:
    the URI that `path` is a local copy of, named by a failure instead of `path`)."""
    path = Path(path)
    writer = None
    try:
        with atomic_write(path) as handle:
            writer = _ErrnoKeepingWriter(handle)
            torch.save(obj, writer)
    except (OSError, RuntimeError) as error:
        failure = _write_failure(writer.failure if writer and writer.failure else error, path, staged_for)
        if failure is None:
            raise
        raise failure from None


def read_checkpoint_file(path: Path, origin: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint file; truncated, foreign or unsafe files raise CheckpointError."""
    origin = origin or str(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{origin}: no such checkpoint") from None
    except Exception as error:  # truncated zip, pickle refused by weights_only, not a torch file at all ...
        raise CheckpointError(f"{origin}: not a readable checkpoint ({torch_load_failure(error)})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{origin}: not an Abstractinator checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    if data.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{origin}: written by a newer version (format {data['format_version']})")
    return data


class CheckpointStore:
    """Checkpoints in one location (local folder or s3://bucket/prefix)."""

    def __init__(self, location: str | Path, keep_last: int = 3):
        self.location = str(location)
        self.keep_last = keep_last
        self.is_s3 = is_s3(self.location)
        if self.is_s3:
            self.bucket, prefix = parse_s3_uri(self.location)
            self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        else:
            self.root = Path(self.location)

    # -- naming -----------------------------------------------------------------------------------------------
    def uri(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{name}" if self.is_s3 else str(self.root / name)

    def names(self) -> list[str]:
        """Checkpoint file names here, oldest step first."""
        if self.is_s3:
            from components.infrastructure.storage import list_objects

            keys = [obj.key[len(self.prefix) :] for obj in list_objects(self.bucket, self.prefix)]
        else:
            keys = [p.name for p in self.root.glob("checkpoint_step*.pt")] if self.root.is_dir() else []
        return sorted((k for k in keys if step_of(k) is not None), key=step_of)

    # -- writing ----------------------------------------------------------------------------------------------
    def save(self, state: dict[str, Any], step: int) -> str:
        """Write `state` as checkpoint_step{step}.pt, point `latest` at it, prune old ones; returns its URI."""
        payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
        name = checkpoint_name(step)
        if self.is_s3:
            self._save_s3(payload, name)
        else:
            atomic_torch_save(payload, self.root / name)
            try:
                write_text_atomic(self.root / LATEST_POINTER, f"{name}\n")
            except OSError as error:
                failure = _write_failure(error, self.root / LATEST_POINTER)
                if failure is None:
                    raise
                raise failure from None
        self._prune()
        return self.uri(name)

    def check_writable(self) -> None:
        """Fail now, before any training step, if checkpoints could not be written here: a local folder by a
        file made in it, an S3 prefix by a small object written and removed."""
        if not self.is_s3:
            ensure_writable_folder(self.root, "checkpoints")
            return
        from components.infrastructure.storage import delete_object, upload_bytes

        probe = f"{self.prefix}.write-check-{os.getpid()}"
        try:
            upload_bytes(b"", self.bucket, probe)
            delete_object(self.bucket, probe)
        except StorageError as error:
            raise CheckpointError(f"{self.location}: checkpoints cannot be written here ({error})") from None

    def remove_interrupted_writes(self) -> int:
        """Delete what killed writers left behind: hidden temp files here, and staging folders of dead
        processes in the system temp dir. Returns the number of bytes freed."""
        freed = 0
        if self.is_s3:  # multipart uploads an outage or a kill left unfinished (invisible, and billed)
            from components.infrastructure.storage import abort_incomplete_uploads

            abort_incomplete_uploads(self.bucket, self.prefix)
        if not self.is_s3 and self.root.is_dir():
            for temp in [*self.root.glob(".checkpoint_step*.pt.*"), *self.root.glob(f".{LATEST_POINTER}.*")]:
                if temp.is_file():
                    freed += temp.stat().st_size
                    temp.unlink(missing_ok=True)
        return freed + _remove_orphaned_staging()

    def _save_s3(self, payload: dict[str, Any], name: str) -> None:
        from components.infrastructure.storage import make_s3_client, upload_bytes, upload_file

        client = make_s3_client()
        with staging_dir("ckpt") as tmp:
            local = Path(tmp) / name
            atomic_torch_save(payload, local, staged_for=self.uri(name))
            upload_file(local, self.bucket, self.prefix + name, client=client, budget_s=UPLOAD_BUDGET_S)
        upload_bytes(f"{name}\n".encode(), self.bucket, self.prefix + LATEST_POINTER, client=client)

    def _prune(self) -> None:
        for name in self.names()[: -self.keep_last]:
            if self.is_s3:
                from components.infrastructure.storage import delete_object

                delete_object(self.bucket, self.prefix + name)
            else:
                (self.root / name).unlink(missing_ok=True)

    # -- reading ----------------------------------------------------------------------------------------------
    def latest(self) -> str | None:
        """URI of the newest complete checkpoint, or None when there is none."""
        pointer = None
        if self.is_s3:
            from components.infrastructure.storage import download_bytes

            try:
                pointer = download_bytes(self.bucket, self.prefix + LATEST_POINTER).decode().strip()
            except StorageError:
                pointer = None
        elif (self.root / LATEST_POINTER).is_file():
            pointer = (self.root / LATEST_POINTER).read_text().strip()
        names = self.names()
        if pointer in names:
            return self.uri(pointer)
        return self.uri(names[-1]) if names else None


def load_checkpoint(location: str | Path) -> dict[str, Any]:
    """Read a checkpoint from a file path, an s3:// URI, or a checkpoint folder (its `latest`)."""
    location = str(location)
    if is_s3(location):
        from components.infrastructure.storage import download_file

        if not location.endswith(".pt"):
            latest = CheckpointStore(location).latest()
            if latest is None:
                raise CheckpointError(f"{location}: holds no checkpoint")
            location = latest
        bucket, key = parse_s3_uri(location)
        with staging_dir("ckpt") as tmp:
            local = download_file(bucket, key, Path(tmp) / Path(key).name)
            return read_checkpoint_file(local, origin=location)
    path = Path(location)
    if path.is_dir():
        latest = CheckpointStore(path).latest()
        if latest is None:
            raise CheckpointError(f"{path}: holds no checkpoint")
        path = Path(latest)
    return read_checkpoint_file(path)
