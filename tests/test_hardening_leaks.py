"""Credentials never leave the process: the redaction rules, then every output of a training run (logs, the
--json result, the queued-metrics file, checkpoints, error messages) and, slow, of a whole local pipeline run,
grepped for a marker password and a marker AWS secret."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partialmethod
from pathlib import Path

import pytest

from abstractinator.cli import main
from components.infrastructure.redaction import MASK, redact, redact_data
from components.infrastructure.tracking import RunTracker
from tests.conftest import prepare_small_corpus

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "Pw-marker-7f3a9c1e"
AWS_SECRET = "AwsSecret-marker-0d4e8b2a9f61"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://alice:s3cr3t@mlflow:5000/api", f"http://alice:{MASK}@mlflow:5000/api"),
        ("postgresql+psycopg2://mlflow:pg-pass@db:5432/mlflow", f"postgresql+psycopg2://mlflow:{MASK}@db:5432/mlflow"),
        ("https://h/x?token=abc123&page=2", f"https://h/x?token={MASK}&page=2"),
        ("s3://b/k?X-Amz-Signature=deadbeef&X-Amz-Expires=60", f"s3://b/k?X-Amz-Signature={MASK}&X-Amz-Expires=60"),
        ("url='http://u:p%40ss@h' next", f"url='http://u:{MASK}@h' next"),
    ],
)
def test_credentials_in_uris_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "s3://bucket/prefix/checkpoint_step10.pt",
        "http://127.0.0.1:5000/#/experiments/1",
        "postgresql://mlflow@localhost/mlflow",
        "loss=1.25 step=3",
        "models:/abstractinator@champion",
    ],
)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_secret_environment_values_are_masked_wherever_they_appear(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    assert redact(f"SignatureDoesNotMatch for key {AWS_SECRET}!") == f"SignatureDoesNotMatch for key {MASK}!"
    assert redact_data({"a": [f"x{AWS_SECRET}", 3], "b": (AWS_SECRET,)}) == {"a": [f"x{MASK}", 3], "b": (MASK,)}
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "abc")  # too short to mask without masking ordinary words
    assert redact("abc") == "abc"


def grep_tree(root: Path, *markers: str) -> list[str]:
    """Files under `root` (text or binary) that contain any marker."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {marker}" for marker in markers if marker.encode() in data]
    return found


def test_a_training_run_leaks_no_credential(tmp_path: Path, monkeypatch, capfd, settings_env) -> None:
    """The tracking server is unreachable, so the run's metrics go to mlflow_unsent.jsonl: logs, the JSON
    result, that file, checkpoints and an error message are all grepped."""
    corpus = prepare_small_corpus(tmp_path / "corpus", 40, seed=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    settings_env(MLFLOW_TRACKING_URI=f"http://trainer:{PASSWORD}@127.0.0.1:9", ABSTRACTINATOR_DATA_HOME=str(tmp_path))
    monkeypatch.setattr(RunTracker, "close", partialmethod(RunTracker.close, retry_for_s=0.0))
    ckpt = tmp_path / "ckpt"
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs/ci_config.py"),
            "--no-progress",
            "--json",
            "--data",
            str(corpus),
            "--set",
            "max_steps=2",
            "--set",
            f"checkpoint_dir={ckpt}",
            "--set",
            "validation_max_bytes=512",
            "--set",
            "batch_size=2",
        ]
    )
    assert code == 0
    assert (ckpt / "mlflow_unsent.jsonl").is_file()  # the queued-metrics file exists, and is clean
    bad_resume = main(["train", "--resume_from_checkpoint", f"https://u:{PASSWORD}@h/{AWS_SECRET}.pt"])
    output = capfd.readouterr()
    assert bad_resume == 2 and "error: " in output.err
    assert '"tracking_uri": "http://trainer:***@127.0.0.1:9"' in output.out
    for marker in (PASSWORD, AWS_SECRET):
        assert marker not in output.out and marker not in output.err
    assert grep_tree(tmp_path, PASSWORD, AWS_SECRET) == []


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(2400)
def test_a_full_local_pipeline_run_leaks_no_credential(tmp_path: Path) -> None:
    """`pipeline run-local` against an MLflow server reached as http://user:PASSWORD@... and SeaweedFS keyed
    with the marker secret: stdout, stderr, kfp.local's folder, the working folder, every S3 object and the
    MLflow server's log are grepped."""
    import boto3

    from tests.servers import MlflowServer, SeaweedS3Server

    s3 = SeaweedS3Server("leak-access-key", AWS_SECRET, ["abstractinator"]).start()
    mlflow = None
    try:
        mlflow = MlflowServer(
            f"sqlite:///{tmp_path}/mlflow.db",
            "s3://abstractinator/mlflow-artifacts",
            env=s3.client_env,
            log_dir=tmp_path / "mlflow-log",
        ).start()
        uri = mlflow.uri.replace("http://", f"http://pipeline:{PASSWORD}@")
        home = tmp_path / "home"
        home.mkdir()
        if (REPO / ".data" / "downloads").is_dir():
            (home / "downloads").symlink_to(REPO / ".data" / "downloads")
        work = tmp_path / "work"
        work.mkdir()
        env = {**os.environ, **s3.client_env, "MLFLOW_TRACKING_URI": uri, "ABSTRACTINATOR_DATA_HOME": str(home)}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "abstractinator",
                "pipeline",
                "run-local",
                "--config",
                "ci",
                "--artifact-root",
                "s3://abstractinator/pipeline",
                "--model-name",
                "leak-check",
                "--no-eval-sets",
                "--no-canterbury",
                "--eval-max-bytes",
                "4096",
                "--max-bits-per-byte",
                "12",
                "--stage1-steps",
                "2",
                "--stage2-steps",
                "2",
                "--pipeline-root",
                str(work / "kfp-local"),
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=2000,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        leaks = [
            f"{name}: {line[:300]}"
            for name, text in (("stdout", result.stdout), ("stderr", result.stderr))
            for line in text.splitlines()
            if PASSWORD in line or AWS_SECRET in line
        ]
        leaks += grep_tree(work, PASSWORD, AWS_SECRET) + grep_tree(tmp_path / "mlflow-log", PASSWORD, AWS_SECRET)
        bucket = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
        )
        keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="abstractinator").get("Contents", [])]
        assert keys, "the pipeline wrote nothing to S3"
        for key in keys:
            body = bucket.get_object(Bucket="abstractinator", Key=key)["Body"].read()
            leaks += [f"s3://abstractinator/{key}: {m}" for m in (PASSWORD, AWS_SECRET) if m.encode() in body]
        assert leaks == []
    finally:
        if mlflow is not None:
            mlflow.stop()
        s3.stop()
