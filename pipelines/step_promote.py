"""The promote step (pipelines/step_table.py): the weights the evaluation scored logged as a pyfunc model with
their signed evidence and lineage, registered as `challenger`, and the registry gate run on them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from components.registry.gate_rules import GateRules
from components.training.stages import join_uri
from pipelines import artifacts
from pipelines.run_spec import RunSpec
from pipelines.step_results import EvaluateStepResult, PrepareStepResult, PromoteStepResult, TrainStepResult


def _kfp_run_tag() -> dict[str, str]:
    from components.infrastructure.tracking import kfp_run_id

    run = kfp_run_id()
    return {"kfp_run_id": run} if run else {}


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


def promote_step(
    spec: RunSpec,
    model_name: str,
    data: PrepareStepResult,
    stage1: TrainStepResult,
    stage2: TrainStepResult,
    evaluation: EvaluateStepResult,
    rules: GateRules,
    image: str = "",
    kfp_run_id: str = "",
) -> PromoteStepResult:
    """Log the weights the evaluation scored (its `model.pt`, from stage 2's checkpoint, checked against the hash
    stage 2 reported) as a pyfunc model with its evidence (the report, checked against the evaluation's
    `report_hash`, and the signed attestation) and lineage (the `data`, both training runs, the evaluation run,
    `image`), register it as `challenger`, run the gate (which trusts only the attestation)."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from components.infrastructure.tracking import resolve_tracking_uri
    from components.registry.attestation import ATTESTATION_FILE, PAIRED_BITS_FILE, SIGNATURE_FILE, WEIGHTS_FILE
    from components.registry.gate_evidence import record_evidence, sha256_of
    from components.registry.promote import client_for, promote, register_version, version_tags
    from components.registry.pyfunc_model import log_pyfunc_model

    data_hash, checkpoint_uri = data.data_hash, stage2.checkpoint_uri
    stages = spec.stages(data_hash)
    config = stages.stage2
    tracking_uri = resolve_tracking_uri(config.logging.project_name)
    provenance = {
        "data_hash": data_hash,
        "git_commit": spec.git_commit,
        "config_hash": stages.config_hash,
        "code_identity": spec.code_identity,
    }
    lineage = {
        "stage1_run_id": stage1.mlflow_run_id,
        "stage2_run_id": stage2.mlflow_run_id,
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
        "checkpoint_hash": stage2.checkpoint_hash,
        "report_uri": evaluation.report_uri,
        "config": spec.config,
        "overrides": " ".join(spec.overrides)[:5000],
        **{key: value for key, value in lineage.items() if value},
    }
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(config.logging.project_name or "Default")
    client = client_for(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="abstractinator-promote-") as tmp:
        local = artifacts.fetch_file(checkpoint_uri, Path(tmp) / "checkpoint.pt")
        if artifacts.file_hash(local) != stage2.checkpoint_hash:
            raise artifacts.StorageError(f"{checkpoint_uri}: content hash differs from the one stage 2 reported")
        report_uri = evaluation.report_uri
        report = artifacts.fetch_file(report_uri, Path(tmp) / "report.json")
        if artifacts.file_hash(report) != evaluation.report_hash:
            raise artifacts.StorageError(f"{report_uri}: content hash differs from the one evaluation reported")
        eval_uri = report_uri.rsplit("/", 1)[0]
        evaluated_files = [  # the weights the evaluation scored and its signed evidence, from beside the report
            artifacts.fetch_file(join_uri(eval_uri, name), Path(tmp) / "evaluation" / name)
            for name in (WEIGHTS_FILE, ATTESTATION_FILE, SIGNATURE_FILE, PAIRED_BITS_FILE)
        ]
        lineage["challenger_weights_sha256"] = sha256_of(evaluated_files[0])
        experiment = config.logging.project_name or "Default"
        earlier = _registered_result(client, model_name, lineage["challenger_weights_sha256"], experiment, tracking_uri)
        if earlier is not None:  # a cached (unchanged) run: these weights were judged already
            return earlier
        with mlflow.start_run(run_name=f"{config.logging.run_name.removesuffix('-stage2')}-candidate") as run:
            mlflow.set_tags({**provenance, **extra, **_kfp_run_tag()})
            mlflow.log_metrics(evaluation.metrics)
            data_source = resolve_dataset_source(data.data_uri)
            mlflow.log_input(
                MetaDataset(data_source, name=f"prepared-{data_hash[:12]}", digest=data_hash[:32]), context="training"
            )
            record_evidence(client, run.info.run_id, [report, *evaluated_files[1:]], lineage)
            info = log_pyfunc_model(evaluated_files[0], slim=False)  # byte for byte the attested weights
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
