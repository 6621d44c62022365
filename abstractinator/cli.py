"""`abstractinator`: the command line over every pipeline step.

Errors a user can fix (a bad config, a missing data source) exit with status 2 and one line on stderr naming
the problem; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import abstractinator.commands
from components.logs import configure_logging
from configs import ConfigError


def command_modules() -> list:
    """Every module in abstractinator/commands (each registers its own subcommand), in name order."""
    names = sorted(info.name for info in pkgutil.iter_modules(abstractinator.commands.__path__))
    return [importlib.import_module(f"abstractinator.commands.{name}") for name in names]


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types whose message is the whole story for the user."""
    from components.checkpoints import CheckpointError
    from components.data_sources import DataSourceError
    from components.evaluate import EvaluationError
    from components.local_stack import PostgresError, StackError
    from components.promote import RegistryError
    from components.storage import StorageError

    return (ConfigError, DataSourceError, CheckpointError, StorageError, EvaluationError, RegistryError, StackError,
            PostgresError)


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
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
