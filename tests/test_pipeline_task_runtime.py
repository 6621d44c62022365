"""What a pipeline task checks and records at run time (pipelines/task_runtime.py), the KFP artifacts it writes
and verifies (pipelines/kfp_artifacts.py), and the followable view of a kfp.local run (pipelines/local_progress.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from kfp.dsl import Metrics, Model

from components.infrastructure import tracking
from components.infrastructure.provenance import code_identity
from pipelines import kfp_artifacts, task_runtime
from pipelines.kfp_tasks import stage1_pretrain

SETTINGS = (
    "MLFLOW_TRACKING_URI",
    "ABSTRACTINATOR_MLFLOW_TRACKING_URI",
    "ABSTRACTINATOR_ARTIFACT_ROOT",
    "ABSTRACTINATOR_REQUIRE_TRACKING_SERVER",
    "KFP_RUN_ID",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def test_a_cluster_task_without_a_tracking_server_stops_at_once_in_one_line(monkeypatch, tmp_path, capsys):
    """The compiled task's own function, as the KFP executor calls it, on a cluster whose settings ConfigMap has
    no MLFLOW_TRACKING_URI: exit 2, one line naming the key and the ConfigMap, nothing written in the cwd."""
    monkeypatch.setenv("ABSTRACTINATOR_REQUIRE_TRACKING_SERVER", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # the key present but empty
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        stage1_pretrain(
            config="ci",
            overrides=[],
            stage1_steps=2,
            artifact_root="s3://b/p",
            run_key="",
            code_identity=code_identity(),
            prepare_data={"data_uri": "s3://b/p/data/x", "data_hash": "x"},
            checkpoint=Model(uri=str(tmp_path / "c")),
            base_components=Model(uri=str(tmp_path / "b")),
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "error: no tracking server: key MLFLOW_TRACKING_URI is missing or empty in ConfigMap "
        "abstractinator-pipeline-settings\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_image_with_other_code_than_the_compiled_pipeline_is_refused(monkeypatch) -> None:
    with pytest.raises(task_runtime.TaskEnvironmentError, match="is not the code the pipeline was compiled from"):
        task_runtime.check_task_environment("0" * 64)
    task_runtime.check_task_environment(code_identity())  # the same code: fine (no tracking server required)


def test_artifact_root_comes_from_the_parameter_else_the_config_map(monkeypatch) -> None:
    with pytest.raises(task_runtime.TaskEnvironmentError, match="key ABSTRACTINATOR_ARTIFACT_ROOT in ConfigMap"):
        task_runtime.artifact_root("")
    monkeypatch.setenv("ABSTRACTINATOR_ARTIFACT_ROOT", "s3://bucket/from-config-map")
    assert task_runtime.artifact_root("") == "s3://bucket/from-config-map"
    assert task_runtime.artifact_root("s3://bucket/param") == "s3://bucket/param"


def test_mlflow_runs_record_the_kfp_run(monkeypatch, tmp_path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    tracking.tag_kfp_run(run.info.run_id, uri)  # outside KFP: nothing to record
    assert "kfp_run_id" not in client.get_run(run.info.run_id).data.tags
    monkeypatch.setenv("KFP_RUN_ID", "5b0c1e2d-run")
    tracking.tag_kfp_run(run.info.run_id, uri)
    assert client.get_run(run.info.run_id).data.tags["kfp_run_id"] == "5b0c1e2d-run"


# -- KFP artifacts ---------------------------------------------------------------------------------------------------
def test_model_artifacts_carry_and_check_their_hash(tmp_path) -> None:
    from pipelines.artifacts import StorageError, file_hash

    source = tmp_path / "checkpoint.pt"
    source.write_bytes(b"weights")
    digest = file_hash(source)
    model = Model(uri=str(tmp_path / "out" / "checkpoint"))
    kfp_artifacts.save_model(str(source), model, digest, stage="stage2")
    assert Path(model.path).read_bytes() == b"weights" and model.metadata["sha256"] == digest
    assert kfp_artifacts.verified_model_path(model, digest) == model.path
    Path(model.path).write_bytes(b"tampered")
    with pytest.raises(StorageError, match="content hash"):
        kfp_artifacts.verified_model_path(model, digest)
    with pytest.raises(StorageError, match="differs from the reported"):
        kfp_artifacts.save_model(str(source), Model(uri=str(tmp_path / "other")), "sha256:" + "0" * 64)


def test_metrics_artifact_holds_every_finite_metric_in_metadata_and_file(tmp_path) -> None:
    scores = Metrics(uri=str(tmp_path / "scores"))
    kfp_artifacts.log_metrics(scores, {"test_bits_per_byte": 2.5, "live_code_share_L0": 1, "broken": float("nan")})
    assert scores.metadata == {"test_bits_per_byte": 2.5, "live_code_share_L0": 1.0}
    assert json.loads(Path(scores.path).read_text()) == scores.metadata  # kfp.local caches only outputs with a file


# -- the followable local run ------------------------------------------------------------------------------------------
# Each task's one dict output, as kfp.local prints it: the dict's Python repr (a NaN metric a bare `nan`).
PREPARED = {
    "data_uri": "/data/prepared/default",
    "data_hash": "d18f14de00e7368d917066361357003295d876ad4904d5c57baa32d153ddf3c6",
}
TRAINED = {
    "stage": "stage1",
    "checkpoint_uri": "/a/runs/k/stage1/final.pt",
    "checkpoint_hash": "sha256:bb5b5d65b2ffb75a93c9c11b5d8f36e695289fdf98d54bdd4d5fa7297c8f9fef",
    "base_components_uri": None,
    "mlflow_run_id": None,
    "final_metrics": {"loss": float("nan"), "val_bpb": float("-inf")},
}
KFP_LOCAL_OUTPUT = """\
10:18:48.572 - INFO - Running pipeline: \x1b[95m'abstractinator-training'\x1b[0m
10:18:48.579 - INFO - Executing task \x1b[96m'prepare-data'\x1b[0m
    [KFP Executor 2026-11-29 10:18:48,734 INFO]: Got executor_input:
    {
        "inputs": {"parameterValues": {"config": "ci"}}
    }
10:19:17.035 - INFO - Task \x1b[96m'prepare-data'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
10:19:17.036 - INFO - Task \x1b[96m'prepare-data'\x1b[0m outputs:
    result: PREPARED
    Output: 'retrain'
    reason: 'model 'demo' has no champion yet'
    dataset: Dataset( name='dataset',
                      metadata={'data_hash': 'd18f'} )

10:19:17.042 - INFO - Executing task \x1b[96m'stage1-pretrain'\x1b[0m
    train stage1:   0%|          | 0/3 [00:00<?, ?step/s]
    train stage1:  67%|██████▋   | 2/3 [00:28<00:14, 14.88s/step]
    train stage1: 100%|██████████| 3/3 [00:29<00:00,  8.28s/step]
10:20:39.025 - INFO - Task \x1b[96m'stage1-pretrain'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
10:20:39.026 - INFO - Task \x1b[96m'stage1-pretrain'\x1b[0m outputs:
    result: TRAINED
10:21:25.160 - INFO - Executing task \x1b[96m'evaluate'\x1b[0m
    2026-11-29T10:21:30Z [info     ] scoring_split   split=val
    Traceback (most recent call last):
    RuntimeError: out of memory
10:22:26.822 - INFO - Task \x1b[96m'evaluate'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
10:22:26.823 - INFO - Pipeline \x1b[95m'abstractinator-training'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m
""".replace("PREPARED", str(PREPARED)).replace("TRAINED", str(TRAINED))


def test_a_local_run_shows_one_line_per_task_start_and_end_and_logs_everything() -> None:
    from pipelines.local_progress import FollowableOutput

    log, screen = io.StringIO(), io.StringIO()
    view = FollowableOutput(log, screen)
    for chunk in (KFP_LOCAL_OUTPUT[:100], KFP_LOCAL_OUTPUT[100:777], KFP_LOCAL_OUTPUT[777:]):  # any chunking
        view.write(chunk)
    view.close_view()
    lines = [line.split(" ", 1)[1] for line in screen.getvalue().splitlines() if line[:2].isdigit()]
    assert lines == [
        "prepare-data: started",
        "prepare-data: SUCCESS in 0.0 s  Output=retrain reason=model 'demo' has no champion yet data_hash=d18f14de00e7",
        "stage1-pretrain: started",
        "stage1-pretrain: SUCCESS in 0.0 s  checkpoint_hash=bb5b5d65b2ff",
        "evaluate: started",
        "evaluate: FAILURE in 0.0 s",
        "pipeline abstractinator-training: FAILURE",
    ]
    screen_text = screen.getvalue()
    assert "stage1-pretrain train stage1" in screen_text and "3/3" in screen_text  # the progress bar
    assert "evaluate scoring" in screen_text
    assert "RuntimeError: out of memory" in screen_text  # a failed task shows its last lines
    assert "executor_input" not in screen_text and "parameterValues" not in screen_text
    assert log.getvalue() == KFP_LOCAL_OUTPUT.replace("\x1b[95m", "").replace("\x1b[96m", "").replace(
        "\x1b[92m", ""
    ).replace("\x1b[91m", "").replace("\x1b[0m", "")
    assert view.failed_tasks == ["evaluate"]
