"""MLflow tracking through a local queue: everything arrives, and an unreachable server loses nothing."""

import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.infrastructure.provenance import config_hash, flatten
from components.infrastructure.tracking import RunTracker, replay_unsent
from configs import ExpConfig


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_params_tags_metrics_and_texts_arrive_in_a_local_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = RunTracker("exp", "run", tracking_uri=uri, batch_interval=5)
    tracker.log_params(flatten(ExpConfig().as_dict()))
    tracker.set_tags({"stage": "stage1", "config_hash": config_hash(ExpConfig())})
    for step in range(1, 13):
        tracker.log_metrics({"loss/total_avg_accum": 10.0 / step}, step=step)
        tracker.maybe_flush(step)
    tracker.log_text("Original: x\nGenerated: y\n", "samples/sample_generation_step_12.txt")
    assert tracker.close()
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.data.params["model.compressor_level_configs.0.codebook_size"] == "4096"
    assert run.data.tags["stage"] == "stage1"
    history = client.get_metric_history(tracker.run_id, "loss/total_avg_accum")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 13))
    assert run.info.status == "FINISHED"
    assert "samples/sample_generation_step_12.txt" in [f.path for f in client.list_artifacts(tracker.run_id, "samples")]


def test_an_unreachable_server_keeps_everything_and_writes_it_out_at_close(tmp_path: Path) -> None:
    tracker = RunTracker(
        "exp", "run", tracking_uri=f"http://127.0.0.1:{closed_port()}", unsent_path=tmp_path / "unsent.jsonl"
    )
    tracker.log_params({"a": 1})
    tracker.log_metrics({"loss": 1.5}, step=1)
    assert tracker.flush() is False
    assert tracker.pending == 2
    assert tracker.close(retry_for_s=0.0) is False
    assert (tmp_path / "unsent.jsonl").exists()


def test_unsent_records_replay_into_a_store(tmp_path: Path) -> None:
    unsent = tmp_path / "unsent.jsonl"
    tracker = RunTracker("exp", "run", tracking_uri=f"http://127.0.0.1:{closed_port()}", unsent_path=unsent)
    tracker.log_metrics({"loss": 2.0}, step=3)
    tracker.close(retry_for_s=0.0)
    # The same record, pointed at a reachable store, replays completely.
    text = unsent.read_text().replace(tracker.tracking_uri, f"sqlite:///{tmp_path}/mlflow.db")
    unsent.write_text(text)
    assert replay_unsent(unsent) == 1
    assert not unsent.exists()
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert client.get_metric_history(run.info.run_id, "loss")[0].value == 2.0
    assert run.info.status == "FINISHED"  # closed FINISHED: ends so after the replay, not RUNNING forever


def test_a_failed_run_replays_as_failed(tmp_path: Path) -> None:
    unsent = tmp_path / "unsent.jsonl"
    tracker = RunTracker("exp", "run", tracking_uri=f"http://127.0.0.1:{closed_port()}", unsent_path=unsent)
    tracker.log_metrics({"loss": 9.0}, step=1)
    tracker.close(status="FAILED", retry_for_s=0.0)
    assert replay_unsent(unsent, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db") == 1
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": {"b": [1, 2]}, "c": None}, {"a.b.0": "1", "a.b.1": "2", "c": "None"}),
        ({"empty": [], "d": {}}, {"empty": "[]", "d": "{}"}),
    ],
)
def test_flatten_gives_dotted_param_names(data: dict, expected: dict) -> None:
    assert flatten(data) == expected


def test_config_hash_ignores_locations_but_not_what_is_trained() -> None:
    base = ExpConfig()
    assert config_hash(base) == config_hash(base.updated(checkpoint_dir="/elsewhere"))
    assert config_hash(base) != config_hash(base.updated(learning_rate=3e-4))


def test_git_commit_comes_from_the_checkout_or_from_the_image_setting(tmp_path: Path, settings_env) -> None:
    from components.infrastructure.provenance import git_commit

    commit = git_commit()
    assert len(commit.removesuffix("-dirty")) == 40
    assert git_commit(tmp_path) == "unknown"  # no checkout, no setting
    settings_env(ABSTRACTINATOR_GIT_COMMIT="0123abc")
    assert git_commit(tmp_path) == "0123abc"
