"""`abstractinator pipeline compile --out FILE`: the kfp IR YAML, with the cluster settings fixed now."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipelines.training import DEFAULT_IMAGE

    parser = subparsers.add_parser("compile", help="write the pipeline's IR YAML")
    parser.add_argument("--out", type=Path, required=True, help="YAML file to write")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="container image of every task (%(default)s)")
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu per training/eval task (0: CPU)")
    parser.add_argument("--cpu", default="4", help="CPU of training/eval tasks (%(default)s)")
    parser.add_argument("--memory", default="16G", help="memory of training/eval tasks (%(default)s)")
    parser.add_argument("--s3-secret", default="abstractinator-s3",
                        help="Kubernetes Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY ('': none)")
    parser.add_argument("--s3-endpoint-url", default=None, help="AWS_ENDPOINT_URL_S3 for every task")
    parser.add_argument("--mlflow-tracking-uri", default=None, help="MLFLOW_TRACKING_URI for every task")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from configs import ConfigError
    from pipelines.training import ClusterSettings, compile_pipeline

    if args.gpus < 0:
        raise ConfigError(f"--gpus {args.gpus}: must be >= 0")
    settings = ClusterSettings(image=args.image, gpus=args.gpus, cpu=args.cpu, memory=args.memory,
                               s3_secret=args.s3_secret or None, s3_endpoint_url=args.s3_endpoint_url,
                               mlflow_tracking_uri=args.mlflow_tracking_uri)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(str(args.out), settings)
    print(f"compiled {args.out} (image {args.image}, {args.gpus} GPU per training/eval task)")
    return 0
