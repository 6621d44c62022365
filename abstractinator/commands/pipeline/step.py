"""`abstractinator pipeline step NAME --params params.yaml`: one pipeline step, as the dvc stages run it.

Settings come from params.yaml (validated by `DvcParams`); steps hand each other results/<step>.json (URIs and
hashes; each step verifies what it reads against them), and write the files dvc shows:
results/eval_metrics.json (`dvc metrics show`) and results/<stage>_curve.csv (`dvc plots show`). A training
step runs one trainer process per visible GPU under torchrun (ABSTRACTINATOR_TRAINING_PROCESSES=N for N CPU
processes) and resumes from its run folder's last checkpoint when it has one. `promote` runs after `dvc repro`
(it is not a dvc stage) and exits 3 when the gate refuses the candidate."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

STEPS = ("prepare", "stage1", "stage2", "evaluate", "promote")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("step", help="run one pipeline step with params.yaml (what dvc repro calls)")
    parser.add_argument("name", choices=STEPS)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters (%(default)s)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="step results folder (%(default)s)")
    parser.set_defaults(func=run)


def _read(results: Path, step: str) -> dict:
    path = results / f"{step}.json"
    if not path.is_file():
        from configs import ConfigError

        raise ConfigError(f"{path}: missing; run the {step} step first")
    return json.loads(path.read_text())


def _promote(steps, params, prepared: dict, stage1: dict, stage2: dict, evaluation):
    """The promote step with the evidence and lineage the earlier steps recorded; a failing MLflow is one line."""
    from components.infrastructure.redaction import one_line
    from components.infrastructure.tracking import mlflow_failures
    from components.registry.promote import RegistryError

    try:
        return steps.promote_step(
            params.run,
            params.registry.model_name,
            stage2["checkpoint_uri"],
            stage2["checkpoint_hash"],
            evaluation,
            prepared["data_hash"],
            params.gate,
            stage1_run_id=stage1.get("mlflow_run_id"),
            stage2_run_id=stage2.get("mlflow_run_id"),
            data_uri=prepared["data_uri"],
        )
    except mlflow_failures() as error:
        raise RegistryError(f"MLflow failed: {type(error).__name__}: {one_line(error)}") from None


def run(args: argparse.Namespace) -> int:
    from components.infrastructure.atomic_files import write_text_atomic
    from components.training.stages import join_uri
    from pipelines import artifacts, steps
    from pipelines.dvc_params import load_dvc_params

    params = load_dvc_params(args.params)
    spec, results = params.run, args.results
    results.mkdir(parents=True, exist_ok=True)
    if args.name == "prepare":
        result = steps.prepare_step(
            spec,
            params.data.source,
            params.registry.model_name,
            False,
            params.data.include_eval_sets,
            params.data.out_dir,
        )
    elif args.name in ("stage1", "stage2"):
        prepared = _read(results, "prepare")
        base = _read(results, "stage1")["base_components_uri"] if args.name == "stage2" else None
        result = steps.train_stage_step(spec, args.name, prepared["data_uri"], prepared["data_hash"], base)
        curve = join_uri(spec.run_root(prepared["data_hash"]), args.name, "curve.csv")
        if artifacts.exists(curve):  # a copy where dvc plots reads it
            target = results / f"{args.name}_curve.csv"
            if artifacts.is_s3(curve):
                artifacts.fetch_file(curve, target)
            else:
                shutil.copyfile(curve, target)
    elif args.name == "evaluate":
        prepared, stage2 = _read(results, "prepare"), _read(results, "stage2")
        result = steps.evaluate_step(
            spec,
            stage2["checkpoint_uri"],
            prepared["data_uri"],
            prepared["data_hash"],
            params.evaluate.tasks,
            params.evaluate.limit,
            params.evaluate.max_eval_bytes,
            params.evaluate.canterbury,
            checkpoint_hash=stage2["checkpoint_hash"],
            model_name=params.registry.model_name,
        )
        write_text_atomic(results / "eval_metrics.json", json.dumps(result.metrics, indent=2, sort_keys=True))
    else:
        prepared, stage1, stage2 = _read(results, "prepare"), _read(results, "stage1"), _read(results, "stage2")
        evaluation = steps.read_evaluation(_read(results, "evaluate"), str(results / "evaluate.json"))
        result = _promote(steps, params, prepared, stage1, stage2, evaluation)
    if args.name == "prepare":  # only what the data is: the later stages depend on this file
        text = json.dumps({"data_uri": result.data_uri, "data_hash": result.data_hash}, indent=2)
    else:
        text = result.model_dump_json(indent=2)
    write_text_atomic(results / f"{args.name}.json", text)  # a step killed mid-write leaves the old result
    print(f"{args.name}: {results / f'{args.name}.json'}")
    return 3 if args.name == "promote" and not result.promoted else 0  # 3: the gate refused (as `registry promote`)
