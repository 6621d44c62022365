"""Flags shared by several subcommands: the pipeline parameters (`pipeline run-local`), the gate rules
(`pipeline run-local`, `registry promote`), and the bounded number types that every float flag (and the gate's
integer rule) parses with, so that NaN, infinity and out-of-range values are refused by the parser in one line,
before any work or connection (tests/test_hardening.py finds every float flag and checks it)."""

from __future__ import annotations

import argparse
import math

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


def bounded_float(low: float, high: float, low_open: bool = False, high_open: bool = False, off: bool = False):
    """An argparse type: a finite float in [low, high] (`low_open`/`high_open`: that end excluded); with `off`,
    "0" or "none" gives None (a rule turned off)."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float | None:
        if off and text.strip().lower() in ("none", "0", "0.0"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        above_low = value > low if low_open else value >= low
        below_high = value < high if high_open else value <= high
        if not (math.isfinite(value) and above_low and below_high):
            raise argparse.ArgumentTypeError(
                f"must be a finite number in {shown}{' or 0 (off)' if off else ''} (got {text})"
            )
        return value

    return parse


def bounded_int(low: int, high: int):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}] (got {value})")
        return value

    return parse


def _rule_type(name: str, info, optional: bool):
    """The parse type of the flag of GateRules field `name`: its bounds from the field's own constraints (ge, gt,
    le, lt), finite always; an optional field is off at 0."""
    kind = float if optional else info.annotation
    if kind not in (int, float):
        return kind
    low, low_open, high, high_open = 0.0, False, math.inf, False
    for constraint in info.metadata:
        if getattr(constraint, "ge", None) is not None:
            low, low_open = constraint.ge, False
        if getattr(constraint, "gt", None) is not None:
            low, low_open = constraint.gt, True
        if getattr(constraint, "le", None) is not None:
            high, high_open = constraint.le, False
        if getattr(constraint, "lt", None) is not None:
            high, high_open = constraint.lt, True
    if kind is int:
        return bounded_int(int(low) + low_open, int(high) - high_open)
    return bounded_float(low, high, low_open, high_open, off=optional)


def add_gate_arguments(parser: argparse.ArgumentParser, fields: tuple[str, ...] | None = None) -> None:
    """One flag per GateRules field (all of them, or `fields`), generated from the model, so that no rule exists
    that no flag reaches: its name (`metric` is --gate-metric), type (bounded: `_rule_type`), default and
    description."""
    for name, info in GateRules.model_fields.items():
        if fields is not None and name not in fields:
            continue
        optional = type(None) in getattr(info.annotation, "__args__", ())
        kind = _rule_type(name, info, optional)
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
