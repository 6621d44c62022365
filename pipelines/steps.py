"""The five pipeline steps as plain functions: what the kfp components, `abstractinator pipeline step ...` and
the dvc stages all call. Each step reads URIs (+ content hashes) and writes its artifacts under the run's
folder of the artifact root (an s3:// prefix or a local folder):

    <artifact_root>/data/<data_hash>/                   prepared shards + manifest (content addressed)
    <artifact_root>/runs/<run_key>/stage1/...           checkpoints, base_components.pt, curve.csv
    <artifact_root>/runs/<run_key>/stage2/...           checkpoints, curve.csv
    <artifact_root>/runs/<run_key>/eval/...             report.json, report.md, plots, metrics.json

The logic lives in components/ (prepare_data, train, evaluate, promote); this module only maps a run's
settings onto those functions and moves artifacts.
"""

from __future__ import annotations

import csv
import json
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from components.infrastructure.logs import get_logger
from components.infrastructure.provenance import code_identity, git_commit
from components.infrastructure.settings import get_settings
from components.registry.gate_rules import GateRules
from components.training.stages import StageConfigs, join_uri, load_pipeline_config, run_key, stage_configs
from configs import ExpConfig
from configs.errors import UserError
from configs.loading import describe_validation_error
from pipelines import artifacts

log = get_logger(__name__)


