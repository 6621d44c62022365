"""The pipeline's five tasks, each a kfp lightweight Python component named by its step (pipelines/step_table.py)
that calls the step's job module (pipelines/step_*.py) and hands on its result as ONE dict output, `result` (the
step's model in pipelines/step_results.py, validated by each task that reads it, which takes it as the parameter
named by the producing step: `prepare_data`, `stage1_pretrain`, ...), and its files as KFP artifacts
(pipelines/kfp_artifacts.py: Dataset, Model, Metrics, Markdown). No logic of their own.

kfp ships each function's source into the container, so every import is inside the function body; the image
(built from this repository, so `pipelines`, `components`, `model`, `configs` import) is chosen when the
pipeline is compiled: `make_tasks(image)`. No `from __future__ import annotations` here: kfp reads the
annotations as types.

`code_identity` (the compiled checkout's, components.infrastructure.provenance.code_identity) is an input of every
task: it is part of KFP's cache key, and each task refuses to run in an image holding other code
(pipelines.task_runtime.task_run_spec). Training and evaluation read the prepared data through prepare_data's
result (its content-addressed URI and data hash) rather than the Dataset artifact: KFP keys a cached task by the
names of its input artifacts (kubeflow/pipelines backend/src/v2/cacheutils/cache.go `GenerateCacheKey`; kfp.local
alike), and the data task, which asks the registry, is never cached, so an artifact input would make every run a
cache miss; that result holds the data alone, so it is equal whenever the data is. Training outputs feed the
later tasks as Model artifacts, which a cache hit reuses unchanged.
"""

from types import SimpleNamespace
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from pipelines.step_table import STEP_NAMES


def prepare_data(
    config: str,
    overrides: list,
    stage1_steps: int,
    stage2_steps: int,
    artifact_root: str,
    run_key: str,
    data_source: str,
    model_name: str,
    skip_if_unchanged: bool,
    include_eval_sets: bool,
    code_identity: str,
    dataset: Output[Dataset],
) -> NamedTuple("PrepareOutputs", result=dict, reason=str, Output=str):
    """Raw text -> byte shards (the `dataset` artifact, and under the artifact root, content addressed); `result`
    (pipelines.step_results.PrepareStepResult). The champion check's decision is control flow beside it, not
    part of it (the training tasks' cache key holds `result`): `Output` is "retrain", or "skip" when the
    registry's champion was made from this data, code and config (named `Output` because kfp.local 2.17.3
    resolves only `<task>-Output` references in dsl.If conditions), and `reason` says why (the pipeline's output)."""
    from pipelines.kfp_artifacts import save_dataset
    from pipelines.step_prepare import prepare_step
    from pipelines.task_runtime import task_failure, task_run_spec

    with task_failure():
        spec = task_run_spec(code_identity, config, overrides, stage1_steps, stage2_steps, artifact_root, run_key)
        prepared = prepare_step(spec, data_source, model_name, skip_if_unchanged, include_eval_sets)
        save_dataset(str(prepared.local_dir), dataset, prepared.result.data_hash)
    return prepared.result.handed_on(), prepared.reason, "skip" if prepared.unchanged else "retrain"


def stage1_pretrain(
    config: str,
    overrides: list,
    stage1_steps: int,
    artifact_root: str,
    run_key: str,
    code_identity: str,
    prepare_data: dict,
    checkpoint: Output[Model],
    base_components: Output[Model],
) -> NamedTuple("Stage1Outputs", result=dict):
    """Compressors + expanders (no top LM): the final checkpoint and the base components as Model artifacts;
    `result` (pipelines.step_results.TrainStepResult). It is not given stage2_steps: every input is part of KFP's
    cache key, and a run that changes only stage 2 reuses this task from the cache."""
    from pipelines.kfp_artifacts import save_model
    from pipelines.step_results import PrepareStepResult
    from pipelines.step_train import train_stage_step
    from pipelines.task_runtime import show_progress, task_failure, task_run_spec

    with task_failure():
        data = PrepareStepResult.read(prepare_data, "prepare_data")
        spec = task_run_spec(code_identity, config, overrides, stage1_steps, None, artifact_root, run_key)
        result = train_stage_step(spec, "stage1", data, progress=show_progress())
        save_model(result.checkpoint_uri, checkpoint, result.checkpoint_hash, stage="stage1")
        save_model(result.base_components_uri, base_components, result.base_components_hash, stage="stage1")
    return (result.handed_on(),)


