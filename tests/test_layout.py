"""The layout the package docstrings promise: components/ holds only subpackages, and imports point one way
(each subpackage's __init__.py says what it may import)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = REPO / "components"
# What each subpackage of components/ may import of components/ (model/ and configs/ are open to all).
MAY_IMPORT = {
    "infrastructure": set(),
    "data": {"infrastructure"},
    "training": {"data", "infrastructure"},
    "evaluation": {"data", "training", "infrastructure"},
    "registry": {"infrastructure"},
    "codec": {"evaluation", "registry", "infrastructure"},
}
OUTSIDE = ("pipelines", "abstractinator", "devtools", "bench", "tests")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_components_holds_only_subpackages_each_saying_what_it_owns() -> None:
    assert sorted(p.name for p in COMPONENTS.glob("*.py")) == ["__init__.py"]
    packages = sorted(p.name for p in COMPONENTS.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(MAY_IMPORT)
    for package in packages:
        docstring = ast.get_docstring(ast.parse((COMPONENTS / package / "__init__.py").read_text())) or ""
        assert "May import" in docstring, f"components/{package}/__init__.py"


def test_imports_point_one_way() -> None:
    wrong = []
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((COMPONENTS / package).rglob("*.py")):
            for name in imported_modules(path):
                parts = name.split(".")
                if parts[0] in OUTSIDE:
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
                elif parts[0] == "components" and len(parts) > 1 and parts[1] not in {package, *allowed}:
                    wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_source_file_is_git_ignored() -> None:
    """An ignored module works here and is missing from every clone, wheel and image (an `evaluation/` pattern
    meant for a report folder once hid components/evaluation/)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    packages = ["abstractinator", "components", "configs", "devtools", "model", "pipelines"]
    ignored = []
    for which in ("--cached", "--others"):  # tracked files that a pattern matches, and untracked ignored ones
        listed = subprocess.run(
            ["git", "ls-files", which, "--ignored", "--exclude-standard", "--", *packages],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        ignored += [name for name in listed if name.endswith(".py")]
    assert ignored == []


PACKAGES = ("abstractinator", "components", "configs", "devtools", "model", "pipelines")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """The repository modules `path` imports at run time, wherever the import stands (a function-level import
    is still a dependency); imports under `if TYPE_CHECKING:` are for annotations only and do not count."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for inner in ast.walk(statement)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` depends on that module; on the package only for a name it defines
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            names.update(submodules)
            if len(submodules) < len(node.names):
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names & known


def test_no_module_import_cycle() -> None:
    """Modules import each other one way: no module reaches itself through the imports of the ones it imports.
    (A package's __init__ counts as its own module; an import of `a.b.c` depends on the module `a.b.c`.)"""
    import graphlib

    paths = [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]
    known = {module_name(path) for path in paths}
    graph = {module_name(path): runtime_imports(path, known) - {module_name(path)} for path in paths}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail("import cycle: " + " -> ".join(error.args[1]))
