"""manifests/check.py (a script, not a package module) loaded once for the tests, and the marker of the tests that
need its standard tools (checkov, hadolint)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def _load():
    spec = importlib.util.spec_from_file_location("manifests_check", MANIFESTS / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = _load()
needs_tools = pytest.mark.skipif(
    not (check.TOOLS / "checkov").exists() or not (check.TOOLS / "hadolint").exists(),
    reason="checkov/hadolint not installed: `make manifests-tools` (CI runs "
    "`make manifests-check` first, which installs them)",
)