def stage2_top_lm(
    config: str,
    overrides: list,
    stage1_steps: int,
    stage2_steps: int,
    artifact_root: str,
    run_key: str,
    code_identity: str,
    prepare_data: dict,
    stage1_pretrain: dict,
    base_components: Input[Model],
    checkpoint: Output[Model],
) -> NamedTuple("Stage2Outputs", result=dict):
    """The top LM on the frozen stage-1 base (verified against the hash stage 1 reported); `result`
    (pipelines.step_results.TrainStepResult)."""
    from pipelines.kfp_artifacts import save_model, verified_model_path
    from pipelines.step_results import PrepareStepResult, TrainStepResult
    from pipelines.step_train import train_stage_step
    from pipelines.task_runtime import show_progress, task_failure, task_run_spec

    with task_failure():
        data = PrepareStepResult.read(prepare_data, "prepare_data")
        stage1 = TrainStepResult.read(stage1_pretrain, "stage1_pretrain")
        spec = task_run_spec(code_identity, config, overrides, stage1_steps, stage2_steps, artifact_root, run_key)
        base = verified_model_path(base_components, stage1.base_components_hash)
        result = train_stage_step(spec, "stage2", data, base, progress=show_progress())
        save_model(result.checkpoint_uri, checkpoint, result.checkpoint_hash, stage="stage2")
    return (result.handed_on(),)


def evaluate(
    config: str,
    overrides: list,
    stage1_steps: int,
    stage2_steps: int,
    artifact_root: str,
    run_key: str,
    code_identity: str,
    prepare_data: dict,
    stage2_top_lm: dict,
    checkpoint: Input[Model],
    tasks: list,
    limit: int,
    max_eval_bytes: int,
    canterbury: bool,
    model_name: str,
    scores: Output[Metrics],
    report: Output[Markdown],
) -> NamedTuple("EvaluateOutputs", result=dict):
    """Bits per byte, code use, reconstruction, optional lm-eval tasks: every metric in `scores`, the report as
    Markdown (and report.json under the artifact root); `model_name`'s champion scored on the same bytes and the
    attestation of both, signed with the key only this task holds (pipelines/paired_evaluation.py); `result`
    (pipelines.step_results.EvaluateStepResult)."""
    from pipelines.kfp_artifacts import log_metrics, save_report, verified_model_path
    from pipelines.step_evaluate import evaluate_step
    from pipelines.step_results import PrepareStepResult, TrainStepResult
    from pipelines.task_runtime import task_failure, task_run_spec

    with task_failure():
        data = PrepareStepResult.read(prepare_data, "prepare_data")
        stage2 = TrainStepResult.read(stage2_top_lm, "stage2_top_lm")
        spec = task_run_spec(code_identity, config, overrides, stage1_steps, stage2_steps, artifact_root, run_key)
        path = verified_model_path(checkpoint, stage2.checkpoint_hash)
        result = evaluate_step(
            spec,
            data,
            stage2,
            tasks,
            limit or None,
            max_eval_bytes or None,
            canterbury,
            model_name=model_name,
            checkpoint_path=path,
        )
        log_metrics(scores, result.metrics)
        save_report(result.report_uri, report)
    return (result.handed_on(),)


def promote(
    config: str,
    overrides: list,
    stage1_steps: int,
    stage2_steps: int,
    artifact_root: str,
    run_key: str,
    code_identity: str,
    model_name: str,
    checkpoint: Input[Model],
    prepare_data: dict,
    stage1_pretrain: dict,
    stage2_top_lm: dict,
    evaluate: dict,
    image: str,
    gate_rules: dict,
) -> NamedTuple("PromoteOutputs", result=dict):
    """Register the model version (alias challenger) with its evidence (the evaluation's result: the report,
    checked against its hash, the evaluation run) and lineage (the data, the training runs and the image that
    made it), then run the gate with `gate_rules` (every GateRules field, one dict); `result`
    (pipelines.step_results.PromoteStepResult). Every result read and the rules are validated before any work:
    a missing or unknown key or a bad value fails the task in one line and registers nothing."""
    from components.registry.gate_rules import rules_from_parameter
    from pipelines.kfp_artifacts import verified_model_path
    from pipelines.step_promote import promote_step
    from pipelines.step_results import EvaluateStepResult, PrepareStepResult, TrainStepResult
    from pipelines.task_runtime import task_failure, task_run_spec

    with task_failure():
        rules = rules_from_parameter(gate_rules)
        data = PrepareStepResult.read(prepare_data, "prepare_data")
        stage1 = TrainStepResult.read(stage1_pretrain, "stage1_pretrain")
        stage2 = TrainStepResult.read(stage2_top_lm, "stage2_top_lm")
        evaluation = EvaluateStepResult.read(evaluate, "evaluate")
        spec = task_run_spec(code_identity, config, overrides, stage1_steps, stage2_steps, artifact_root, run_key)
        verified_model_path(checkpoint, stage2.checkpoint_hash)  # the lineage input is the checkpoint registered
        result = promote_step(spec, model_name, data, stage1, stage2, evaluation, rules, image=image)
    return (result.handed_on(),)


def make_tasks(image: str) -> SimpleNamespace:
    """The tasks as kfp components running in `image` (kfp is in the image: not installed at run time): one per
    step of pipelines/step_table.py, the function of this module named by it, an attribute of that name."""
    return SimpleNamespace(
        **{name: dsl.component(globals()[name], base_image=image, install_kfp_package=False) for name in STEP_NAMES}
    )
