"""The training steps stage1_pretrain and stage2_top_lm (pipelines/step_table.py): one training stage into the
run folder, resuming from its own last checkpoint, and its curve beside the checkpoints."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

from components.infrastructure.logs import get_logger
from components.training.stages import join_uri
from pipelines import artifacts
from pipelines.run_spec import RunSpec, local_data
from pipelines.step_results import PrepareStepResult, TrainingStage, TrainStepResult

log = get_logger(__name__)


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
    stage: TrainingStage,
    data: PrepareStepResult,
    base_components_uri: str | None = None,
    tracking: bool = True,
    progress: bool = False,
) -> TrainStepResult:
    """Train one stage on the prepared `data` into the run folder (stage 2 on `base_components_uri`: stage 1's
    base, its URI or the local copy of the kfp artifact). A stage that finds a checkpoint of its own there (a
    retried task, a preempted pod, a rerun) resumes from it: the folder is keyed by what the stage trains (config,
    steps, data, code), so that checkpoint is this very stage's; stage 1's key leaves out stage 2's settings, so
    a run that changes only those finds stage 1 done. With several training processes
    (pipelines.torchrun.training_processes: the pod's GPUs, or ABSTRACTINATOR_TRAINING_PROCESSES) the trainer
    runs under torchrun, one process per device, each on batch_size / N windows, so the global batch and the
    result are the one-process run's."""
    from components.infrastructure.tracking import tag_kfp_run
    from components.training.checkpoints import CheckpointStore
    from components.training.train import TrainParams
    from pipelines.torchrun import run_training, training_processes

    data_hash = data.data_hash
    config = spec.stage1_config(data_hash) if stage == "stage1" else spec.stages(data_hash).stage2
    if stage == "stage2" and not base_components_uri:
        raise ValueError("stage2 needs the base components of stage 1 (base_components_uri)")
    processes = training_processes()
    if processes > 1:
        if config.data.batch_size % processes:
            from configs import ConfigError

            raise ConfigError(f"batch_size {config.data.batch_size} does not split over {processes} training processes")
        config = config.updated(batch_size=config.data.batch_size // processes)
    resume = CheckpointStore(config.checkpoint.checkpoint_dir).latest()
    if resume:
        log.info("stage_resumes", stage=stage, checkpoint=resume)
    result = run_training(
        TrainParams(
            config=config,
            data_dir=local_data(data.data_uri, data_hash),
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
    _write_curve(result.mlflow_run_id, result.tracking_uri, join_uri(spec.stage_folder(data_hash, stage), "curve.csv"))
    base = result.base_components
    return TrainStepResult(
        stage=stage,
        checkpoint_uri=result.final_checkpoint,
        checkpoint_hash=_hash_of(result.final_checkpoint),
        base_components_uri=base,
        base_components_hash=_hash_of(base) if base else None,
        mlflow_run_id=result.mlflow_run_id,
        final_metrics=result.final_metrics,
    )
