"""`abstractinator pipeline run-local`: the pipeline through kfp.local's SubprocessRunner, then the registry."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from abstractinator.flags import add_run_arguments

    parser = subparsers.add_parser("run-local", help="run the whole pipeline on this machine (kfp.local)")
    add_run_arguments(parser)
    parser.add_argument(
        "--pipeline-root",
        type=Path,
        default=None,
        help="kfp.local's folder: task bookkeeping, KFP artifacts and the task cache (default: a "
        "temporary folder, nothing cached)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="where the tasks' full logs go (default: <data home>/pipeline-logs/run-local-*.log)",
    )
    parser.add_argument("--raw", action="store_true", help="print kfp.local's own output instead of a summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from abstractinator.flags import pipeline_arguments
    from components.infrastructure.settings import get_settings
    from components.infrastructure.tracking import resolve_tracking_uri
    from components.training.stages import load_pipeline_config
    from pipelines.local_progress import default_log_path
    from pipelines.local_run import run_local
    from pipelines.registry_view import print_registry

    config = load_pipeline_config(args.config, args.overrides)  # a bad config fails here, in one line
    log_path = (args.log_file or default_log_path(get_settings().data_home)).absolute()
    outcome = run_local(pipeline_arguments(args), args.pipeline_root, log_path, follow=not args.raw)
    print(f"pipeline finished in {outcome['seconds']} s (data step's decision: {outcome['reason']})")
    print(f"full task logs: {outcome['log_path']}")
    tracking_uri = resolve_tracking_uri(config.logging.project_name)
    flags = "" if get_settings().mlflow_tracking_uri else f"--project {config.logging.project_name}"
    print_registry(tracking_uri, args.model_name, flags, outcome["evaluation"])
    return 0
