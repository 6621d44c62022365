"""dvc.yaml cannot drift from the code: each stage's dependencies must cover every repository module its command
can import.

The closure starts at the stage's command (`python -m abstractinator pipeline step NAME`, read from dvc.yaml):
`abstractinator/commands/pipeline/step.py`'s `run` and its function named NAME (one per step of
pipelines/step_table.py; the other steps' functions, and the CLI's other subcommands, which the dispatcher
imports to build its parser, compute nothing here). That file is followed function by function: its
module-level code, the functions the stage calls and the functions those call. Every other repository module
reached counts whole (each step's job is a module of its own, pipelines/step_*.py): every import in it, at
module level or inside a function (a lazy import still runs when its function does), except `if TYPE_CHECKING:`
blocks. A module is covered when dvc.yaml lists its file or a folder above it. A package's `__init__.py` counts
when it holds more than its docstring (importing a module runs it). A stage that reads `${run.config}` also
runs that config file (Python), so its imports count too. And the other way: every Python file a stage lists
must be in its closure (no stale entry that re-runs a stage for code it does not run).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("abstractinator", "components", "configs", "model", "pipelines")
STEP_COMMAND = ["python", "-m", "abstractinator", "pipeline", "step"]
DISPATCH = "abstractinator.commands.pipeline.step"


def module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(nodes: list[ast.AST], current: str) -> list[str]:
    """Dotted names of the repository modules (or module attributes) imported anywhere in `nodes`."""
    names: list[str] = []
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = current.split(".")
                if module_file(current) is not None and module_file(current).name != "__init__.py":
                    package = package[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
        pending.extend(ast.iter_child_nodes(node))
    return [name for name in names if name.split(".")[0] in PACKAGES]


@functools.cache
def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


def _only_docstring(path: Path) -> bool:
    body = parsed(path).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def files_of(name: str) -> list[Path]:
    """The files importing `name` runs: each package's __init__.py on the way (those with code), then the module
    (if `name` is an attribute of a module, that module)."""
    parts = name.split(".")
    files = [f for i in range(1, len(parts) + 1) if (f := module_file(".".join(parts[:i]))) is not None]
    return [f for f in files if f.name != "__init__.py" or not _only_docstring(f)]


def stage_closure(step: str, config: str | None = None) -> set[Path]:
    """The repository files the step's process can import (module docstring); `config`: the config file it
    runs, if any."""
    files: set[Path] = set()
    whole: list[str] = [module_name(REPO / config)] if config else []
    functions: list[tuple[str, str]] = [(DISPATCH, "run"), (DISPATCH, step)]
    visited: set[tuple[str, str]] = set()
    while functions:
        module, function = functions.pop()
        if (module, function) in visited:
            continue
        visited.add((module, function))
        tree = parsed(module_file(module))
        defined = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        top = [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
        body = defined[function].body
        whole += imported_names(top + body, module)
        files.update(files_of(module))
        for node in ast.walk(ast.Module(body=body, type_ignores=[])):
            if isinstance(node, ast.Name) and node.id in defined:
                functions.append((module, node.id))
    seen: set[Path] = set()
    while whole:
        name = whole.pop()
        for path in files_of(name):
            if path in seen:
                continue
            seen.add(path)
            if module_name(path) == DISPATCH:  # followed function by function above
                continue
            whole += imported_names(parsed(path).body, module_name(path))
    return files | seen


@functools.cache
def dvc_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def closure_of(stage: dict) -> set[Path]:
    """The closure of a dvc stage: its step from its command, and the config file when it depends on it."""
    command = shlex.split(stage["cmd"])
    assert command[:-1] == STEP_COMMAND, f"a stage command this test cannot follow: {stage['cmd']}"
    config = dvc_params()["run"]["config"] if "${run.config}" in stage["deps"] else None
    return stage_closure(command[-1], config)


def resolved(dep: str) -> str:
    """A dependency with its `${section.key}` references replaced from params.yaml, as dvc does."""
    params = dvc_params()
    return re.sub(r"\$\{(\w+)\.(\w+)\}", lambda m: str(params[m[1]][m[2]]), dep)


def uncovered(files: set[Path], deps: list[str]) -> list[str]:
    """The files of `files` that no dependency (a file, or a folder above it) covers."""
    declared = [REPO / resolved(dep) for dep in deps]
    return sorted(str(f.relative_to(REPO)) for f in files if not any(f == d or d in f.parents for d in declared))


@pytest.mark.parametrize("name", sorted(dvc_stages()))
def test_every_module_a_stage_can_import_is_a_dependency(name):
    stage = dvc_stages()[name]
    closure = closure_of(stage)
    missing = uncovered(closure, stage["deps"])
    assert not missing, f"dvc.yaml stage {name} misses these dependencies: {missing}"
    stale = sorted(d for d in map(resolved, stage["deps"]) if d.endswith(".py") and REPO / d not in closure)
    assert not stale, f"dvc.yaml stage {name} lists files it never imports: {stale}"


def test_removing_any_module_from_a_stage_is_caught():
    """The check above can fail: without any one of the Python files a stage lists, it names that file."""
    checked = 0
    for stage in dvc_stages().values():
        closure = closure_of(stage)
        for dep in [d for d in stage["deps"] if d.endswith(".py")]:
            assert dep in uncovered(closure, [d for d in stage["deps"] if d != dep]), dep
            checked += 1
    assert checked > 20


def test_the_closure_sees_lazy_imports_and_skips_other_steps():
    """Spot checks of the rule on known code: a lazy import inside a function is followed (the evaluate step's
    paired evaluation), another step's branch is not (the scoring code is evaluate's, not promote's)."""
    evaluate = {str(f.relative_to(REPO)) for f in stage_closure("evaluate")}
    assert "pipelines/paired_evaluation.py" in evaluate
    assert "components/data/byte_windows.py" in evaluate
    assert "pipelines/dvc_params.py" in evaluate
    assert "components/evaluation/compression_eval.py" in evaluate
    assert "components/evaluation/compression_eval.py" not in {
        str(f.relative_to(REPO)) for f in stage_closure("promote")
    }


def test_dvc_lock_is_not_ignored_by_git():
    """docs/pipeline.md: dvc.lock is committed (DVC's convention), so git must not ignore it."""
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "-q", "dvc.lock"], cwd=REPO, check=False)
    assert ignored.returncode == 1, "dvc.lock is ignored by git"
