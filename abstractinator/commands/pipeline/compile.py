"""`abstractinator pipeline compile --out FILE`: the kfp IR YAML. What the tasks ask of the cluster (image, GPUs,
CPU, memory, retries, timeouts) is fixed now; where its services are is read by each task at run time from the
ConfigMap `abstractinator-pipeline-settings` (pipelines/training.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipelines.training import DEFAULT_IMAGE, ClusterSettings

    defaults = ClusterSettings()
    parser = subparsers.add_parser("compile", help="write the pipeline's IR YAML")
    parser.add_argument("--out", type=Path, required=True, help="YAML file to write")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="container image of every task (%(default)s)")
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu per training/eval task (0: CPU)")
    parser.add_argument("--cpu", default="4", help="CPU of training/eval tasks (%(default)s)")
    parser.add_argument("--memory", default="16G", help="memory of training/eval tasks (%(default)s)")
    parser.add_argument(
        "--settings-config-map",
        default=defaults.settings_config_map,
        help="ConfigMap the tasks read their settings from (%(default)s; '': none)",
    )
    parser.add_argument(
        "--s3-secret",
        default=defaults.s3_secret,
        help="Secret holding AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (%(default)s; '': none)",
    )
    parser.add_argument(
        "--mlflow-auth-secret",
        default=defaults.mlflow_auth_secret,
        help="Secret holding MLFLOW_TRACKING_USERNAME / _PASSWORD (%(default)s; '': none)",
    )
    parser.add_argument(
        "--training-retries",
        type=int,
        default=defaults.training_retries,
        help="retries of a failed training task, each resuming (%(default)s)",
    )
    parser.add_argument(
        "--training-timeout",
        type=int,
        default=defaults.training_timeout_s,
        metavar="SECONDS",
        help="timeout of a training task (%(default)s)",
    )
    parser.add_argument(
        "--pipeline-root",
        default=None,
        help="this pipeline's own pipeline root (e.g. s3://bucket/kfp?region=us-east-1), recorded in the YAML and "
        "sent by `pipeline submit` / `schedule` with every run instead of the kfp-launcher's shared default",
    )
    parser.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="fix ABSTRACTINATOR_S3_ENDPOINT_URL in the YAML instead of reading the ConfigMap's",
    )
    parser.add_argument(
        "--mlflow-tracking-uri",
        default=None,
        help="fix MLFLOW_TRACKING_URI in the YAML instead of reading the ConfigMap's "
        "(no credentials: those come from the MLflow auth Secret)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from pydantic import ValidationError

    from configs import ConfigError
    from configs.loading import describe_validation_error
    from pipelines.training import ClusterSettings, compile_pipeline, gpu_hours_bound

    if args.gpus < 0:
        raise ConfigError(f"--gpus {args.gpus}: must be >= 0")
    if args.training_retries < 0 or args.training_timeout < 1:
        raise ConfigError("--training-retries must be >= 0 and --training-timeout >= 1")
    for flag, value, secret in (
        ("--mlflow-tracking-uri", args.mlflow_tracking_uri, "--mlflow-auth-secret"),
        ("--s3-endpoint-url", args.s3_endpoint_url, "--s3-secret"),
        ("--pipeline-root", args.pipeline_root, "--s3-secret"),
    ):
        if value and (urlsplit(value).username or urlsplit(value).password):
            raise ConfigError(
                f"{flag}: holds credentials (user:password@), which would be written into the "
                f"compiled YAML; put them in the Secret named by {secret}"
            )
    try:
        settings = ClusterSettings(
            image=args.image,
            gpus=args.gpus,
            cpu=args.cpu,
            memory=args.memory,
            settings_config_map=args.settings_config_map or None,
            s3_secret=args.s3_secret or None,
            mlflow_auth_secret=args.mlflow_auth_secret or None,
            training_retries=args.training_retries,
            training_timeout_s=args.training_timeout,
            s3_endpoint_url=args.s3_endpoint_url,
            mlflow_tracking_uri=args.mlflow_tracking_uri,
            pipeline_root=args.pipeline_root,
        )
    except ValidationError as error:  # a value no flag check above covers, e.g. --pipeline-root's scheme
        raise ConfigError(describe_validation_error(error)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(str(args.out), settings)
    where = (
        f"settings from ConfigMap {settings.settings_config_map}"
        if settings.settings_config_map
        else "no settings ConfigMap"
    )
    print(f"compiled {args.out} (image {args.image}, {args.gpus} GPU per training/eval task, {where})")
    print(
        f"a failing run holds at most {gpu_hours_bound(settings):g} GPU hours "
        f"({settings.training_retries} retries of each training task, deadlines {settings.training_timeout_s} s "
        f"per training attempt and {settings.evaluation_timeout_s} s for the evaluation); a Retry of a failed run "
        "in the KFP UI can add as much again (docs/cluster.md)"
    )
    return 0
