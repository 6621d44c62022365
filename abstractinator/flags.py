"""Flags shared by several subcommands: the pipeline parameters (`pipeline run-local`) and the gate rules
(`pipeline run-local`, `registry promote`)."""

from __future__ import annotations

import argparse

from components.registry.gate_rules import GATE_RULES_PARAMETER, GateRules


def add_run_arguments(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """The pipeline parameters as flags (defaults: the pipeline's)."""
    d = {
        "config": "ci",
        "stage1_steps": 20,
        "stage2_steps": 20,
        "artifact_root": "artifacts",
        "model_name": "abstractinator",
        **(defaults or {}),
    }
    parser.add_argument("--config", default=d["config"], help="config name or path (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)"
    )
    parser.add_argument("--data-source", default="default", help="corpus (default: the embedded one)")
    parser.add_argument("--stage1-steps", type=int, default=d["stage1_steps"], help="stage 1 steps")
    parser.add_argument("--stage2-steps", type=int, default=d["stage2_steps"], help="stage 2 steps")
    parser.add_argument(
        "--artifact-root",
        default=d["artifact_root"],
        help="s3://bucket/prefix or a local folder (default: %(default)s)",
    )
    parser.add_argument("--run-key", default="", help="run folder name (default: derived from config/data/code)")
    parser.add_argument("--model-name", default=d["model_name"], help="registered model (default: %(default)s)")
    parser.add_argument(
        "--no-skip-unchanged",
        action="store_true",
        help="retrain even if the champion has the same data, code and config",
    )
    parser.add_argument("--no-eval-sets", action="store_true", help="prepare no eval sets (Canterbury etc.)")
    parser.add_argument("--eval-task", dest="eval_tasks", action="append", default=[], help="lm-eval task")
    parser.add_argument("--eval-limit", type=int, default=0, help="examples per lm-eval task (0: all)")
    parser.add_argument("--eval-max-bytes", type=int, default=0, help="bytes per eval split (0: all)")
    parser.add_argument("--no-canterbury", action="store_true", help="skip the Canterbury texts in evaluation")
    add_gate_arguments(parser)


def gate_flag(field: str) -> str:
    return "--gate-metric" if field == "metric" else "--" + field.replace("_", "-")


def _optional_float(text: str) -> float | None:
    """A rule that can be off: 0 or "none" turns it off."""
    return None if text.strip().lower() in ("none", "0", "0.0") else float(text)


def add_gate_arguments(parser: argparse.ArgumentParser, fields: tuple[str, ...] | None = None) -> None:
    """One flag per GateRules field (all of them, or `fields`), generated from the model, so that no rule exists
    that no flag reaches: its name (`metric` is --gate-metric), type, default and description."""
    for name, info in GateRules.model_fields.items():
        if fields is not None and name not in fields:
            continue
        optional = type(None) in getattr(info.annotation, "__args__", ())
        kind = _optional_float if optional else info.annotation
        off = " (0: off)" if optional else ""
        parser.add_argument(
            gate_flag(name),
            dest=f"gate_{name}",
            type=kind,
            default=info.default,
            metavar=name.upper(),
            help=f"{info.description}{off} (default: %(default)s)",
        )


def gate_rules_from(args: argparse.Namespace) -> GateRules:
    """The rules the flags of add_gate_arguments gave (a field without a flag keeps its default)."""
    given = {name: getattr(args, f"gate_{name}") for name in GateRules.model_fields if hasattr(args, f"gate_{name}")}
    return GateRules(**given)


def pipeline_arguments(args: argparse.Namespace) -> dict:
    """The kfp pipeline parameters from the flags of add_run_arguments."""
    return {
        "config": args.config,
        "overrides": list(args.overrides),
        "data_source": args.data_source,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "artifact_root": args.artifact_root,
        "run_key": args.run_key,
        "model_name": args.model_name,
        GATE_RULES_PARAMETER: gate_rules_from(args).as_parameter(),
        "skip_if_unchanged": not args.no_skip_unchanged,
        "include_eval_sets": not args.no_eval_sets,
        "eval_tasks": list(args.eval_tasks),
        "eval_limit": args.eval_limit,
        "eval_max_bytes": args.eval_max_bytes,
        "eval_canterbury": not args.no_canterbury,
    }
