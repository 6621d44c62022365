"""`abstractinator`: the command line over every pipeline step.

Errors a user can fix (configs.UserError: a bad config, a missing data source, an unreachable server; or an
OSError of the machine: a full disk, a folder we may not write) exit with status 2 and one line on stderr naming
the problem; anything else is a bug and keeps its traceback (exit 1). Commands raise; only this module prints.
Whatever is printed has its credentials masked (components/infrastructure/redaction.py).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys
import traceback

import abstractinator.commands
from components.infrastructure.logs import configure_logging
from components.infrastructure.redaction import print_error, redact
from configs.errors import UserError


def command_modules() -> list:
    """Every module in abstractinator/commands (each registers its own subcommand), in name order."""
    names = sorted(info.name for info in pkgutil.iter_modules(abstractinator.commands.__path__))
    return [importlib.import_module(f"abstractinator.commands.{name}") for name in names]


# OSErrors that describe the machine or the user's paths, not a bug: reported in one line.
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.ENAMETOOLONG: "file name too long",
}


def describe_os_error(error: OSError) -> str | None:
    """'PATH: disk full' for an environment OSError; None for any other (a bug, shown with its traceback)."""
    reason = ENVIRONMENT_ERRNOS.get(error.errno)
    if reason is None:
        return None
    where = error.filename if error.filename is not None else None
    return f"{where}: {reason}" if where is not None else reason


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="abstractinator",
        description="Hierarchical byte-level autoencoder: configs, data, training, evaluation, pipelines.",
    )
    parser.add_argument("--log-format", choices=["console", "json"], default=None, help="structured log style")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in command_modules():
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_format)
    try:
        return args.func(args)
    except UserError as error:
        print_error(error)
        return 2
    except OSError as error:
        described = describe_os_error(error)
        if described is None:
            print(redact(traceback.format_exc()), end="", file=sys.stderr)
            return 1
        print_error(described)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: keep the traceback (redacted), exit 1
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