class RunSpec(BaseModel):
    """What every step of one pipeline run is told (kfp parameters, CLI flags, params.yaml alike), and what follows
    from it, each computed once per spec: the loaded config (a config file is Python, run once), the code identity
    and git commit (each a git call), the stage configs and run folder of a data hash. Frozen, so that what was
    derived cannot go stale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str = Field("ci", description="Config name (configs/<name>_config.py) or path.")
    overrides: list[str] = Field(default_factory=list, description="key=value config overrides.")
    stage1_steps: int = Field(20, ge=1)
    stage2_steps: int = Field(20, ge=1)
    artifact_root: str = Field("artifacts", description="s3://bucket/prefix or a local folder.")
    run_key: str | None = Field(None, description="Run folder name; None: derived from config, data, code.")

    _stages: dict[str, StageConfigs] = PrivateAttr(default_factory=dict)

    @cached_property
    def exp_config(self) -> ExpConfig:
        return load_pipeline_config(self.config, self.overrides)

    @cached_property
    def code_identity(self) -> str:
        return code_identity()

    @cached_property
    def git_commit(self) -> str:
        return git_commit()

    def stages(self, data_hash: str) -> StageConfigs:
        """Both stage configs of this run on the data `data_hash` (its run key derives from config, data, code)."""
        if data_hash not in self._stages:
            key = self.run_key or run_key(
                self.exp_config, self.stage1_steps, self.stage2_steps, data_hash, self.code_identity
            )
            self._stages[data_hash] = stage_configs(
                self.exp_config, self.stage1_steps, self.stage2_steps, self.artifact_root, key
            )
        return self._stages[data_hash]

    def run_root(self, data_hash: str) -> str:
        """<artifact_root>/runs/<run_key>: the folder of every artifact of this run on the data `data_hash`."""
        return self.stages(data_hash).run_root


def _cache_dir(*parts: str) -> Path:
    path = get_settings().data_home / "pipeline-cache" / Path(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_data(data_uri: str, data_hash: str) -> Path:
    """Prepared data on this machine (fetched into the cache unless it already holds this data hash), verified:
    every file against the manifest, the manifest against `data_hash`."""
    from components.data.shards import ManifestError, verify

    if not artifacts.is_s3(data_uri):
        manifest = verify(Path(data_uri))
        if manifest.data_hash != data_hash:
            raise artifacts.StorageError(f"{data_uri}: holds data {manifest.data_hash}, expected {data_hash}")
        return Path(data_uri)
    directory = _cache_dir("data", data_hash)
    try:
        if verify(directory).data_hash == data_hash:
            return directory
    except ManifestError:
        pass
    artifacts.fetch_dir(data_uri, directory)
    manifest = verify(directory)
    if manifest.data_hash != data_hash:
        raise artifacts.StorageError(f"{data_uri}: holds data {manifest.data_hash}, expected {data_hash}")
    return directory


# -- prepare ---------------------------------------------------------------------------------------------------
class PrepareStepResult(BaseModel):
    data_uri: str
    data_hash: str
    config_hash: str
    code_identity: str
    git_commit: str
    run_root: str
    unchanged: bool = Field(description="The registry's champion was made from this data, code and config.")
    local_dir: str = Field(description="The prepared folder on this machine.")
    reason: str


def prepare_step(
    spec: RunSpec,
    data_source: str,
    model_name: str = "",
    skip_if_unchanged: bool = True,
    include_eval_sets: bool = True,
    prepared_dir: Path | None = None,
) -> PrepareStepResult:
    """Prepare `data_source` (into `prepared_dir`, default: the data home's folder for it), publish it to an
    s3:// artifact root, and check whether the registry's champion already has this data, code and config."""
    from components.data.prepare_data import PrepareDataParams, prepare_data
    from components.data.train_data import prepared_dir_for

    prepared = prepare_data(
        PrepareDataParams(
            source=data_source,
            out_dir=prepared_dir or prepared_dir_for(data_source),
            include_eval_sets=include_eval_sets,
        )
    )
    data_hash = prepared.data_hash
    if artifacts.is_s3(spec.artifact_root):
        data_uri = join_uri(spec.artifact_root, "data", data_hash)
        if not artifacts.exists(join_uri(data_uri, "manifest.json")):
            artifacts.publish_dir(prepared.out_dir, data_uri)
    else:
        data_uri = str(prepared.out_dir)
    stages, code = spec.stages(data_hash), spec.code_identity
    unchanged, reason = False, "retraining check off"
    if skip_if_unchanged and model_name:
        unchanged, reason = _champion_unchanged(model_name, spec, data_hash, stages.config_hash, code)
    log.info("prepare_step_done", data_uri=data_uri, data_hash=data_hash, unchanged=unchanged, reason=reason)
    return PrepareStepResult(
        data_uri=data_uri,
        data_hash=data_hash,
        config_hash=stages.config_hash,
        code_identity=code,
        git_commit=spec.git_commit,
        run_root=spec.run_root(data_hash),
        unchanged=unchanged,
        reason=reason,
        local_dir=str(prepared.out_dir),
    )


def _champion_unchanged(model_name: str, spec: RunSpec, data_hash: str, config_hash: str, code: str):
    """Whether the champion was made from this data, code (code identity, not the git commit: an uncommitted
    edit is a change) and config, as its signed attestation says (never its editable tags)."""
    from components.infrastructure.tracking import resolve_tracking_uri
    from components.registry.gate_evidence import EvidenceError, read_evidence
    from components.registry.promote import CHAMPION, alias_version, client_for

    if code == "unknown":
        return False, "the code identity is unknown: retraining"
    client = client_for(resolve_tracking_uri(spec.exp_config.project_name))
    champion = alias_version(client, model_name, CHAMPION)
    if champion is None:
        return False, f"model {model_name!r} has no champion yet"
    try:
        attested = read_evidence(client, model_name, champion).attestation
    except EvidenceError as error:
        return False, f"the champion's evidence does not verify ({error}): retraining"
    current = {"data_hash": data_hash, "code_identity": code, "config_hash": config_hash}
    changed = [key for key, value in current.items() if getattr(attested, key) != value]
    if changed:
        return False, "changed since the champion: " + ", ".join(changed)
    return True, "data, code and config equal the champion's: nothing to retrain"


# -- training stages ---------------------------------------------------------------------------------------------
class StageStepResult(BaseModel):
    stage: str
    checkpoint_uri: str
    checkpoint_hash: str
    base_components_uri: str | None
    base_components_hash: str | None
    mlflow_run_id: str | None
    final_metrics: dict[str, float]


def _write_curve(run_id: str | None, tracking_uri: str | None, target_uri: str) -> None:
    """Training curve (step, loss, val bpb) from MLflow as CSV next to the checkpoints (dvc plots read it)."""
    if not run_id or not tracking_uri:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    rows: dict[int, dict[str, float]] = {}
    for key, column in (
        ("loss/total_avg_accum", "loss"),
        ("val/bits_per_byte", "val_bits_per_byte"),
        ("val/reconstruction_bits_per_byte", "val_reconstruction_bits_per_byte"),
    ):
        for metric in client.get_metric_history(run_id, key):
            rows.setdefault(metric.step, {})[column] = metric.value
    with tempfile.TemporaryDirectory(prefix="abstractinator-curve-") as tmp:
        path = Path(tmp) / "curve.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "loss", "val_bits_per_byte", "val_reconstruction_bits_per_byte"])
            for step in sorted(rows):
                row = rows[step]
                writer.writerow(
                    [step, *(row.get(c, "") for c in ("loss", "val_bits_per_byte", "val_reconstruction_bits_per_byte"))]
                )
        artifacts.publish_file(path, target_uri)


def _hash_of(uri: str) -> str:
    with tempfile.TemporaryDirectory(prefix="abstractinator-hash-") as tmp:
        return artifacts.file_hash(artifacts.fetch_file(uri, Path(tmp) / Path(uri).name))


def train_stage_step(
    spec: RunSpec,
    stage: Literal["stage1", "stage2"],
    data_uri: str,
    data_hash: str,
    base_components_uri: str | None = None,
    tracking: bool = True,
    progress: bool = False,
) -> StageStepResult:
    """Train one stage into the run folder. A stage that finds a checkpoint of its own there (a retried task, a
    preempted pod, a rerun) resumes from it: the run folder is keyed by config, steps, data and code, so that
    checkpoint is this very run's. With several training processes (pipelines.torchrun.training_processes:
    the pod's GPUs, or ABSTRACTINATOR_TRAINING_PROCESSES) the trainer runs under torchrun, one process per
    device, each on batch_size / N windows, so the global batch and the result are the one-process run's."""
    from components.infrastructure.tracking import tag_kfp_run
    from components.training.checkpoints import CheckpointStore
    from components.training.train import TrainParams
    from pipelines.torchrun import run_training, training_processes

    stages = spec.stages(data_hash)
    config = stages.stage1 if stage == "stage1" else stages.stage2
    if stage == "stage2" and not base_components_uri:
        raise ValueError("stage2 needs the base components of stage 1 (base_components_uri)")
    processes = training_processes()
    if processes > 1:
        if config.batch_size % processes:
            from configs import ConfigError

            raise ConfigError(f"batch_size {config.batch_size} does not split over {processes} training processes")
        config = config.updated(batch_size=config.batch_size // processes)
    resume = CheckpointStore(config.checkpoint_dir).latest()
    if resume:
        log.info("stage_resumes", stage=stage, checkpoint=resume)
    result = run_training(
        TrainParams(
            config=config,
            data_dir=local_data(data_uri, data_hash),
            resume_from_checkpoint=resume,
            load_base_from=base_components_uri if stage == "stage2" else None,
            progress=progress,
            tracking=tracking,
        ),
        gpus=processes,
    )
    if not result.complete:
        raise RuntimeError(f"{stage} stopped at step {result.steps} before the end: resume it")
    tag_kfp_run(result.mlflow_run_id, result.tracking_uri)
    _write_curve(result.mlflow_run_id, result.tracking_uri, join_uri(spec.run_root(data_hash), stage, "curve.csv"))
    base = result.base_components
    return StageStepResult(
        stage=stage,
        checkpoint_uri=result.final_checkpoint,
        checkpoint_hash=_hash_of(result.final_checkpoint),
        base_components_uri=base,
        base_components_hash=_hash_of(base) if base else None,
        mlflow_run_id=result.mlflow_run_id,
        final_metrics=result.final_metrics,
    )


# -- evaluate ----------------------------------------------------------------------------------------------------
class EvaluateStepResult(BaseModel):
    """What the evaluation hands the promote step, as ONE typed value: the kfp `evaluation` dict output and
    results/evaluate.json alike, serialised once here and validated on read (`read_evaluation`)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # a NaN metric survives the JSON

    report_uri: str = Field(description="report.json under the run's eval folder.")
    report_hash: str = Field(description="Its sha256: the promote step refuses a report that differs.")
    metrics: dict[str, float]
    mlflow_run_id: str | None = Field(None, description="The run the evaluation logged its metrics to.")


class StepResultError(UserError):
    """A step's result handed to the next step does not validate: one line naming the field."""


def read_evaluation(value: dict | str | bytes, origin: str = "evaluation") -> EvaluateStepResult:
    """The evaluation's result from the kfp dict output or the JSON of results/evaluate.json; a missing or
    unknown key, or a bad value, raises StepResultError (the promote step then registers nothing)."""
    try:
        if isinstance(value, str | bytes):
            return EvaluateStepResult.model_validate_json(value)
        return EvaluateStepResult.model_validate(value)
    except ValidationError as error:
        raise StepResultError(f"{origin}: {describe_validation_error(error)}") from None


def evaluate_step(
    spec: RunSpec,
    checkpoint_uri: str,
    data_uri: str,
    data_hash: str,
    tasks: list[str] | None = None,
    limit: int | None = None,
    max_eval_bytes: int | None = None,
    canterbury: bool = True,
    tracking: bool = True,
    checkpoint_hash: str | None = None,
    model_name: str = "",
) -> EvaluateStepResult:
    """Evaluate the checkpoint (verified against `checkpoint_hash` first, when given) into the run's eval folder:
    its weights as the slim `model.pt` that gets registered, scored beside `model_name`'s current champion on the
    same bytes, and the signed attestation of both (pipelines/paired_evaluation.py). Each evaluation is a fresh
    MLflow run."""
    from components.evaluation.evaluate import EvaluateParams, evaluate
    from components.infrastructure.tracking import resolve_tracking_uri, tag_kfp_run
    from components.registry.attestation import WEIGHTS_FILE
    from components.registry.pyfunc_model import slim_checkpoint
    from pipelines.paired_evaluation import attest

    eval_uri = join_uri(spec.run_root(data_hash), "eval")
    local = not artifacts.is_s3(eval_uri)
    with tempfile.TemporaryDirectory(prefix="abstractinator-eval-") as tmp:
        out_dir = Path(eval_uri) if local else Path(tmp) / "report"
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = artifacts.fetch_file(checkpoint_uri, Path(tmp) / "checkpoint.pt")
        if checkpoint_hash and artifacts.file_hash(checkpoint) != checkpoint_hash:
            raise artifacts.StorageError(f"{checkpoint_uri}: content hash differs from the one training reported")
        weights = slim_checkpoint(checkpoint, out_dir / WEIGHTS_FILE)  # the very file scored, attested, registered
        params = EvaluateParams(
            checkpoint=str(weights),
            out_dir=out_dir,
            data_dir=local_data(data_uri, data_hash),
            tasks=tasks or [],
            limit=limit,
            max_eval_bytes=max_eval_bytes,
            canterbury=canterbury,
            tracking=tracking,
        )
        result = evaluate(params)
        tracking_uri = resolve_tracking_uri(spec.exp_config.project_name)
        signed = attest(
            model_name,
            tracking_uri,
            params,
            result,
            weights,
            spec.code_identity,
            spec.stages(data_hash).config_hash,
        )
        if result.mlflow_run_id:  # the evaluation run shows both models' numbers and carries the evidence
            _log_paired(tracking_uri, result.mlflow_run_id, signed, result.report_md)
        (out_dir / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
        report_hash = artifacts.file_hash(result.report_json)
        if not local:
            artifacts.publish_dir(out_dir, eval_uri, last=("report.json",))
    tag_kfp_run(result.mlflow_run_id, get_settings().mlflow_tracking_uri)
    return EvaluateStepResult(
        report_uri=join_uri(eval_uri, "report.json"),
        report_hash=report_hash,
        metrics=result.metrics,
        mlflow_run_id=result.mlflow_run_id,
    )


def _log_paired(tracking_uri: str, run_id: str, signed: list[Path], report_md: Path) -> None:
    import math
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from components.registry.attestation import read_verified

    client = MlflowClient(tracking_uri)
    for path in [*signed, report_md]:
        client.log_artifact(run_id, str(path), "evaluation")
    paired = read_verified(Path(report_md).parent).paired
    if paired is not None:
        now = int(time.time() * 1000)
        values = {f"paired/{k}": float(v) for k, v in paired.model_dump().items() if isinstance(v, int | float)}
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items() if math.isfinite(v)])


def _kfp_run_tag() -> dict[str, str]:
    from components.infrastructure.tracking import kfp_run_id

    run = kfp_run_id()
    return {"kfp_run_id": run} if run else {}


# -- promote -----------------------------------------------------------------------------------------------------
def _registered_result(client, model_name: str, weights_sha256: str, experiment: str, tracking_uri: str):
    """The earlier decision on these very weights, when a version of `model_name` holds them already (a run whose
    training and evaluation came from KFP's cache), so they are not registered and judged a second time. Found by
    the candidate runs' immutable `challenger_weights_sha256` param and confirmed by each version's signed
    attestation (a run anyone can make with that param, or an edited tag, does not count)."""
    from mlflow.exceptions import MlflowException

    from components.registry.gate_evidence import EvidenceError, attestation_of
    from components.registry.promote import CHAMPION, alias_version

    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"params.challenger_weights_sha256 = '{weights_sha256}'", max_results=1000
    )
    run_ids = {run.info.run_id for run in runs}
    try:
        versions = [v for v in client.search_model_versions(f"name='{model_name}'") if v.run_id in run_ids]
    except MlflowException:  # no such model yet (some stores raise rather than return nothing)
        return None
    attested = []
    for candidate in sorted(versions, key=lambda v: int(v.version)):
        try:
            attestation = attestation_of(client, candidate)
        except EvidenceError:
            continue
        if attestation.model_name == model_name and attestation.challenger_weights_sha256 == weights_sha256:
            attested.append(candidate)
    if not attested:
        return None
    version = attested[0]
    champion = alias_version(client, model_name, CHAMPION)
    decision = (version.tags or {}).get("gate.decision", "registered")
    return PromoteStepResult(
        model=model_name,
        version=str(version.version),
        action="already_registered",
        promoted=champion is not None and str(champion.version) == str(version.version),
        champion=str(champion.version) if champion else None,
        tracking_uri=tracking_uri,
        reasons=[
            f"weights {weights_sha256[:12]} are version {version.version} already ({decision}): not registered again"
        ],
    )


