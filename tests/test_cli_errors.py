"""One user-error base class: every error a user can fix derives from configs.UserError, and the CLI alone turns it
into one `error:` line and exit status 2 (a bug keeps its traceback, exit 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from abstractinator import cli
from configs.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("abstractinator", "components", "configs", "devtools", "pipelines")
# Errors that are not the user's to fix: the story is in a traceback, not in one line.
NOT_USER_ERRORS = {
    "DistributedTrainingError": "torchrun's processes died without a result; their tracebacks are the story",
}


def defined_errors() -> dict[str, str]:
    """{class name: module} of every exception class defined in our packages (a name ending in Error)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                    found[node.name] = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return found


def test_every_error_a_user_can_fix_derives_from_user_error() -> None:
    import importlib

    errors = defined_errors()
    assert {"ConfigError", "StorageError", "ClusterError", "StackError", "CodecError"} <= set(errors)
    wrong = []
    for name, module in errors.items():
        cls = getattr(importlib.import_module(module), name)
        if name == "UserError" or name in NOT_USER_ERRORS:
            continue
        if not issubclass(cls, UserError):
            wrong.append(f"{module}.{name}")
    assert not wrong, f"not a configs.UserError: {wrong}"


def test_no_command_prints_its_own_errors() -> None:
    printers = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "abstractinator" / "commands").rglob("*.py"))
        if '"error: ' in path.read_text() or "return 2" in path.read_text()
    ]
    assert not printers, f"print errors themselves (raise a UserError instead): {printers}"


class _Refused(UserError):
    pass


def _command(raised: BaseException):
    def run(args) -> int:
        raise raised

    return run


@pytest.mark.parametrize(
    ("raised", "status", "first_line"),
    [
        (_Refused("the server\nhttp://u:hunter22@host/ refused"), 2, "error: the server http://u:***@host/ refused"),
        (ValueError("a bug"), 1, "Traceback (most recent call last):"),
    ],
)
def test_the_cli_maps_user_errors_to_one_line_and_status_2(monkeypatch, capsys, raised, status, first_line) -> None:
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["config", "show", "tiny"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(args, "func", _command(raised))
    assert cli.main([]) == status
    err = capsys.readouterr().err
    assert err.splitlines()[0] == first_line
    if status == 2:
        assert err.count("\n") == 1
