"""Where a result came from: the git commit, a hash of the config, flattened config params.

Every training and evaluation step records these (MLflow tags, checkpoints), so any registered model can be
traced to its exact code, data (the manifest's data hash) and config.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from components.settings import get_settings
from configs import ExpConfig

# Keys that say where things go, not what is trained: they do not change the config hash.
_LOCATION_KEYS = ("checkpoint_dir", "resume_from_checkpoint", "save_base_components_path", "data_dir")


def git_commit(repo: Path | None = None) -> str:
    """HEAD's commit (with '-dirty' if tracked files changed); outside a git checkout (the training image) the
    commit recorded at build time (ABSTRACTINATOR_GIT_COMMIT), else 'unknown'."""
    cwd = repo or Path(__file__).resolve().parents[1]
    if not (cwd / ".git").exists():
        return get_settings().git_commit or "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return get_settings().git_commit or "unknown"
    return f"{commit}-dirty" if dirty else commit


def config_hash(config: ExpConfig) -> str:
    """sha256 of the canonical JSON of what the config trains (locations excluded), first 16 hex digits."""
    data = {k: v for k, v in config.as_dict().items() if k not in _LOCATION_KEYS}
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
