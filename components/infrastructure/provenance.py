"""Where a result came from: the code identity, the git commit, a hash of the config, flattened config params.

Every training and evaluation step records these (MLflow tags, checkpoints), so any registered model can be
traced to its exact code, data (the manifest's data hash) and config.

"Did the code change" is decided by `code_identity()`: a sha256 over the content of the source files that affect
training (CODE_PATHS), tracked or untracked-but-not-ignored, so any edit counts, committed or not. A clean
checkout and the image built from it agree on it: the image has no .git, so there the same files (the image's
source tree, /opt/abstractinator, which its tasks import from) are found by walking CODE_PATHS and leaving out
what the repository ignores (IGNORED_NAMES), and hashed the same way. The git
commit is kept for display only (a commit plus "-dirty" cannot tell two different edits apart).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from components.infrastructure.settings import get_settings
from configs import ExpConfig
from configs.schema import FLAT_KEY_SECTIONS

REPO_ROOT = Path(__file__).resolve().parents[2]
# What the training image copies (docker/Dockerfile) that can change what is trained: code, configs, pins.
CODE_PATHS = (
    "abstractinator",
    "components",
    "configs",
    "model",
    "pipelines",
    "pyproject.toml",
    "docker/constraints.txt",
    "train.py",
    "evaluate.py",
)
# Ignored by .gitignore under CODE_PATHS (and made by installing or running the code): never part of the identity.
IGNORED_NAMES = ("__pycache__", "*.pyc", "*.egg-info", "build", "*.pt", ".DS_Store")

# Keys that say where things go, not what is trained: they do not change the config hash.
_LOCATION_KEYS = ("checkpoint_dir", "resume_from_checkpoint", "save_base_components_path", "data_dir")


def git_commit(repo: Path | None = None) -> str:
    """HEAD's commit (with '-dirty' if tracked files changed); outside a git checkout (the training image) the
    commit recorded at build time (ABSTRACTINATOR_GIT_COMMIT), else 'unknown'."""
    cwd = repo or Path(__file__).resolve().parents[2]
    if not (cwd / ".git").exists():
        return get_settings().git_commit or "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return get_settings().git_commit or "unknown"
    return f"{commit}-dirty" if dirty else commit


def _digest(root: Path, files: list[str]) -> str:
    """sha256 over sorted "<path> <sha256 of content>" lines: names and contents, nothing else (no mtimes)."""
    lines = []
    for name in sorted(set(files)):
        path = root / name
        if path.is_file():  # a tracked file deleted in the working tree is not part of it
            lines.append(f"{name} {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _git_files(root: Path) -> list[str] | None:
    """Tracked and untracked-but-not-ignored files under CODE_PATHS, or None outside a git checkout."""
    if not (root / ".git").exists():
        return None
    try:
        output = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *CODE_PATHS],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [name for name in output.decode().split("\0") if name]


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED_NAMES)


def _walked_files(root: Path) -> list[str]:
    """The files under CODE_PATHS as an image holds them (no .git): everything not matching IGNORED_NAMES."""
    files = []
    for entry in CODE_PATHS:
        path = root / entry
        if path.is_file():
            files.append(entry)
            continue
        for directory, subdirs, names in os.walk(path):
            subdirs[:] = sorted(d for d in subdirs if not _ignored(d))
            relative = Path(directory).relative_to(root)
            files += [(relative / n).as_posix() for n in names if not _ignored(n)]
    return files


def code_identity(root: Path | None = None) -> str:
    """sha256 (hex) of the code that decides what is trained; see the module docstring. Imported from an
    installed wheel (no source tree around it), the identity recorded at build time (ABSTRACTINATOR_CODE_IDENTITY),
    else 'unknown'."""
    root = Path(root or REPO_ROOT)
    files = _git_files(root)
    if files is None and not (root / "pyproject.toml").is_file():
        return os.environ.get("ABSTRACTINATOR_CODE_IDENTITY", "").strip() or "unknown"
    return _digest(root, files if files is not None else _walked_files(root))


def config_hash(config: ExpConfig) -> str:
    """sha256 of the canonical JSON of what the config trains (locations excluded), first 16 hex digits."""
    data = config.as_dict()
    for key in _LOCATION_KEYS:
        del data[FLAT_KEY_SECTIONS[key]][key]  # the sectioned form: each key in its section
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': [1, 2]}} -> {'a.b.0': '1', 'a.b.1': '2'}: MLflow params from a config."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = ((str(i), v) for i, v in enumerate(data))
    else:
        return {prefix: "None" if data is None else str(data)}
    flat: dict[str, str] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not flat and prefix:
        flat[prefix] = "[]" if isinstance(data, list) else "{}"
    return flat
