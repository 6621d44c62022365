"""The five kfp components: lightweight Python components that call pipelines.steps and return its result's
fields as outputs (URIs, content hashes, decisions). No logic of their own.

kfp ships each function's source into the container, so every import is inside the function body; the image
(built from this repository, so `pipelines`, `components`, `model`, `configs` import) is chosen when the
pipeline is compiled: `make_components(image)`. No `from __future__ import annotations` here: kfp reads
the annotations as types.
"""


from dataclasses import dataclass
from typing import NamedTuple

from kfp import dsl


def prepare_data(config: str, overrides: list, stage1_steps: int, stage2_steps: int, artifact_root: str,
                 run_key: str, data_source: str, model_name: str, skip_if_unchanged: bool,
                 include_eval_sets: bool) -> NamedTuple("PrepareOutputs", data_uri=str, data_hash=str,
                                                         config_hash=str, git_commit=str, reason=str, Output=str):
    """Raw text -> byte shards in the artifact root. `Output` is "retrain", or "skip" when the registry's
    champion was made from this data, code and config (named `Output` because kfp.local 2.17.3 resolves only
    `<task>-Output` references in dsl.If conditions)."""
    from pipelines.steps import RunSpec, prepare_step

    spec = RunSpec(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key or None)
    result = prepare_step(spec, data_source, model_name, skip_if_unchanged, include_eval_sets)
    return (result.data_uri, result.data_hash, result.config_hash, result.git_commit,
            result.reason, "skip" if result.unchanged else "retrain")


def stage1_pretrain(config: str, overrides: list, stage1_steps: int, stage2_steps: int, artifact_root: str,
                    run_key: str, data_uri: str, data_hash: str) -> NamedTuple(
                        "Stage1Outputs", checkpoint_uri=str, checkpoint_hash=str, base_components_uri=str,
                        base_components_hash=str, mlflow_run_id=str):
    """Compressors + expanders (no top LM); writes the base components."""
    from pipelines.steps import RunSpec, train_stage_step

    spec = RunSpec(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key or None)
    result = train_stage_step(spec, "stage1", data_uri, data_hash)
    return (result.checkpoint_uri, result.checkpoint_hash, result.base_components_uri or "",
            result.base_components_hash or "", result.mlflow_run_id or "")


def stage2_top_lm(config: str, overrides: list, stage1_steps: int, stage2_steps: int, artifact_root: str,
                  run_key: str, data_uri: str, data_hash: str, base_components_uri: str,
                  base_components_hash: str) -> NamedTuple("Stage2Outputs", checkpoint_uri=str, checkpoint_hash=str,
                                                           mlflow_run_id=str):
    """The top LM on the frozen stage-1 base."""
    from pipelines.steps import RunSpec, train_stage_step

    spec = RunSpec(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key or None)
    result = train_stage_step(spec, "stage2", data_uri, data_hash, base_components_uri)
    return result.checkpoint_uri, result.checkpoint_hash, result.mlflow_run_id or ""


def evaluate(config: str, overrides: list, stage1_steps: int, stage2_steps: int, artifact_root: str, run_key: str,
             checkpoint_uri: str, checkpoint_hash: str, data_uri: str, data_hash: str, tasks: list,
             limit: int, max_eval_bytes: int, canterbury: bool) -> NamedTuple(
                 "EvaluateOutputs", report_uri=str, report_hash=str, metrics=dict):
    """Bits per byte, code use, reconstruction, optional lm-eval tasks; the report goes to the artifact root."""
    from pipelines.steps import RunSpec, evaluate_step

    spec = RunSpec(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key or None)
    result = evaluate_step(spec, checkpoint_uri, data_uri, data_hash, tasks, limit or None, max_eval_bytes or None,
                           canterbury)
    return result.report_uri, result.report_hash, result.metrics


def promote(config: str, overrides: list, stage1_steps: int, stage2_steps: int, artifact_root: str, run_key: str,
            model_name: str, checkpoint_uri: str, checkpoint_hash: str, metrics: dict, data_hash: str,
            report_uri: str, gate_metric: str, min_improvement: float, max_bits_per_byte: float,
            min_live_code_share: float) -> NamedTuple("PromoteOutputs", version=str, action=str, champion=str,
                                                      reasons=str):
    """Register the model version (alias challenger) and run the registry gate."""
    from components.gate_rules import GateRules
    from pipelines.steps import RunSpec, promote_step

    spec = RunSpec(config=config, overrides=overrides, stage1_steps=stage1_steps, stage2_steps=stage2_steps,
                   artifact_root=artifact_root, run_key=run_key or None)
    rules = GateRules(metric=gate_metric, min_improvement=min_improvement,
                      max_bits_per_byte=max_bits_per_byte if max_bits_per_byte > 0 else None,
                      min_live_code_share=min_live_code_share)
    result = promote_step(spec, model_name, checkpoint_uri, checkpoint_hash, metrics, data_hash, report_uri, rules)
    return result.version, result.action, result.champion or "", "; ".join(result.reasons)


STEP_FUNCTIONS = (prepare_data, stage1_pretrain, stage2_top_lm, evaluate, promote)


@dataclass(frozen=True)
class Components:
    prepare_data: object
    stage1_pretrain: object
    stage2_top_lm: object
    evaluate: object
    promote: object


def make_components(image: str) -> Components:
    """The five kfp components running in `image` (kfp itself is in the image: not installed at run time)."""
    built = {fn.__name__: dsl.component(fn, base_image=image, install_kfp_package=False) for fn in STEP_FUNCTIONS}
    return Components(**built)
