"""The prepare_data step (pipelines/step_table.py): raw text -> byte shards, published under the artifact root,
and the scheduled-retraining check against the registry champion's signed evidence."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from components.infrastructure.logs import get_logger
from components.training.stages import join_uri
from pipelines import artifacts
from pipelines.run_spec import RunSpec
from pipelines.step_results import PrepareStepResult

log = get_logger(__name__)


class PreparedData(NamedTuple):
    """What prepare_step did: the result it hands on, where the data lies on this machine (the kfp task's Dataset
    artifact copies it) and the champion check's decision (the pipeline's control flow, not handed on)."""

    result: PrepareStepResult
    local_dir: Path
    unchanged: bool  # the registry's champion was made from this data, code and config
    reason: str


def prepare_step(
    spec: RunSpec,
    data_source: str,
    model_name: str = "",
    skip_if_unchanged: bool = True,
    include_eval_sets: bool = True,
    prepared_dir: Path | None = None,
) -> PreparedData:
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
    result = PrepareStepResult(data_uri=data_uri, data_hash=data_hash)
    return PreparedData(result, Path(prepared.out_dir), unchanged, reason)


def _champion_unchanged(model_name: str, spec: RunSpec, data_hash: str, config_hash: str, code: str):
    """Whether the champion was made from this data, code (code identity, not the git commit: an uncommitted
    edit is a change) and config, as its signed attestation says (never its editable tags)."""
    from components.infrastructure.tracking import resolve_tracking_uri
    from components.registry.gate_evidence import EvidenceError, read_evidence
    from components.registry.promote import CHAMPION, alias_version, client_for

    if code == "unknown":
        return False, "the code identity is unknown: retraining"
    client = client_for(resolve_tracking_uri(spec.exp_config.logging.project_name))
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
