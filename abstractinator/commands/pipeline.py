"""`abstractinator pipeline ...`: the kfp pipeline's commands. Each module in pipelines/commands registers one
subcommand (compile, run-local, step here; submit and schedule may be added the same way)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register(subparsers: argparse._SubParsersAction) -> None:
    import pipelines.commands

    parser = subparsers.add_parser("pipeline", help="compile the kfp pipeline, run it locally, run one step")
    commands = parser.add_subparsers(dest="pipeline_command", required=True, metavar="PIPELINE_COMMAND")
    for info in sorted(pkgutil.iter_modules(pipelines.commands.__path__), key=lambda i: i.name):
        importlib.import_module(f"pipelines.commands.{info.name}").register(commands)
