"""Moving step artifacts between a worker's disk and the artifact root (an s3:// prefix or a local folder).

Pipeline steps run in separate processes (pods on a cluster), so they hand each other URIs plus content hashes,
never data. A folder is published file by file (manifest.json of prepared data last, so a half-published
folder never looks complete); a fetched folder is reused when its content hash already matches.
"""

from __future__ import annotations

from pathlib import Path

from components.infrastructure.file_hashes import sha256_of
from components.infrastructure.storage import (
    StorageError,
    download_file,
    fetch_file,
    is_s3,
    list_objects,
    make_s3_client,
    parse_s3_uri,
    publish_file,
    upload_file,
)

__all__ = ["StorageError", "exists", "fetch_dir", "fetch_file", "file_hash", "is_s3", "publish_dir", "publish_file"]


def publish_dir(directory: Path, uri: str, last: tuple[str, ...] = ("manifest.json",)) -> str:
    """Copy every file under `directory` to `uri/<relative path>`, the names in `last` after all others."""
    files = sorted(p for p in Path(directory).rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))
    files.sort(key=lambda p: p.name in last)
    client = make_s3_client() if is_s3(uri) else None
    for path in files:
        relative = path.relative_to(directory).as_posix()
        if client is None:
            publish_file(path, f"{uri.rstrip('/')}/{relative}")
        else:
            bucket, prefix = parse_s3_uri(uri)
            upload_file(path, bucket, f"{prefix.rstrip('/')}/{relative}", client=client)
    return uri


def fetch_dir(uri: str, directory: Path) -> Path:
    """A local copy of the folder at `uri` (a local URI is returned as is)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/"
    client = make_s3_client()
    for item in list_objects(bucket, prefix, client=client):
        download_file(bucket, item.key, Path(directory) / item.key[len(prefix) :], client=client)
    return Path(directory)


def exists(uri: str) -> bool:
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = parse_s3_uri(uri)
    return any(item.key == key for item in list_objects(bucket, key))


def file_hash(path: Path) -> str:
    return f"sha256:{sha256_of(path)}"
