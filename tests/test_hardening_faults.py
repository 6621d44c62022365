"""Server faults with the local stack's real servers on loopback: a frozen MLflow server costs training a bounded,
logged delay and loses nothing; S3 going away during checkpoint uploads is retried and survived (or, for the
final checkpoint, reported in one line with the MLflow run marked FAILED); unfinished multipart uploads are
aborted; `--resume_from_checkpoint s3://...` needs no --config."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient

from abstractinator.cli import main
from components.infrastructure.storage import StorageError, abort_incomplete_uploads, upload_file
from components.infrastructure.tracking import RunTracker
from components.training.checkpoints import CheckpointError, CheckpointStore, load_checkpoint
from components.training.train import TrainParams, train
from configs import load_config
from tests.conftest import prepare_small_corpus
from tests.servers import MlflowServer, SeaweedS3Server, free_port

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(900)]


def test_a_frozen_tracking_server_costs_a_bounded_delay_and_loses_nothing(tmp_path: Path) -> None:
    server = MlflowServer(
        f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), log_dir=tmp_path / "log"
    ).start()
    try:
        tracker = RunTracker("frozen", "run", tracking_uri=server.uri, batch_interval=1)
        tracker.log_params({"a": 1})
        assert tracker.flush()
        os.killpg(server.pid, signal.SIGSTOP)  # frozen, not refused: connections hang
        blocked, step, freeze_s = 0.0, 0, 30.0
        started = time.monotonic()
        try:
            while time.monotonic() - started < freeze_s:  # a training loop: a step every 0.2 s, a flush each
                step += 1
                tracker.log_metrics({"loss": 1.0 / step}, step=step)
                before = time.monotonic()
                tracker.maybe_flush(step)
                blocked += time.monotonic() - before
                time.sleep(0.2)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        # 5 s time-out per attempt, attempts 10 s then 20 s apart: at most 3 attempts in 30 s (~15 s), not 38 s.
        assert blocked < 17.0, blocked
        assert tracker.close(retry_for_s=60.0)
        history = MlflowClient(server.uri).get_metric_history(tracker.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(1, step + 1))
        assert MlflowClient(server.uri).get_run(tracker.run_id).info.status == "FINISHED"
    finally:
        server.stop()


class Seaweed:
    """A SeaweedFS that can be stopped and started again on the same ports and data folder."""

    def __init__(self, root: Path):
        self.root = root
        self.server = SeaweedS3Server("fault-access-key", "fault-secret-key-0123456789", ["ckpts"], root=root)
        self.ports = self.server.ports

    def start(self) -> None:
        self.server = SeaweedS3Server(
            "fault-access-key", "fault-secret-key-0123456789", ["ckpts"], root=self.root, ports=self.ports
        ).start()

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    store = Seaweed(tmp_path_factory.mktemp("seaweed"))
    store.start()
    yield store
    store.stop()


@pytest.fixture
def s3_env(seaweed, monkeypatch, settings_env, tmp_path):
    for name, value in seaweed.server.client_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries off: ours are the ones under test
    monkeypatch.setattr("components.infrastructure.storage.UPLOAD_BACKOFF_S", 0.5)
    settings_env(
        ABSTRACTINATOR_S3_ENDPOINT_URL=seaweed.server.endpoint_url,
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
    )
    return boto3.client(
        "s3",
        endpoint_url=seaweed.server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="fault-access-key",
        aws_secret_access_key="fault-secret-key-0123456789",
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return prepare_small_corpus(tmp_path_factory.mktemp("faults-corpus"), 40, seed=4)


def s3_config(prefix: str, **changes):
    return load_config(REPO / "configs/ci_config.py").updated(
        checkpoint_dir=f"s3://ckpts/{prefix}",
        checkpoint_interval=1,
        batch_size=2,
        sequence_length=64,
        validation_interval=1000,
        validation_max_bytes=512,
        generation_interval=1000,
        run_name=prefix,
        **changes,
    )


def run_status(tmp_path: Path, run_name: str) -> str:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("abstractinator-ci").experiment_id],
        filter_string=f"attributes.run_name = '{run_name}'",
    )
    return run.info.status


def test_s3_down_for_a_checkpoint_is_survived_and_the_run_finishes(
    s3_env, seaweed, corpus, tmp_path, monkeypatch
) -> None:
    original = CheckpointStore.save

    def save_with_outage(self, state, step):
        if step == 2:
            seaweed.stop()  # S3 goes away just before the step-2 upload ...
        if step == 3:
            seaweed.start()  # ... and is back for step 3
        return original(self, state, step)

    monkeypatch.setattr(CheckpointStore, "save", save_with_outage)
    result = train(TrainParams(config=s3_config("survives", max_steps=4), data_dir=corpus, progress=False))
    assert result.complete and result.final_checkpoint == "s3://ckpts/survives/checkpoint_step4.pt"
    assert load_checkpoint("s3://ckpts/survives")["global_step"] == 4
    assert "checkpoint_step2.pt" not in CheckpointStore("s3://ckpts/survives").names()
    assert s3_env.list_multipart_uploads(Bucket="ckpts").get("Uploads", []) == []
    assert run_status(tmp_path, "survives") == "FINISHED"

    # Resuming from S3 needs no --config: the checkpoint's own config is used.
    code = main(
        [
            "train",
            "--resume_from_checkpoint",
            "s3://ckpts/survives",
            "--set",
            "max_steps=5",
            "--data",
            str(corpus),
            "--no-tracking",
            "--no-progress",
        ]
    )
    assert code == 0 and load_checkpoint("s3://ckpts/survives")["global_step"] == 5


def test_s3_down_for_the_final_checkpoint_fails_in_one_line_and_marks_the_run_failed(
    s3_env, seaweed, corpus, tmp_path, monkeypatch, capsys
) -> None:
    original = CheckpointStore.save

    def save_with_outage(self, state, step):
        if step == 2:
            seaweed.stop()
        return original(self, state, step)

    monkeypatch.setattr(CheckpointStore, "save", save_with_outage)
    monkeypatch.setattr(RunTracker, "close", _short_close)
    try:
        with pytest.raises(StorageError, match="s3://ckpts/fails/checkpoint_step2.pt"):
            train(TrainParams(config=s3_config("fails", max_steps=2), data_dir=corpus, progress=False))
    finally:
        seaweed.start()
    assert run_status(tmp_path, "fails") == "FAILED"


_original_close = RunTracker.close


def _short_close(self, status="FINISHED", retry_for_s=30.0, retry_every_s=2.0):
    return _original_close(self, status, min(retry_for_s, 5.0), retry_every_s)


def test_unfinished_multipart_uploads_are_aborted(s3_env) -> None:
    upload = s3_env.create_multipart_upload(Bucket="ckpts", Key="big/checkpoint_step9.pt")
    s3_env.upload_part(
        Bucket="ckpts", Key="big/checkpoint_step9.pt", UploadId=upload["UploadId"], PartNumber=1, Body=b"\0" * 5 * 2**20
    )
    assert len(s3_env.list_multipart_uploads(Bucket="ckpts", Prefix="big/").get("Uploads", [])) == 1
    assert abort_incomplete_uploads("ckpts", "big/") == 1
    assert s3_env.list_multipart_uploads(Bucket="ckpts", Prefix="big/").get("Uploads", []) == []


def _pending_upload(client, key: str) -> None:
    """A multipart upload left unfinished (a kill or an outage mid-checkpoint), with one 5 MB part."""
    upload = client.create_multipart_upload(Bucket="ckpts", Key=key)
    client.upload_part(Bucket="ckpts", Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"\0" * 5 * 2**20)


def test_a_pending_multipart_upload_is_aborted_at_the_next_start(s3_env) -> None:
    _pending_upload(s3_env, "restart/checkpoint_step3.pt")
    CheckpointStore("s3://ckpts/restart").remove_interrupted_writes()  # what training runs when it starts
    assert s3_env.list_multipart_uploads(Bucket="ckpts", Prefix="restart/").get("Uploads", []) == []


def test_an_abort_that_failed_in_an_outage_is_run_when_s3_returns(s3_env, seaweed, tmp_path) -> None:
    _pending_upload(s3_env, "outage/checkpoint_step2.pt")
    seaweed.stop()
    try:
        assert abort_incomplete_uploads("ckpts", "outage/") == 0  # S3 is down: the abort fails, is remembered
    finally:
        seaweed.start()
    small = tmp_path / "small.bin"
    small.write_bytes(b"x")
    upload_file(small, "ckpts", "outage/other.bin")  # the first call that reaches S3 again finishes the abort
    assert s3_env.list_multipart_uploads(Bucket="ckpts", Prefix="outage/").get("Uploads", []) == []


def test_an_unreachable_checkpoint_store_fails_before_the_first_step(s3_env, settings_env) -> None:
    settings_env(ABSTRACTINATOR_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(CheckpointError, match="s3://ckpts/nowhere: checkpoints cannot be written here"):
        CheckpointStore("s3://ckpts/nowhere").check_writable()


def test_upload_retries_stay_within_their_time_budget(s3_env, settings_env, tmp_path, monkeypatch) -> None:
    """An outage costs an upload its budget, not every back-off (2 + 4 + 8 + 16 s here)."""
    settings_env(ABSTRACTINATOR_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr("components.infrastructure.storage.UPLOAD_BACKOFF_S", 2.0)
    small = tmp_path / "small.bin"
    small.write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(StorageError):
        upload_file(small, "ckpts", "budget/small.bin", attempts=5, budget_s=3.0)
    assert time.monotonic() - started < 6.0
