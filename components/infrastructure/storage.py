"""S3 object storage (any S3-compatible store: AWS, SeaweedFS, MinIO) through boto3.

One client factory reads the endpoint and region from the settings; access keys are never ours to handle:
boto3 reads the standard AWS_* variables (or its config files) itself. Every botocore failure is re-raised
as a `StorageError` whose message names the bucket and key, so a user sees "s3://bucket/key: no such bucket"
rather than a botocore traceback.

Time is bounded: connect and read time-outs on every call, botocore's own retries, and uploads retried
`UPLOAD_ATTEMPTS` times with backoff, all within a time budget (`budget_s`: no retry is started that the budget
cannot wait for), so an outage costs a bounded delay per upload. A failed upload's unfinished multipart parts are
aborted (the store would keep them, unseen and billed, forever); when the store is down the abort fails too, so it
is remembered and run again after the next call that reaches the store (and `CheckpointStore` aborts what is left
under its prefix when training starts).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from components.infrastructure.logs import get_logger
from components.infrastructure.settings import get_settings
from configs.errors import UserError

log = get_logger(__name__)

UPLOAD_ATTEMPTS = 3
UPLOAD_BACKOFF_S = 2.0  # doubled after each failed attempt: 2 s, 4 s
_PENDING_ABORTS: set[tuple[str, str]] = set()  # (bucket, prefix) whose abort failed while the store was down


class StorageError(UserError):
    """An object store was unreachable, refused us, or lacks the bucket/key asked for."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' -> ('bucket', 'some/prefix')."""
    if not uri.startswith("s3://"):
        raise StorageError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StorageError(f"{uri!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix


def make_s3_client(
    endpoint_url: str | None = None,
    region: str | None = None,
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 60.0,
    max_attempts: int | None = None,
):
    """A boto3 S3 client for the configured endpoint. `max_attempts=None` leaves retries to botocore, which
    honours AWS_MAX_ATTEMPTS / AWS_RETRY_MODE (a test or an impatient user can set them)."""
    import boto3
    from botocore.config import Config

    settings = get_settings()
    config_kwargs: dict = {"connect_timeout": connect_timeout, "read_timeout": read_timeout}
    if max_attempts is not None:
        config_kwargs["retries"] = {"max_attempts": max_attempts, "mode": "standard"}
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or settings.s3_endpoint_url,
        region_name=region or settings.s3_region,
        config=Config(**config_kwargs),
    )


