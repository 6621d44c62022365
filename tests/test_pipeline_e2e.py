"""End to end on loopback with the real services: SeaweedFS (S3), PostgreSQL, an MLflow server whose artifacts
go to S3, and `abstractinator pipeline run-local` (kfp.local). The CI config becomes version 1 and champion; a
deliberately worse run is refused by the gate; an unchanged scheduled run registers nothing; a forced promotion
is rolled back; `models:/abstractinator@champion` loads and predicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from components.registry import promote as registry
from tests.servers import MlflowServer, PostgresServer, SeaweedS3Server

REPO = Path(__file__).resolve().parents[1]
MODEL = "abstractinator-e2e"
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    s3 = SeaweedS3Server("e2e-access-key", "e2e-secret-key-0123456789", ["abstractinator"]).start()
    postgres = mlflow = None
    try:
        postgres = PostgresServer().start()
        mlflow = MlflowServer(
            postgres.create_database("mlflow"),
            "s3://abstractinator/mlflow-artifacts",
            env=s3.client_env,
            log_dir=tmp_path_factory.mktemp("mlflow-log"),
        ).start()
        yield s3, mlflow
    finally:
        for server in (mlflow, postgres, s3):
            if server is not None:
                server.stop()


@pytest.fixture(scope="module")
def env(services, tmp_path_factory) -> dict[str, str]:
    s3, mlflow = services
    home = tmp_path_factory.mktemp("home")
    if (REPO / ".data" / "downloads").is_dir():
        (home / "downloads").symlink_to(REPO / ".data" / "downloads")
    return {**os.environ, **s3.client_env, "MLFLOW_TRACKING_URI": mlflow.uri, "ABSTRACTINATOR_DATA_HOME": str(home)}


def run_local(env: dict[str, str], cwd: Path, *extra: str) -> str:
    args = [
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
        MODEL,
        "--no-eval-sets",
        "--no-canterbury",
        "--eval-max-bytes",
        "8192",
        "--max-bits-per-byte",
        "8.5",
        "--pipeline-root",
        str(cwd / "kfp-local"),
        *extra,
    ]
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    return result.stdout


def champion(client) -> str | None:
    version = registry.alias_version(client, MODEL, registry.CHAMPION)
    return str(version.version) if version else None


def test_pipeline_gate_rollback_and_serving(services, env, tmp_path: Path) -> None:
    s3, mlflow = services
    client = registry.client_for(mlflow.uri)
    good = ["--stage1-steps", "12", "--stage2-steps", "12"]

    output = run_local(env, tmp_path, *good)
    assert "promoted" in output
    assert champion(client) == "1"
    tags = client.get_model_version(MODEL, "1").tags
    assert {"data_hash", "git_commit", "config_hash", "metric.test_bits_per_byte"} <= set(tags)
    assert tags["checkpoint_uri"].startswith("s3://abstractinator/pipeline/runs/")
    bucket = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="abstractinator").get("Contents", [])]
    assert any(k.endswith("stage1/base_components.pt") for k in keys)
    assert any(k.endswith("eval/report.json") for k in keys)
    assert any(k.startswith("pipeline/data/") and k.endswith("manifest.json") for k in keys)
    assert any(k.startswith("mlflow-artifacts/") for k in keys)  # the pyfunc model, through the server

    run_local(env, tmp_path, "--stage1-steps", "2", "--stage2-steps", "2", "--set", "learning_rate=1e-6")
    assert champion(client) == "1"
    refused = client.get_model_version(MODEL, "2").tags
    assert refused["gate.decision"] == "refused" and refused["gate.reasons"]
    assert [r["action"] for r in registry.history(client, MODEL)] == ["promoted", "refused"]

    output = run_local(env, tmp_path, *good)  # a scheduled run with nothing new
    assert "nothing to retrain" in output
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2

    cli = [sys.executable, "-m", "abstractinator", "registry"]
    forced = subprocess.run(
        [*cli, "promote", "--model-name", MODEL, "--version", "2", "--force", "e2e test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert forced.returncode == 0 and champion(client) == "2", forced.stderr
    rolled = subprocess.run(
        [*cli, "rollback", "--model-name", MODEL], env=env, capture_output=True, text=True, timeout=120
    )
    assert rolled.returncode == 0 and champion(client) == "1", rolled.stderr
    assert [r["action"] for r in registry.history(client, MODEL)][-2:] == ["forced", "rolled_back"]

    serve = subprocess.run(
        [
            sys.executable,
            "-c",
            f"""
