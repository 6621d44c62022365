"""`abstractinator pipeline submit` and `abstractinator pipeline schedule`: the cluster half of the pipeline CLI.

`register(actions)` adds both subcommands to the `pipeline` command's sub-parsers. Each prints
plain `key: value` lines on stdout (kfp's own messages go to stderr) and exits 0; a problem the user can fix (bad
cron, missing pipeline file, unreachable host, refused token, API error) raises ClusterError or CronError, which
the CLI prints as one `error: ...` line on stderr, exiting 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_PACKAGE = Path("build/pipeline.yaml")
DEFAULT_EXPERIMENT = "abstractinator"
DEFAULT_SCHEDULE_PIPELINE = "abstractinator-training"


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://localhost:8888")
    parser.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user deployments)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment (created if missing)")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="bearer token file (default: $ABSTRACTINATOR_KFP_TOKEN, then $ABSTRACTINATOR_KFP_TOKEN_FILE)",
    )
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter (repeatable), typed by the pipeline's inputs",
    )
    parser.add_argument("--pipeline-root", default=None, help="override the kfp-launcher defaultPipelineRoot")
    parser.add_argument("--service-account", default=None, help="Kubernetes service account for the run's pods")


def register(actions: argparse._SubParsersAction) -> None:
    submit = actions.add_parser(
        "submit",
        help="upload the compiled pipeline as a new version and start a run",
        description="Uploads the compiled pipeline as a new version of a named pipeline (created the first "
        "time) and starts a run of that version. Prints the run id and its UI link.",
    )
    _connection_arguments(submit)
    submit.add_argument(
        "--package", type=Path, default=DEFAULT_PACKAGE, help=f"compiled pipeline YAML (default {DEFAULT_PACKAGE})"
    )
    submit.add_argument("--pipeline-name", default=None, help="pipeline name (default: the spec's pipelineInfo)")
    submit.add_argument("--run-name", default=None, help="run display name (default: pipeline name + time)")
    submit.add_argument("--ui-url", default=None, help="UI base URL for the printed link (default: --host)")
    submit.set_defaults(func=run_submit)

    schedule = actions.add_parser(
        "schedule",
        help="create or replace the one recurring run of a name (or --disable/--enable/--delete it)",
        description="Idempotent: running it again leaves exactly one recurring run called NAME. Cron strings "
        "have 6 fields, seconds first ('0 0 3 * * 0' = Sundays 03:00 UTC).",
    )
    _connection_arguments(schedule)
    schedule.add_argument("--name", required=True, help="recurring run name (the identity of the schedule)")
    schedule.add_argument("--cron", default=None, help="6-field cron, seconds first")
    schedule.add_argument(
        "--pipeline-name",
        default=DEFAULT_SCHEDULE_PIPELINE,
        help=f"pipeline to schedule (default {DEFAULT_SCHEDULE_PIPELINE})",
    )
    schedule.add_argument(
        "--follow-latest",
        action="store_true",
        help="run the pipeline's latest version at each trigger (KFP backend >= 2.5; older ones pin the latest)",
    )
    change = schedule.add_mutually_exclusive_group()
    for action in ("disable", "enable", "delete"):
        change.add_argument(
            f"--{action}",
            dest="change",
            action="store_const",
            const=action,
            help=f"{action} the recurring run(s) called NAME"
            + (
                "; with --cron: schedule and enable it (a disabled schedule otherwise stays disabled)"
                if action == "enable"
                else ""
            ),
        )
    schedule.set_defaults(func=run_schedule, change=None)


def run_submit(args: argparse.Namespace) -> int:
    from pipelines.kfp_connection import connect, read_token
    from pipelines.submission import load_pipeline_spec, submit

    load_pipeline_spec(args.package)  # a missing file fails before any network
    client = connect(args.host, args.namespace, read_token(args.token_file))
    result = submit(
        client,
        args.package,
        parameters=args.params,
        pipeline_name=args.pipeline_name,
        experiment=args.experiment,
        namespace=args.namespace,
        run_name=args.run_name,
        pipeline_root=args.pipeline_root,
        service_account=args.service_account,
        ui_url=args.ui_url or args.host,
    )
    print(f"run id: {result.run_id}")
    print(f"run: {result.run_url}")
    print(f"pipeline version: {result.pipeline_version_id} (pipeline {result.pipeline_id})")
    return 0


def run_schedule(args: argparse.Namespace) -> int:
    from pipelines.cron import validate_cron
    from pipelines.kfp_connection import ClusterError, connect, read_token
    from pipelines.schedules import change_schedule, schedule

    with_cron = args.cron is not None
    if args.change is None and not with_cron:
        raise ClusterError("schedule needs --cron (or one of --disable, --enable, --delete)")
    if with_cron and args.change in ("disable", "delete"):
        raise ClusterError(f"--{args.change} takes no --cron")
    if with_cron:
        validate_cron(args.cron)  # a bad cron fails before any network
    client = connect(args.host, args.namespace, read_token(args.token_file))
    if not with_cron:
        result = change_schedule(client, args.name, args.change, args.namespace)
    else:
        result = schedule(
            client,
            args.name,
            args.cron,
            pipeline_name=args.pipeline_name,
            parameters=args.params,
            experiment=args.experiment,
            namespace=args.namespace,
            follow_latest=args.follow_latest,
            pipeline_root=args.pipeline_root,
            service_account=args.service_account,
            enable=args.change == "enable",
        )
    print(f"schedule {result.name}: {result.action}")
    for run_id in result.recurring_run_ids:
        print(f"recurring run id: {run_id}")
    if result.pipeline_version_id:
        print(f"pipeline version: {result.pipeline_version_id}")
    elif result.action in ("created", "replaced", "replaced by a concurrent call", "unchanged"):
        print("pipeline version: latest at each trigger")
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    return 0
