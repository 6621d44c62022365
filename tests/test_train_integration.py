"""Training against real services and several processes: a tracking server that goes away mid-run, and
DistributedDataParallel under torchrun on CPU (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.training.checkpoints import CheckpointStore, load_checkpoint, step_of
from tests.conftest import prepare_small_corpus, train_command
from tests.servers import MlflowServer, PostgresServer, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return prepare_small_corpus(tmp_path_factory.mktemp("integration-corpus"), 150, seed=2)


@pytest.fixture
def postgres():
    server = PostgresServer().start()
    yield server
    server.stop()


def test_tracking_server_down_mid_run_loses_no_metric(tmp_path: Path, corpus: Path, postgres) -> None:
    """Server up, then down for 15+ steps, then up again; the run (ended by SIGTERM, so the test does not
    depend on how fast this machine trains) has every step's metrics."""
    server = MlflowServer(postgres.create_database("mlflow"), str(tmp_path / "artifacts")).start()
    process = subprocess.Popen(
        train_command(
            corpus,
            tmp_path / "ckpt",
            "max_steps=100000",
            "num_epochs=1000",  # one epoch of this corpus is ~90 steps: the run must outlast the test
            "mlflow_batch_interval=5",
            "checkpoint_interval=5",
            "validation_interval=100000",
            "generation_interval=100000",
        ),
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": server.uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = MlflowClient(server.uri)
    store = CheckpointStore(tmp_path / "ckpt")

    def last_step() -> int:
        return max((step_of(name) for name in store.names()), default=0)

    def metrics_arrived() -> bool:
        experiment = client.get_experiment_by_name("abstractinator-ci")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return bool(runs) and bool(client.get_metric_history(runs[0].info.run_id, "loss/total_avg_accum"))

    try:
        wait_for(metrics_arrived, 180, "first metrics", process)
        server.stop()
        down_at = last_step()
        wait_for(lambda: last_step() >= down_at + 15, 180, "training while the server is down", process)
        server.start()
        up_at = last_step()
        wait_for(lambda: last_step() >= up_at + 10, 180, "training after the restart", process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 143, output[-3000:]
        assert "tracking_unreachable" in output and "tracking_reconnected" in output
        final_step = load_checkpoint(tmp_path / "ckpt")["global_step"]
        experiment = client.get_experiment_by_name("abstractinator-ci")
        (run,) = client.search_runs([experiment.experiment_id])
        history = client.get_metric_history(run.info.run_id, "loss/total_avg_accum")
        assert sorted(m.step for m in history) == list(range(1, final_step + 1))
        assert run.info.status == "KILLED"
    finally:
        if process.poll() is None:
            process.kill()
        server.stop()


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, corpus: Path) -> None:
    steps = 6
    common = [f"max_steps={steps}", "validation_interval=1000", "checkpoint_interval=1000", "generation_interval=1000"]
    single = subprocess.run(
        [*train_command(corpus, tmp_path / "one", "batch_size=8", *common), "--json", "--no-tracking"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    double = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "abstractinator",
            "train",
            *train_command(corpus, tmp_path / "two", "batch_size=4", *common)[4:],
            "--json",
            "--no-tracking",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads(single.stdout)["final_metrics"]["loss/total_avg_accum"]
    two = json.loads(double.stdout)["final_metrics"]["loss/total_avg_accum"]
    assert two == pytest.approx(one, rel=2e-3)
