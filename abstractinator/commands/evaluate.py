"""`abstractinator evaluate` (and the seed's `python evaluate.py`): lm-eval tasks and/or the compression report.

Seed style, lm-eval tasks only (results printed as lm-eval's table):
    evaluate --model hier_ae --model_args checkpoint=PATH[,device=cpu] [--tasks T ...] [--limit N]
    evaluate --model hf --model_args pretrained=NAME                    (lm-eval's own hf model)
Pipeline style, the full report (components/evaluation/evaluate.py):
    evaluate --checkpoint PATH --compression [--data DIR] [--text-file PATH] [--tasks T ...] --out DIR
Without --tasks the seven standard tasks run (DEFAULT_TASKS; as <task>_local when the hub is offline).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="lm-eval tasks (hier_ae or hf) and the compression report (bits per byte vs gzip/bzip2/xz/zstd)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_evaluate_arguments(parser)
    parser.set_defaults(func=run)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from components.evaluation.lm_eval_tasks import DEFAULT_TASKS

    parser.add_argument("--model", choices=["hier_ae", "hf"], default="hier_ae", help="lm-eval model type")
    parser.add_argument(
        "--model_args",
        "--model-args",
        dest="model_args",
        nargs="+",
        default=None,
        help="lm-eval model args, e.g. checkpoint=PATH,device=cpu (PATH: file, folder, s3://, "
        "models:/name@alias); several words are joined with commas, as in the seed",
    )
    parser.add_argument("--config", default=None, help="config for hier_ae (default: the checkpoint's own)")
    parser.add_argument(
        "--tasks", nargs="+", default=None, help="lm-eval tasks (default: " + " ".join(DEFAULT_TASKS) + ")"
    )
    parser.add_argument("--num_fewshot", "--num-fewshot", dest="num_fewshot", type=int, default=None)
    parser.add_argument("--batch_size", "--batch-size", dest="batch_size", default="8")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--limit", type=int, default=None, help="documents per lm-eval task")
    parser.add_argument("--checkpoint", default=None, help="checkpoint for the compression report")
    parser.add_argument("--compression", action="store_true", help="score val/test/Canterbury and files")
    parser.add_argument("--no-canterbury", action="store_true", help="skip the Canterbury texts")
    parser.add_argument("--data", type=Path, default=None, help="prepared shards (default: the config's)")
    parser.add_argument(
        "--text-file",
        "--text_file",
        dest="text_files",
        type=Path,
        action="append",
        default=[],
        help="a file to score (repeatable); named by its file name in the report",
    )
    parser.add_argument(
        "--max-eval-bytes",
        dest="max_eval_bytes",
        type=int,
        default=None,
        help="cap on the tokens scored per split and the bytes per text file (default: whole splits, the first "
        "1 MB of each text file)",
    )
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: ./evaluation)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    parser.add_argument(
        "--quality-benchmark",
        type=Path,
        default=None,
        help="a bench/quality.py JSON: adds its plain byte transformer to the bits-per-byte chart",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument(
        "--write-local-tasks",
        action="store_true",
        help="only fetch the offline lm-eval data and write the <task>_local YAMLs; print their "
        "folder (lm-eval's --include_path)",
    )


def _model_args_checkpoint(model_args: str | None) -> str | None:
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(model_args or "").get("checkpoint")


def run(args: argparse.Namespace) -> int:
    from components.evaluation.evaluate import EvaluationError, use_offline_hub_settings
    from components.evaluation.lm_eval_tasks import DEFAULT_TASKS

    use_offline_hub_settings()
    args.model_args = ",".join(args.model_args) if args.model_args else None
    if args.write_local_tasks:
        from components.evaluation.evaluate import local_tasks_dir

        print(local_tasks_dir(args.data).resolve())
        return 0
    report_mode = args.checkpoint is not None or args.compression or args.text_files
    if not report_mode:
        return _run_lm_eval_only(args, list(args.tasks or DEFAULT_TASKS))
    if args.config:  # the report builds the model from the checkpoint's own config; X would be silently ignored
        raise EvaluationError(
            f"--config {args.config}: the compression report uses the checkpoint's own config; "
            "--config applies to lm-eval tasks alone (drop --checkpoint/--compression/--text-file)"
        )
    checkpoint = args.checkpoint or _model_args_checkpoint(args.model_args)
    if checkpoint is None:
        raise EvaluationError("the compression report needs --checkpoint PATH")
    from pydantic import ValidationError

    from components.evaluation.evaluate import EvaluateParams, evaluate
    from components.training.checkpoints import ensure_writable_folder
    from configs.loading import describe_validation_error

    # Every input and the output folder are checked before anything is scored (which takes minutes).
    for text_file in args.text_files:
        _check_text_file(text_file)
    out_dir = args.out or Path("evaluation")
    ensure_writable_folder(out_dir, "the evaluation report", EvaluationError)
    if not str(args.batch_size).isdigit():
        raise EvaluationError(f"--batch_size {args.batch_size!r}: the report needs a whole number")
    try:
        params = EvaluateParams(
            checkpoint=checkpoint,
            out_dir=out_dir,
            data_dir=args.data,
            compression=args.compression or not args.tasks,
            canterbury=not args.no_canterbury,
            tasks=args.tasks or [],
            limit=args.limit,
            num_fewshot=args.num_fewshot,
            max_eval_bytes=args.max_eval_bytes,
            text_files=args.text_files,
            device=args.device,
            batch_size=int(args.batch_size),
            tracking=not args.no_tracking,
            quality_benchmark=args.quality_benchmark,
        )
    except ValidationError as error:
        raise EvaluationError(f"evaluate: {describe_validation_error(error)}") from None
    result = evaluate(params)
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(result.report_md.read_text())
        print(f"report: {result.report_json} ({len(result.plots)} plots in {result.out_dir})")
    return 0


def _check_text_file(path: Path) -> None:
    from components.evaluation.evaluate import EvaluationError

    if not path.exists():
        raise EvaluationError(f"--text-file {path}: no such file")
    if not path.is_file():
        raise EvaluationError(f"--text-file {path}: not a file")
    if path.stat().st_size == 0:
        raise EvaluationError(f"--text-file {path}: empty, nothing to score")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise EvaluationError(f"--text-file {path}: cannot be read ({error.strerror})") from None


def _run_lm_eval_only(args: argparse.Namespace, tasks: list[str]) -> int:
    from lm_eval.utils import make_table

    from components.evaluation.evaluate import EvaluationError, run_lm_eval

    model_args = args.model_args
    if args.model == "hier_ae":
        if _model_args_checkpoint(model_args) is None:
            raise EvaluationError("--model hier_ae needs --model_args checkpoint=PATH")
        if args.config and "config=" not in model_args:
            model_args = f"{model_args},config={args.config}"
    output = run_lm_eval(
        args.model,
        model_args,
        tasks,
        args.data,
        args.limit,
        args.num_fewshot,
        args.batch_size,
        None if args.device == "auto" else args.device,
    )
    if args.json:
        print(json.dumps(output["results"], indent=2, default=str))
    else:
        print(make_table(output))
    return 0
