"""The pipeline's steps, each with ONE name: the table that every place naming a step reads.

A step's name is the kfp component function (pipelines/kfp_tasks.py; kfp shows it as the task `stage1-pretrain`,
`kfp_task_name`), the dvc stage and its command `abstractinator pipeline step NAME` (dvc.yaml, checked against
this table by tests/test_pipeline_params.py), the step's function in abstractinator/commands/pipeline/step.py and
its result: one typed value (`result`, a pipelines/step_results.py model), the kfp task's dict output
`result` and the dvc step's `results/NAME.json` (a training step's curve: `results/NAME_curve.csv`); a step that
reads another's result takes it as the parameter named by that step. Tests read this table instead of repeating
lists. `training_stage` is not a step name: it is the stage config the step trains
(components/training/stages.py; its folder `runs/<stage1_key>/stage1` or `runs/<run_key>/stage2`).

Adding a step: a row here with its result model (pipelines/step_results.py), its function in
pipelines/kfp_tasks.py and abstractinator/commands/pipeline/step.py (both named by the row), its job module
(pipelines/step_*.py), and a stage in dvc.yaml when `dvc_stage`.
"""

from __future__ import annotations

from typing import NamedTuple

from pipelines.step_results import (
    EvaluateStepResult,
    PrepareStepResult,
    PromoteStepResult,
    StepResult,
    TrainingStage,
    TrainStepResult,
)

# The name of every kfp task's one dict output, its result (kfp_tasks.py's NamedTuple fields spell it).
RESULT_OUTPUT = "result"


class PipelineStep(NamedTuple):
    name: str
    summary: str
    dvc_stage: bool  # promote is not: it changes the registry, state outside the workspace dvc cannot restore
    result: type[StepResult]
    training_stage: TrainingStage | None = None


STEPS: tuple[PipelineStep, ...] = (
    PipelineStep(
        "prepare_data", "raw text -> byte shards; the champion check of scheduled runs", True, PrepareStepResult
    ),
    PipelineStep("stage1_pretrain", "compressors + expanders (no top LM)", True, TrainStepResult, "stage1"),
    PipelineStep("stage2_top_lm", "the top LM on the frozen stage-1 base", True, TrainStepResult, "stage2"),
    PipelineStep(
        "evaluate", "the new model and the champion scored on the same bytes, signed", True, EvaluateStepResult
    ),
    PipelineStep("promote", "register the version and run the registry gate", False, PromoteStepResult),
)
STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
PREPARE_DATA, STAGE1_PRETRAIN, STAGE2_TOP_LM, EVALUATE, PROMOTE = STEP_NAMES
DVC_STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS if step.dvc_stage)
TRAINING_STEPS: dict[TrainingStage, str] = {step.training_stage: step.name for step in STEPS if step.training_stage}


def step_named(name: str) -> PipelineStep:
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"no pipeline step {name!r} (steps: {', '.join(STEP_NAMES)})")


def read_result(name: str, value: dict | str | bytes, origin: str) -> StepResult:
    """Step `name`'s result, validated by its model (StepResultError in one line when it does not validate)."""
    return step_named(name).result.read(value, origin)


def kfp_task_name(name: str) -> str:
    """The task name kfp gives the component `name` in the compiled spec: lower case, every run of other
    characters a hyphen (kfp 2.x kfp/dsl/utils.py `maybe_rename_for_k8s`)."""
    import re

    return re.sub("-+", "-", re.sub("[^-0-9a-z]", "-", name.lower())).lstrip("-").rstrip("-")


def result_file(name: str) -> str:
    """The step's result under the results folder of the dvc steps (URIs and hashes the next steps verify)."""
    return f"{name}.json"


def curve_file(name: str) -> str:
    """A training step's curve under the results folder (`dvc plots show` reads it)."""
    return f"{name}_curve.csv"
