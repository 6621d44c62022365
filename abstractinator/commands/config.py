"""`abstractinator config show PATH [--json] [--set key=value ...]`: print the validated, resolved config."""

from __future__ import annotations

import argparse
import json

import yaml

from configs import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="inspect experiment configs")
    actions = parser.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = actions.add_parser(
        "show", help="print the validated, fully resolved config (.py, .yaml, .json or a checkpoint)"
    )
    show.add_argument("path", help="config file or checkpoint")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    show.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set model.compressor_level_configs.0.codebook_size=512 or a flat seed name "
        "such as --set max_steps=20 (repeatable)",
    )
    show.set_defaults(func=show_config)


def show_config(args: argparse.Namespace) -> int:
    data = load_config(args.path, args.overrides).as_dict()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0
