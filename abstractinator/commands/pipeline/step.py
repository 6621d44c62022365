"""`abstractinator pipeline step NAME --params params.yaml`: one pipeline step, as the dvc stages run it.

NAME is a step of pipelines/step_table.py (prepare_data, stage1_pretrain, stage2_top_lm, evaluate, promote);
this module has one function of that name per step. Settings come from params.yaml (validated by `DvcParams`);
steps hand each other results/<step>.json (the step's typed result, pipelines/step_results.py, validated on
read; URIs and hashes: each step verifies what it reads against them), and
write the files dvc shows: results/eval_metrics.json (`dvc metrics show`) and results/<step>_curve.csv (`dvc
plots show`). A training step runs one trainer process per visible GPU under torchrun
(ABSTRACTINATOR_TRAINING_PROCESSES=N for N CPU processes) and resumes from its run folder's last checkpoint when
it has one. `promote` runs after `dvc repro` (it is not a dvc stage) and exits 3 when the gate refuses the
candidate."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pipelines.step_table import (
    EVALUATE,
    PREPARE_DATA,
    PROMOTE,
    STAGE1_PRETRAIN,
    STAGE2_TOP_LM,
    STEP_NAMES,
    curve_file,
    result_file,
    step_named,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("step", help="run one pipeline step with params.yaml (what dvc repro calls)")
    parser.add_argument("name", choices=STEP_NAMES)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="parameters (%(default)s)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="step results folder (%(default)s)")
    parser.set_defaults(func=run)


def _read(results: Path, step: str):
    """Step `step`'s result from results/<step>.json, validated by its model (pipelines/step_results.py): a
    missing file, or a missing, unknown or bad field, is one line."""
    from pipelines.step_table import read_result

    path = results / result_file(step)
    if not path.is_file():
        from configs import ConfigError

        raise ConfigError(f"{path}: missing; run the {step} step first")
    return read_result(step, path.read_bytes(), str(path))


def prepare_data(params, results: Path):
    from pipelines.step_prepare import prepare_step

    data, model_name = params.data, params.registry.model_name
    return prepare_step(params.run, data.source, model_name, False, data.include_eval_sets, data.out_dir).result


def _train(params, results: Path, step: str):
    from components.training.stages import join_uri
    from pipelines import artifacts
    from pipelines.step_train import train_stage_step

    stage = step_named(step).training_stage
    prepared = _read(results, PREPARE_DATA)
    base = _read(results, STAGE1_PRETRAIN).base_components_uri if step == STAGE2_TOP_LM else None
    result = train_stage_step(params.run, stage, prepared, base)
    curve = join_uri(params.run.stage_folder(prepared.data_hash, stage), "curve.csv")
    if artifacts.exists(curve):  # a copy where dvc plots reads it
        target = results / curve_file(step)
        if artifacts.is_s3(curve):
            artifacts.fetch_file(curve, target)
        else:
            shutil.copyfile(curve, target)
    return result


def stage1_pretrain(params, results: Path):
    return _train(params, results, STAGE1_PRETRAIN)


def stage2_top_lm(params, results: Path):
    return _train(params, results, STAGE2_TOP_LM)


def evaluate(params, results: Path):
    from components.infrastructure.atomic_files import write_text_atomic
    from pipelines.step_evaluate import evaluate_step

    evaluation = params.evaluate
    result = evaluate_step(
        params.run,
        _read(results, PREPARE_DATA),
        _read(results, STAGE2_TOP_LM),
        evaluation.tasks,
        evaluation.limit,
        evaluation.max_eval_bytes,
        evaluation.canterbury,
        model_name=params.registry.model_name,
    )
    write_text_atomic(results / "eval_metrics.json", json.dumps(result.metrics, indent=2, sort_keys=True))
    return result


def promote(params, results: Path):
    """The promote step on the results the earlier steps recorded; a failing MLflow is one line."""
    from components.infrastructure.redaction import one_line
    from components.infrastructure.tracking import mlflow_failures
    from components.registry.promote import RegistryError
    from pipelines.step_promote import promote_step

    data, stage1, stage2, evaluation = (
        _read(results, name) for name in (PREPARE_DATA, STAGE1_PRETRAIN, STAGE2_TOP_LM, EVALUATE)
    )
    try:
        return promote_step(params.run, params.registry.model_name, data, stage1, stage2, evaluation, params.gate)
    except mlflow_failures() as error:
        raise RegistryError(f"MLflow failed: {type(error).__name__}: {one_line(error)}") from None


# One function per step of the table, named by it (tests/test_pipeline_params.py checks there is one for each).
STEP_FUNCTIONS = {name: globals()[name] for name in STEP_NAMES}


def run(args: argparse.Namespace) -> int:
    from components.infrastructure.atomic_files import write_text_atomic
    from pipelines.dvc_params import load_dvc_params

    params = load_dvc_params(args.params)
    args.results.mkdir(parents=True, exist_ok=True)
    result = STEP_FUNCTIONS[args.name](params, args.results)  # the step's model (pipelines/step_results.py)
    target = args.results / result_file(args.name)
    write_text_atomic(target, result.model_dump_json(indent=2))  # a step killed mid-write leaves the old result
    print(f"{args.name}: {target}")
    return 3 if args.name == PROMOTE and not result.promoted else 0  # 3: the gate refused (as `registry promote`)
