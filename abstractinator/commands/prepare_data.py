"""`abstractinator prepare-data --source SRC --out DIR`: raw text -> byte shards + manifest + eval sets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-data",
        help="turn a corpus into train/val/test byte shards with a manifest (idempotent)",
        description="Sources: 'default' (embedded public-domain corpus), a local file/dir/glob, "
        "s3://bucket/prefix, or a Hugging Face dataset (hf:org/name).",
    )
    parser.add_argument("--source", default="default", help="corpus to prepare (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the data home's)")
    parser.add_argument("--shard-bytes", type=int, default=None, help="maximum bytes per shard")
    parser.add_argument("--text-column", default="text", help="text column of a Hugging Face dataset")
    parser.add_argument("--hf-config", default=None, help="Hugging Face dataset config name")
    parser.add_argument("--hf-split", default="train", help="Hugging Face dataset split to read")
    parser.add_argument("--no-eval-sets", action="store_true", help="skip the held-out evaluation texts")
    parser.add_argument(
        "--force",
        action="store_true",
        help="prepare into a non-empty folder that prepare-data did not make (refused by default)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from components.data.data_sources import DataSourceError
    from components.data.prepare_data import PrepareDataParams, prepare_data
    from components.infrastructure.settings import get_settings
    from configs.loading import describe_validation_error

    fields = {
        "source": args.source,
        "out_dir": args.out or get_settings().default_prepared_dir,
        "text_column": args.text_column,
        "hf_config": args.hf_config,
        "hf_split": args.hf_split,
        "include_eval_sets": not args.no_eval_sets,
    }
    if args.shard_bytes is not None:
        fields["shard_bytes"] = args.shard_bytes
    try:
        params = PrepareDataParams(**fields)
    except ValidationError as error:
        raise DataSourceError(f"prepare-data: {describe_validation_error(error)}") from None
    result = prepare_data(params, force=args.force)
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
        return 0
    print(result.summary())
    return 0
