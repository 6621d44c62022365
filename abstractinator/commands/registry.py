"""`abstractinator registry promote|status|rollback|history|serve|keygen`: the MLflow registry gate by hand,
serving a version only as its signed attestation vouches for it (`serve`), and the evaluation's signing key pair
for a cluster (`keygen`: files only, the private key never printed).

Exit codes: 0 promoted, forced, already champion, rolled back (and status/history shown); 3 the gate refused
the version (a script can gate on it); 2 an error (unreachable or failing MLflow, unknown model or version, lock
not taken), always one line on stderr."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MAX_LOCK_WAIT_SECONDS = 86400.0  # a day: longer is a typo, never a gate worth waiting for


def register(subparsers: argparse._SubParsersAction) -> None:
    from abstractinator.flags import add_gate_arguments, bounded_float

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
        sub.add_argument(
            "--tracking-uri",
            default=None,
            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the --project's local store)",
        )
        sub.add_argument("--project", default=None, help="project name of the local store (e.g. abstractinator-ci)")
        sub.add_argument("--json", action="store_true", help="print JSON")
        if name in ("promote", "rollback"):
            sub.add_argument(
                "--lock-timeout",
                type=bounded_float(0, MAX_LOCK_WAIT_SECONDS),
                default=120.0,
                metavar="SECONDS",
                help="wait this long for a live gate holding the lock (default: %(default)s)",
            )
        if name == "promote":
            sub.add_argument("--version", default=None, help="model version (default: the challenger alias)")
            sub.add_argument(
                "--force",
                metavar="WHY",
                default=None,
                help="override the gate (recorded with WHY, e.g. 'hotfix, approved by ...')",
            )
            add_gate_arguments(sub)
        sub.set_defaults(func=run)
    serve = commands.add_parser(
        "serve",
        help="serve a version with `mlflow models serve`, from a private copy checked against its signed attestation",
        description="Downloads the version's registered model once into a private folder, checks its weights and "
        "code there against the evaluation's signed attestation, writes a pyfunc model from those checked files "
        "alone (a fresh MLmodel: the registered one is not attested) and runs `mlflow models serve --env-manager "
        "local` on it. A file that differs from the attestation is refused (exit 2) and nothing is served. It "
        "prints the gate's decision on the version first; weights a rollback demoted are never served, and a "
        "version the gate did not promote (refused, pending, never gated) only with --allow-ungated.",
    )
    serve.add_argument("model_uri", metavar="MODEL_URI", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    serve.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    serve.add_argument("--project", default=None, help="project name of the local store (e.g. abstractinator-ci)")
    serve.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    serve.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the checked model folder to DIR (new) and serve nothing (e.g. to build a serving image)",
    )
    serve.add_argument(
        "--allow-ungated",
        action="store_true",
        help="serve a version the gate did not promote (refused or never gated), saying so; never rolled-back weights",
    )
    serve.set_defaults(func=run)
    keygen = commands.add_parser(
        "keygen",
        help="make the evaluation's Ed25519 signing key pair for a cluster (docs/cluster.md, step 3)",
        description="Writes DIR/ed25519.pem (the private key, mode 0600: the Secret abstractinator-eval-signing-key) "
        "and DIR/ed25519.pub.pem (the settings ConfigMap's ABSTRACTINATOR_EVAL_PUBLIC_KEY). Never overwrites; "
        "never prints the private key.",
    )
    keygen.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the two files (made 0700)")
    keygen.set_defaults(func=run)


def tracking_uri_of(args: argparse.Namespace) -> str:
    from components.infrastructure.tracking import resolve_tracking_uri

    return args.tracking_uri or resolve_tracking_uri(args.project)


EXIT_REFUSED = 3


def run(args: argparse.Namespace) -> int:
    from components.infrastructure.redaction import one_line, redact
    from components.infrastructure.tracking import mlflow_failures
    from components.registry.promote import RegistryError

    if args.registry_command == "keygen":
        return _keygen(args.out)
    uri = ""
    try:
        uri = tracking_uri_of(args)
        return _run(args, uri)
    except mlflow_failures() as error:  # a failing or unreachable server: the user's to fix, in one line
        pending = getattr(error, "pending_decision", "")
        raise RegistryError(
            f"MLflow at {redact(uri)} failed: {type(error).__name__}: {one_line(error)}"
            + (f"; {pending}" if pending else "")
        ) from None


def _keygen(folder: Path) -> int:
    from components.infrastructure.signing import generate_cluster_key

    private_path, public_path = generate_cluster_key(folder)
    print(f"private key: {private_path} (mode 0600; only the evaluate task's Secret may hold it)")
    print(f"public key:  {public_path} (the settings ConfigMap's ABSTRACTINATOR_EVAL_PUBLIC_KEY)")
    return 0


def _run(args: argparse.Namespace, uri: str) -> int:
    from abstractinator.flags import gate_rules_from
    from components.registry import promote as registry
    from pipelines.registry_view import history_table, status_table

    client = registry.client_for(uri)
    if args.registry_command == "serve":
        return _serve(client, args)
    if args.registry_command == "status":
        state = registry.status(client, args.model_name)
        print(json.dumps(state, indent=2) if args.json else status_table(state))
        return 0
    if args.registry_command == "history":
        records = registry.history(client, args.model_name)
        print(json.dumps(records, indent=2) if args.json else history_table(records))
        return 0
    if args.registry_command == "rollback":
        outcome = registry.rollback(client, args.model_name, lock_timeout_s=args.lock_timeout)
    else:
        version = args.version
        registry.require_model(client, args.model_name)
        if version is None:
            challenger = registry.alias_version(client, args.model_name, registry.CHALLENGER)
            if challenger is None:
                raise registry.RegistryError(f"model {args.model_name!r} has no challenger; pass --version")
            version = str(challenger.version)
        outcome = registry.promote(
            client,
            args.model_name,
            version,
            gate_rules_from(args),
            force=args.force is not None,
            forced_by=args.force or "",
            lock_timeout_s=args.lock_timeout,
        )
    if args.json:
        print(outcome.model_dump_json(indent=2))
    else:
        print(f"{outcome.action}: v{outcome.version}; champion {outcome.champion_before} -> {outcome.champion_after}")
        print("  " + "; ".join(outcome.reasons))
    return 0 if outcome.promoted else EXIT_REFUSED


def serve_command(folder: Path, host: str, port: int) -> list[str]:
    """The real `mlflow models serve` on the checked local folder, in this environment (the model's code is the
    attested copy inside the folder; no virtualenv or conda is built)."""
    import sys

    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(folder), "--env-manager", "local"] + [
        "--host",
        host,
        "--port",
        str(port),
    ]


def serve_environment() -> dict[str, str]:
    """This environment with the interpreter's bin folder first on PATH: `mlflow models serve` execs `uvicorn`
    through a shell (mlflow/pyfunc/backend.py), which a venv not on PATH would not find."""
    import os
    import sys

    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}


def _serve(client, args: argparse.Namespace) -> int:
    import shutil
    import subprocess
    import tempfile

    from components.infrastructure.model_reference import parse_model_reference
    from components.registry import promote as registry
    from components.registry.verified_loading import serving_decision, verified_serving_folder

    try:
        reference = parse_model_reference(args.model_uri)
    except ValueError as error:
        raise registry.RegistryError(str(error)) from None
    registry.require_model(client, reference.name)
    if reference.alias:
        found = registry.alias_version(client, reference.name, reference.alias)
        if found is None:
            raise registry.RegistryError(f"model {reference.name!r} has no alias {reference.alias!r}")
        version = str(found.version)
    else:
        version = reference.version
    if args.out is not None and args.out.exists():
        raise registry.RegistryError(f"{args.out}: already exists; give a new folder")
    print(serving_decision(client, reference.name, version, args.allow_ungated))  # refuses banned/ungated weights
    private = Path(tempfile.mkdtemp(prefix="abstractinator-serve-"))  # mode 0700: no other user swaps a file
    try:
        served = verified_serving_folder(client, reference.name, version, private)
        if args.out is not None:
            shutil.copytree(served, args.out)
            print(f"v{version} of {reference.name}: checked against its signed attestation, written to {args.out}")
            print(f"serve it with: mlflow models serve -m {args.out} --env-manager local")
            return 0
        print(f"serving v{version} of {reference.name} from {served} (checked against its signed attestation)")
        return subprocess.call(serve_command(served, args.host, args.port), env=serve_environment())
    finally:
        shutil.rmtree(private, ignore_errors=True)
