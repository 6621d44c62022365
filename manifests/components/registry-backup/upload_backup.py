"""Upload a registry database dump to S3 as <REGISTRY_BACKUP_DESTINATION>/<UTC time>.dump.

Run by the CronJob registry-backup (manifests/components/registry-backup/backup.yaml) after pg_dump. boto3 takes
its keys, region and endpoint (AWS_ENDPOINT_URL_S3) from the standard environment. An empty dump is refused: a
failed pg_dump must not look like a backup. Prints the object's URI; exit 2 on bad input.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import boto3


def main(argv: list[str]) -> int:
    destination = os.environ.get("REGISTRY_BACKUP_DESTINATION", "")
    if len(argv) != 1 or not destination.startswith("s3://"):
        print("usage: REGISTRY_BACKUP_DESTINATION=s3://bucket/prefix upload_backup.py DUMP", file=sys.stderr)
        return 2
    dump = Path(argv[0])
    if not dump.is_file() or dump.stat().st_size == 0:
        print(f"error: {dump} is missing or empty", file=sys.stderr)
        return 2
    bucket, _, prefix = destination.removeprefix("s3://").partition("/")
    key = "/".join(
        part for part in (prefix.strip("/"), time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + ".dump") if part
    )
    boto3.client("s3").upload_file(str(dump), bucket, key)
    print(f"s3://{bucket}/{key}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