class PromoteStepResult(BaseModel):
    model: str
    version: str
    action: str
    promoted: bool
    champion: str | None
    reasons: list[str]
    tracking_uri: str


def promote_step(
    spec: RunSpec,
    model_name: str,
    checkpoint_uri: str,
    checkpoint_hash: str,
    evaluation: EvaluateStepResult,
    data_hash: str,
    rules: GateRules,
    stage1_run_id: str | None = None,
    stage2_run_id: str | None = None,
    image: str = "",
    kfp_run_id: str = "",
    data_uri: str = "",
) -> PromoteStepResult:
    """Log the weights the evaluation scored (its `model.pt`, from the stage-2 checkpoint) as a pyfunc model with
    its evidence (the report, checked against the evaluation's `report_hash`, and the signed attestation) and
    lineage, register it as `challenger`, run the gate (which trusts only the attestation)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from components.infrastructure.tracking import resolve_tracking_uri
    from components.registry.attestation import ATTESTATION_FILE, PAIRED_BITS_FILE, SIGNATURE_FILE, WEIGHTS_FILE
    from components.registry.gate_evidence import record_evidence, sha256_of
    from components.registry.promote import client_for, promote, register_version, version_tags
    from components.registry.pyfunc_model import log_pyfunc_model

    stages = spec.stages(data_hash)
    config = stages.stage2
    tracking_uri = resolve_tracking_uri(config.project_name)
    provenance = {
        "data_hash": data_hash,
        "git_commit": spec.git_commit,
        "config_hash": stages.config_hash,
        "code_identity": spec.code_identity,
    }
    lineage = {
        "stage1_run_id": stage1_run_id,
        "stage2_run_id": stage2_run_id,
        "eval_run_id": evaluation.mlflow_run_id,
        "data_hash": data_hash,
        "code_identity": provenance["code_identity"],
        "config_hash": stages.config_hash,
        "image": image,
        "kfp_run_id": kfp_run_id or _kfp_run_tag().get("kfp_run_id", ""),
        "report_sha256": evaluation.report_hash,
    }
    extra = {
        "checkpoint_uri": checkpoint_uri,
        "checkpoint_hash": checkpoint_hash,
        "report_uri": evaluation.report_uri,
        "config": spec.config,
        "overrides": " ".join(spec.overrides)[:5000],
        **{key: value for key, value in lineage.items() if value},
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(config.project_name or "Default")
    client = client_for(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="abstractinator-promote-") as tmp:
        local = artifacts.fetch_file(checkpoint_uri, Path(tmp) / "checkpoint.pt")
        if artifacts.file_hash(local) != checkpoint_hash:
            raise artifacts.StorageError(f"{checkpoint_uri}: content hash differs from the one stage 2 reported")
        report_uri = evaluation.report_uri
        report = artifacts.fetch_file(report_uri, Path(tmp) / "report.json")
        if artifacts.file_hash(report) != evaluation.report_hash:
            raise artifacts.StorageError(f"{report_uri}: content hash differs from the one evaluation reported")
        eval_uri = report_uri.rsplit("/", 1)[0]
        evaluation = [  # the weights the evaluation scored and its signed evidence, from beside the report
            artifacts.fetch_file(join_uri(eval_uri, name), Path(tmp) / "evaluation" / name)
            for name in (WEIGHTS_FILE, ATTESTATION_FILE, SIGNATURE_FILE, PAIRED_BITS_FILE)
        ]
        lineage["challenger_weights_sha256"] = sha256_of(evaluation[0])
        experiment = config.project_name or "Default"
        earlier = _registered_result(client, model_name, lineage["challenger_weights_sha256"], experiment, tracking_uri)
        if earlier is not None:  # a cached (unchanged) run: these weights were judged already
            return earlier
        with mlflow.start_run(run_name=f"{config.run_name.removesuffix('-stage2')}-candidate") as run:
            mlflow.set_tags({**provenance, **extra, **_kfp_run_tag()})
            mlflow.log_metrics(evaluation.metrics)
            data_source = resolve_dataset_source(data_uri or join_uri(spec.artifact_root, "data", data_hash))
            mlflow.log_input(
                MetaDataset(data_source, name=f"prepared-{data_hash[:12]}", digest=data_hash[:32]), context="training"
            )
            record_evidence(client, run.info.run_id, [report, *evaluation[1:]], lineage)
            info = log_pyfunc_model(evaluation[0], slim=False)  # byte for byte the attested weights
    version = register_version(
        client,
        model_name,
        info.model_uri,
        version_tags(evaluation.metrics, provenance, {**extra, "run_id": run.info.run_id}),
        run_id=run.info.run_id,
    )
    outcome = promote(client, model_name, version, rules)
    return PromoteStepResult(
        model=model_name,
        version=version,
        action=outcome.action,
        promoted=outcome.promoted,
        champion=outcome.champion_after,
        reasons=outcome.reasons,
        tracking_uri=tracking_uri,
    )
