"""Shared fixtures: an isolated data home and small text corpora made in tmp_path (tests never download)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Hermetic: no test may reach the Hugging Face hub (set before `datasets` is first imported).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "torch_single_thread: run each test with torch on one thread (the fixture of the same name)"
    )


@pytest.fixture(autouse=True)
def torch_single_thread(request):
    """Tiny models run fastest on one thread, and far faster than two threads on busy shared cores. A test module
    opts in with `pytestmark = pytest.mark.torch_single_thread`; the thread count is restored after each test."""
    if request.node.get_closest_marker("torch_single_thread") is None:
        yield
        return
    import torch  # here, so that tests that never touch torch do not pay for importing it

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def forget_environment_caches() -> None:
    """Drop what was read from the environment once per process: our settings, and boto3's default session,
    whose credentials botocore resolves once and keeps (a later test's AWS_* keys would otherwise be ignored)."""
    import sys

    from components.infrastructure.settings import get_settings

    get_settings.cache_clear()
    if "boto3" in sys.modules:
        sys.modules["boto3"].DEFAULT_SESSION = None


@pytest.fixture
def settings_env(monkeypatch):
    """Set environment variables that Settings (and boto3) read, with the cached settings and boto3's default
    session rebuilt before and after."""

    def set_env(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        forget_environment_caches()

    yield set_env
    forget_environment_caches()


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh real tmpfs of that size ("2m"), unmounted after the test: the way to get a real
    ENOSPC. Root and mount(8) only; elsewhere the test is skipped."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        folder = tmp_path / f"disk{len(mounts)}"
        folder.mkdir()
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
        mounts.append(folder)
        return folder

    yield mount
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """A small compiled pipeline package (tests/small_pipeline.py) for the submission and schedule tests."""
    from tests.small_pipeline import compile_small_pipeline

    path = tmp_path_factory.mktemp("pipeline") / "pipeline.yaml"
    compile_small_pipeline(path)
    return path


@pytest.fixture
def data_home(tmp_path, settings_env) -> Path:
    """A data home of the test's own, so nothing lands in the repository's .data."""
    home = tmp_path / "data-home"
    settings_env(ABSTRACTINATOR_DATA_HOME=str(home))
    return home


def write_corpus(root: Path, count: int, seed: int = 0, start: int = 0) -> dict[str, bytes]:
    """`count` text files of varied length, some in subfolders, some not UTF-8; returns {doc_id: bytes}."""
    rng = random.Random(seed)
    words = "the of and to in a is that for it as was with be by on not he this are or".split()
    documents = {}
    for number in range(start, start + count):
        doc_id = f"part{number % 3}/doc{number:04d}.txt" if number % 2 else f"doc{number:04d}.txt"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 400)))
        content = f"document {number}: {text}\n".encode() + (b"\xff\xfe" if number % 7 == 0 else b"")
        path = root / doc_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        documents[doc_id] = content
    return documents


@pytest.fixture
def corpus_writer():
    """`write_corpus` itself, for tests that grow a corpus between runs."""
    return write_corpus


@pytest.fixture
def text_corpus(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """A folder of 120 small documents (about 140 KB) and its {doc_id: content}."""
    root = tmp_path / "corpus"
    return root, write_corpus(root, 120)


def prepare_small_corpus(root: Path, count: int, seed: int) -> Path:
    """`write_corpus` under root/text, prepared into root/prepared (no eval sets, no download)."""
    from components.data.prepare_data import PrepareDataParams, prepare_data

    write_corpus(root / "text", count, seed=seed)
    out = root / "prepared"
    prepare_data(PrepareDataParams(source=str(root / "text"), out_dir=out, include_eval_sets=False))
    return out


def train_command(corpus: Path, ckpt: Path, *sets: str) -> list[str]:
    """`python -m abstractinator train` with the CI config on `corpus`, checkpoints in `ckpt`, quiet, each of `sets`
    a --set override (tests append further flags)."""
    args = [
        sys.executable,
        "-m",
        "abstractinator",
        "train",
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs/ci_config.py"),
        "--set",
        f"checkpoint_dir={ckpt}",
        "--data",
        str(corpus),
        "--no-progress",
    ]
    for item in sets:
        args += ["--set", item]
    return args
