"""`abstractinator registry promote|status|rollback|history`: the MLflow registry gate by hand."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipelines.commands import add_gate_arguments

    parser = subparsers.add_parser("registry", help="the model registry gate: promote, status, rollback, history")
    commands = parser.add_subparsers(dest="registry_command", required=True, metavar="REGISTRY_COMMAND")
    for name, help_text in (
        ("promote", "run the gate for a model version (default: the challenger)"),
        ("status", "aliases and versions with metrics and decisions"),
        ("rollback", "give champion back to the version the current one was promoted over"),
        ("history", "every gate decision, oldest first"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--model-name", default="abstractinator", help="registered model (default: %(default)s)")
        sub.add_argument("--tracking-uri", default=None,
                         help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the --project's local store)")
        sub.add_argument("--project", default=None, help="project name of the local store (e.g. abstractinator-ci)")
        sub.add_argument("--json", action="store_true", help="print JSON")
        if name == "promote":
            sub.add_argument("--version", default=None, help="model version (default: the challenger alias)")
            sub.add_argument("--force", metavar="WHY", default=None,
                             help="override the gate (recorded with WHY, e.g. 'hotfix, approved by ...')")
            add_gate_arguments(sub)
        sub.set_defaults(func=run)


def tracking_uri_of(args: argparse.Namespace) -> str:
    from components.tracking import resolve_tracking_uri

    return args.tracking_uri or resolve_tracking_uri(args.project)


def run(args: argparse.Namespace) -> int:
    from components.promote import RegistryError

    try:
        return _run(args)
    except RegistryError as error:  # one line for the user, like the CLI's other user errors
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from components import promote as registry
    from pipelines.commands import gate_rules_from
    from pipelines.registry_view import history_table, status_table

    client = registry.client_for(tracking_uri_of(args))
    if args.registry_command == "status":
        state = registry.status(client, args.model_name)
        print(json.dumps(state, indent=2) if args.json else status_table(state))
        return 0
    if args.registry_command == "history":
        records = registry.history(client, args.model_name)
        print(json.dumps(records, indent=2) if args.json else history_table(records))
        return 0
    if args.registry_command == "rollback":
        outcome = registry.rollback(client, args.model_name)
    else:
        version = args.version
        if version is None:
            challenger = registry.alias_version(client, args.model_name, registry.CHALLENGER)
            if challenger is None:
                raise registry.RegistryError(f"model {args.model_name!r} has no challenger; pass --version")
            version = str(challenger.version)
        outcome = registry.promote(client, args.model_name, version, gate_rules_from(args),
                                   force=args.force is not None, forced_by=args.force or "")
    if args.json:
        print(outcome.model_dump_json(indent=2))
    else:
        print(f"{outcome.action}: v{outcome.version}; champion {outcome.champion_before} -> {outcome.champion_after}")
        print("  " + "; ".join(outcome.reasons))
    return 0 if outcome.promoted or args.registry_command == "promote" else 1
