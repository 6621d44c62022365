"""`abstractinator pipeline run-local`: the pipeline through kfp.local's SubprocessRunner, then the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipelines.commands import add_run_arguments

    parser = subparsers.add_parser("run-local", help="run the whole pipeline on this machine (kfp.local)")
    add_run_arguments(parser)
    parser.add_argument("--pipeline-root", type=Path, default=None, help="kfp.local's bookkeeping folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from components.settings import get_settings
    from components.stages import load_pipeline_config
    from components.tracking import resolve_tracking_uri
    from pipelines.commands import pipeline_arguments
    from pipelines.local_run import run_local
    from pipelines.registry_view import print_registry

    config = load_pipeline_config(args.config, args.overrides)  # a bad config fails here, in one line
    outcome = run_local(pipeline_arguments(args), args.pipeline_root)
    print(f"pipeline finished in {outcome['seconds']} s (data step's decision: {outcome['reason']})")
    tracking_uri = resolve_tracking_uri(config.project_name)
    flags = "" if get_settings().mlflow_tracking_uri else f"--project {config.project_name}"
    print_registry(tracking_uri, args.model_name, flags)
    return 0