def _readable(error: Exception, bucket: str, key: str | None) -> StorageError:
    """A one-line StorageError naming the object, from any botocore/boto3 exception."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(error, NoCredentialsError):
        reason = "no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    elif isinstance(error, EndpointConnectionError):
        reason = f"object store unreachable ({error})"
    elif isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        reason = {
            "NoSuchBucket": "no such bucket",
            "NoSuchKey": "no such key",
            "404": "not found",
            "AccessDenied": "access denied",
            "403": "access denied",
            "InvalidAccessKeyId": "the access key is not known to the object store",
            "SignatureDoesNotMatch": "the secret key does not match the access key",
        }.get(code, f"{code or 'error'}: {error}")
    else:
        reason = f"{type(error).__name__}: {error}"
    return StorageError(f"{where}: {reason}")


def _botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def list_objects(bucket: str, prefix: str = "", client=None) -> list[ObjectInfo]:
    """Every object under `prefix`, sorted by key (pagination handled)."""
    client = client or make_s3_client()
    objects = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                objects.append(ObjectInfo(item["Key"], int(item["Size"]), item.get("ETag", "").strip('"')))
    except _botocore_errors() as error:
        raise _readable(error, bucket, prefix or None) from error
    return sorted(objects, key=lambda obj: obj.key)


def download_bytes(bucket: str, key: str, client=None) -> bytes:
    client = client or make_s3_client()
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except _botocore_errors() as error:
        raise _readable(error, bucket, key) from error


def download_file(bucket: str, key: str, path: Path, client=None) -> Path:
    client = client or make_s3_client()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        client.download_file(bucket, key, str(path))
    except _botocore_errors() as error:
        raise _readable(error, bucket, key) from error
    return path


def abort_incomplete_uploads(bucket: str, prefix: str, client=None) -> int:
    """Abort every unfinished multipart upload under `prefix`; returns how many. Best effort: a store that is
    still unreachable leaves them for the next call (logged, not raised)."""
    client = client or make_s3_client()
    aborted = 0
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
    except _botocore_errors() as error:
        _PENDING_ABORTS.add((bucket, prefix))
        log.warning(
            "s3_abort_multipart_failed",
            uri=f"s3://{bucket}/{prefix}",
            error=str(_readable(error, bucket, prefix or None)),
        )
    else:
        _PENDING_ABORTS.discard((bucket, prefix))
    if aborted:
        log.info("s3_multipart_aborted", uri=f"s3://{bucket}/{prefix}", uploads=aborted)
    return aborted


def retry_pending_aborts(client=None) -> int:
    """Run again the aborts that failed while the store was down; returns how many uploads they aborted."""
    return sum(abort_incomplete_uploads(bucket, prefix, client) for bucket, prefix in sorted(_PENDING_ABORTS))


def upload_file(
    path: Path,
    bucket: str,
    key: str,
    client=None,
    attempts: int = UPLOAD_ATTEMPTS,
    budget_s: float | None = None,
) -> str:
    """Uploads `path` to s3://bucket/key and returns that URI; retried with backoff while `budget_s` (seconds from
    the first attempt) allows, and the parts of a failed multipart attempt are aborted."""
    from boto3.exceptions import S3UploadFailedError

    client = client or make_s3_client()
    started = time.monotonic()
    for attempt in range(1, attempts + 1):
        try:
            client.upload_file(str(path), bucket, key)
            if _PENDING_ABORTS:  # the store is back: finish what an outage left
                retry_pending_aborts(client)
            return f"s3://{bucket}/{key}"
        except _botocore_errors() as error:
            failure = _readable(error, bucket, key)
        except S3UploadFailedError as error:  # wraps the ClientError in its message only
            failure = StorageError(f"s3://{bucket}/{key}: upload failed ({error})")
        abort_incomplete_uploads(bucket, key, client)
        delay = UPLOAD_BACKOFF_S * 2 ** (attempt - 1)
        if budget_s is not None and time.monotonic() - started + delay > budget_s:
            log.warning("s3_upload_budget_spent", uri=f"s3://{bucket}/{key}", attempts=attempt, budget_s=budget_s)
            break
        if attempt < attempts:
            log.warning(
                "s3_upload_retry",
                uri=f"s3://{bucket}/{key}",
                attempt=attempt,
                of=attempts,
                retry_in_s=delay,
                error=str(failure),
            )
            time.sleep(delay)
    raise failure


def upload_bytes(data: bytes, bucket: str, key: str, client=None) -> str:
    """Writes a small object (a pointer, a report) in one request and returns its URI."""
    client = client or make_s3_client()
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    except _botocore_errors() as error:
        raise _readable(error, bucket, key) from error
    return f"s3://{bucket}/{key}"


def delete_object(bucket: str, key: str, client=None) -> None:
    client = client or make_s3_client()
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except _botocore_errors() as error:
        raise _readable(error, bucket, key) from error


# -- URIs that may be s3:// or a local path (what steps and checkpoints hand each other) -------------------------
def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def publish_file(path: Path, uri: str) -> str:
    """Copy one file to `uri` (s3:// or a local path); returns the URI."""
    if is_s3(uri):
        bucket, key = parse_s3_uri(uri)
        return upload_file(path, bucket, key)
    target = Path(uri)
    if target.resolve() != Path(path).resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return uri


def fetch_file(uri: str, path: Path) -> Path:
    """A local copy of `uri` at `path` (a local URI is returned as is)."""
    if not is_s3(uri):
        return Path(uri)
    bucket, key = parse_s3_uri(uri)
    return download_file(bucket, key, path)
