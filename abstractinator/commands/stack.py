"""`abstractinator stack up|down|status`: SeaweedFS + PostgreSQL + MLflow on loopback (`make up` / `make down`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("stack", help="start/stop the full local stack (S3, PostgreSQL, MLflow)")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".data/stack"),
        help="data, logs, pids, generated keys (%(default)s; git-ignored)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from devtools.local_stack import LocalStack

    stack = LocalStack(args.state_dir)
    if args.action == "up":
        state = stack.start()
        print(f"S3 (SeaweedFS)  {state['s3']['endpoint_url']}  bucket {state['s3']['bucket']}")
        print(f"MLflow          {state['mlflow']['uri']}  (PostgreSQL on 127.0.0.1:{state['postgres']['port']})")
        print(f"use it:         source {stack.state_dir / 'env'}")
        print(
            "then:           abstractinator pipeline run-local --config ci --artifact-root s3://abstractinator/pipeline"
        )
        return 0
    if args.action == "down":
        print("stopped" if stack.stop() else "the local stack was not running")
        return 0
    state = stack.running()
    print(json.dumps(state, indent=2) if state else "the local stack is not running")
    return 0
