"""`abstractinator train` (and the seed's `python train.py`): run or resume one training stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train (stage 1, stage 2 with --load_base_from, or joint) or resume from a checkpoint",
        description="With only --resume_from_checkpoint, the config stored in the checkpoint is used.",
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (.py exporting exp_config, .yaml, .json) or checkpoint")
    parser.add_argument(
        "--resume_from_checkpoint",
        "--resume-from-checkpoint",
        dest="resume_from_checkpoint",
        default=None,
        help="checkpoint file, checkpoint folder (its latest) or s3:// URI to continue from",
    )
    parser.add_argument(
        "--load_base_from",
        "--load-base-from",
        dest="load_base_from",
        default=None,
        help="stage 2: base components (compressors + expanders) to load and freeze",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable), e.g. --set optim.max_steps=20 (or the flat seed name max_steps=20)",
    )
    parser.add_argument("--data", type=Path, default=None, help="prepared shards (default: the config's dataset)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from components.infrastructure.redaction import redact_data
    from components.training.train import TrainParams, train
    from configs import ConfigError, load_config
    from configs.loading import apply_overrides, validate_config

    if args.config is None and args.resume_from_checkpoint is None:
        raise ConfigError("train needs --config or --resume_from_checkpoint")
    if args.config is not None:
        config = load_config(args.config, args.overrides)
    else:  # the checkpoint's own config: a file, a folder (its latest) or s3://
        from components.training.checkpoints import load_checkpoint

        location = args.resume_from_checkpoint
        stored = load_checkpoint(location).get("exp_config")
        if stored is None:
            raise ConfigError(f"{location}: checkpoint holds no exp_config; pass --config")
        config = apply_overrides(validate_config(stored, origin=location), args.overrides, f"{location} with --set")
    result = train(
        TrainParams(
            config=config,
            data_dir=args.data,
            resume_from_checkpoint=args.resume_from_checkpoint,
            load_base_from=args.load_base_from,
            progress=not args.no_progress,
            tracking=not args.no_tracking,
        )
    )
    if result.rank != 0:
        return 0 if not result.interrupted else 143
    if args.json:
        print(json.dumps(redact_data(result.model_dump(mode="json")), indent=2))
        return 0 if not result.interrupted else 143
    print(f"{result.stage}: {result.steps} steps; final checkpoint {result.final_checkpoint}")
    if result.base_components:
        print(f"base components: {result.base_components}")
    for key in ("val/bits_per_byte", "val/reconstruction_bits_per_byte", "val/loss"):
        if key in result.final_metrics:
            print(f"{key}: {result.final_metrics[key]:.4f}")
    if result.tracking_uri:
        from components.infrastructure.tracking import ui_command

        print(f"MLflow run {result.mlflow_run_id}: {ui_command(result.tracking_uri)}")
    return 0 if not result.interrupted else 143