import mlflow
model = mlflow.pyfunc.load_model("models:/{MODEL}@champion")
scored = model.predict(["the cat sat on the mat"])[0]
assert 0 < scored["bits_per_byte"] < 20, scored
codes = model.predict(["the cat sat on the mat"], params={{"task": "codes"}})[0]["codes"]
assert len(codes) == 1 and all(0 <= c < 64 for c in codes[0]) and codes[0], codes
generated = model.predict(["the "], params={{"task": "generate", "max_new_bytes": 8}})[0]["generated"]
assert isinstance(generated, str) and len(generated.encode()) <= 8 * 4
print("served", scored["bits_per_byte"])
""",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode == 0 and "served" in serve.stdout, serve.stderr[-3000:]


def test_a_local_run_on_two_processes_is_followable_and_an_unchanged_rerun_comes_from_the_cache(tmp_path: Path) -> None:
    """kfp.local, no servers: each training stage runs 2 trainer processes (gloo; what 2 GPUs give a pod) and
    logs world_size=2; the screen has one line per task, the executor logs are in the log file; a rerun with the
    same inputs reuses both stages from KFP's cache, evaluates again beside the champion and registers nothing
    new; one that changes only stage 2's steps reuses stage 1."""
    from mlflow import MlflowClient

    from tests.conftest import write_corpus

    write_corpus(tmp_path / "text", 150, seed=3)
    env = {
        **os.environ,
        "ABSTRACTINATOR_DATA_HOME": str(tmp_path / "home"),
        "ABSTRACTINATOR_TRAINING_PROCESSES": "2",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    for name in ("MLFLOW_TRACKING_URI", "ABSTRACTINATOR_MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    args = [
        sys.executable,
        "-m",
        "abstractinator",
        "pipeline",
        "run-local",
        "--config",
        "ci",
        "--data-source",
        str(tmp_path / "text"),
        "--stage1-steps",
        "2",
        "--stage2-steps",
        "2",
        "--artifact-root",
        str(tmp_path / "artifacts"),
        "--pipeline-root",
        str(tmp_path / "kfp-local"),
        "--model-name",
        "local-e2e",
        "--no-eval-sets",
        "--no-canterbury",
        "--eval-max-bytes",
        "4096",
        "--max-bits-per-byte",
        "0",
    ]

    def run(log: str, *extra: str) -> str:
        result = subprocess.run(
            [*args, "--log-file", str(tmp_path / log), *extra],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result.stdout

    first = run("first.log")
    for task in ("prepare-data", "stage1-pretrain", "stage2-top-lm", "evaluate", "promote"):
        assert f"{task}: started" in first and f"{task}: SUCCESS" in first
    assert "action=promoted" in first and f"full task logs: {tmp_path / 'first.log'}" in first
    assert "executor_input" not in first and "executor_input" in (tmp_path / "first.log").read_text()
    assert (tmp_path / "first.log").read_text().count("world_size=2") == 2  # stage 1 and stage 2

    again = run("again.log", "--no-skip-unchanged")  # past the champion check: only KFP's cache stops it
    assert "prepare-data: SUCCESS" in again
    for cached in ("stage1-pretrain", "stage2-top-lm"):
        assert f"{cached}: started" not in again
    # evaluation is never cached: it scores the model beside the current champion (here: the same weights)
    assert "evaluate: SUCCESS" in again
    assert "action=already_registered" in again
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/abstractinator-ci/mlflow.db")
    assert len(client.search_model_versions("name='local-e2e'")) == 1

    # only stage 2 changes: stage 1 comes from the cache (its task is not given stage2_steps), stage 2 trains into
    # a run folder of its own beside stage 1's one folder
    longer = run("longer.log", "--stage2-steps", "3")
    assert "stage1-pretrain: started" not in longer
    assert "stage2-top-lm: started" in longer and "stage2-top-lm: SUCCESS" in longer
    runs = tmp_path / "artifacts" / "runs"
    assert len([folder for folder in runs.iterdir() if (folder / "stage1").is_dir()]) == 1
    assert len([folder for folder in runs.iterdir() if (folder / "stage2").is_dir()]) == 2
