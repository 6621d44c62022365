"""The evaluate step (pipelines/step_table.py): the new weights scored beside the champion on the same bytes, the
signed attestation of both (pipelines/paired_evaluation.py), and its result as the one typed value the promote
step reads (pipelines/step_results.py `EvaluateStepResult`)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from components.infrastructure.settings import get_settings
from components.training.stages import join_uri
from pipelines import artifacts
from pipelines.run_spec import RunSpec, local_data
from pipelines.step_results import EvaluateStepResult, PrepareStepResult, TrainStepResult


def evaluate_step(
    spec: RunSpec,
    data: PrepareStepResult,
    trained: TrainStepResult,
    tasks: list[str] | None = None,
    limit: int | None = None,
    max_eval_bytes: int | None = None,
    canterbury: bool = True,
    tracking: bool = True,
    model_name: str = "",
    checkpoint_path: str | None = None,
) -> EvaluateStepResult:
    """Evaluate stage 2's checkpoint (`trained`; read from `checkpoint_path` when given, the kfp task's local copy
    of the Model artifact, and verified against `trained.checkpoint_hash` first) into the run's eval folder:
    its weights as the slim `model.pt` that gets registered, scored beside `model_name`'s current champion on the
    same bytes, and the signed attestation of both (pipelines/paired_evaluation.py). Each evaluation is a fresh
    MLflow run."""
    from components.evaluation.evaluate import EvaluateParams, evaluate
    from components.infrastructure.tracking import resolve_tracking_uri, tag_kfp_run
    from components.registry.attestation import WEIGHTS_FILE
    from components.registry.pyfunc_model import slim_checkpoint
    from pipelines.paired_evaluation import attest

    data_hash, checkpoint_uri = data.data_hash, checkpoint_path or trained.checkpoint_uri
    eval_uri = join_uri(spec.run_root(data_hash), "eval")
    local = not artifacts.is_s3(eval_uri)
    with tempfile.TemporaryDirectory(prefix="abstractinator-eval-") as tmp:
        out_dir = Path(eval_uri) if local else Path(tmp) / "report"
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = artifacts.fetch_file(checkpoint_uri, Path(tmp) / "checkpoint.pt")
        if artifacts.file_hash(checkpoint) != trained.checkpoint_hash:
            raise artifacts.StorageError(f"{checkpoint_uri}: content hash differs from the one training reported")
        weights = slim_checkpoint(checkpoint, out_dir / WEIGHTS_FILE)  # the very file scored, attested, registered
        params = EvaluateParams(
            checkpoint=str(weights),
            out_dir=out_dir,
            data_dir=local_data(data.data_uri, data_hash),
            tasks=tasks or [],
            limit=limit,
            max_eval_bytes=max_eval_bytes,
            canterbury=canterbury,
            tracking=tracking,
        )
        result = evaluate(params)
        tracking_uri = resolve_tracking_uri(spec.exp_config.logging.project_name)
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
