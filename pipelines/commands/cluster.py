"""`abstractinator pipeline submit|schedule`: the cluster half of the pipeline CLI (pipelines/cluster_cli.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from pipelines.cluster_cli import register_cluster_commands

    register_cluster_commands(subparsers)
