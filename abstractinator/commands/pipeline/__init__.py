"""`abstractinator pipeline ...`: the kfp pipeline's commands. Each module of this package registers its
subcommands (compile, run-local, step, submit and schedule)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("pipeline", help="compile the kfp pipeline, run it locally, run one step")
    commands = parser.add_subparsers(dest="pipeline_command", required=True, metavar="PIPELINE_COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}").register(commands)
