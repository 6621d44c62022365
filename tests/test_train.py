"""The trainer: the seed's command, exact resume, crash safety, the two-stage flow, tracking."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from components.training.checkpoints import CheckpointStore, load_checkpoint, read_checkpoint_file
from components.training.train import TrainParams, train
from configs import load_config
from tests.conftest import prepare_small_corpus, train_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Prepared shards of a small local corpus (no download)."""
    return prepare_small_corpus(tmp_path_factory.mktemp("train-corpus"), 150, seed=1)


def ci_config(tmp_path: Path, **changes):
    config = load_config(REPO / "configs/ci_config.py")
    return config.updated(checkpoint_dir=str(tmp_path / "checkpoints"), **changes)


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **env}, timeout=timeout
    )


def test_seed_command_trains_checkpoints_and_tracks(tmp_path: Path, corpus: Path) -> None:
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_cli(
        [
            str(REPO / "train.py"),
            "--config",
            str(REPO / "configs/ci_config.py"),
            "--set",
            "max_steps=20",
            "--set",
            f"checkpoint_dir={tmp_path / 'ckpt'}",
            "--data",
            str(corpus),
            "--no-progress",
        ],
        env={"MLFLOW_TRACKING_URI": tracking},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    store = CheckpointStore(tmp_path / "ckpt")
    assert store.names() == ["checkpoint_step10.pt", "checkpoint_step20.pt"]
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    assert checkpoint["global_step"] == 20 and checkpoint["data_state"]["batch_index"] == 20
    assert set(checkpoint) >= {"optimizer_state", "scheduler_state", "rng_state", "exp_config", "git_commit"}
    client = MlflowClient(tracking)
    (run,) = client.search_runs([client.get_experiment_by_name("abstractinator-ci").experiment_id])
    assert run.data.params["optim.max_steps"] == "20"
    assert run.data.tags["stage"] == "joint" and run.data.tags["data_hash"] == checkpoint["data_hash"]
    assert {"git_commit", "config_hash"} <= set(run.data.tags)
    history = client.get_metric_history(run.info.run_id, "loss/total_avg_accum")
    assert sorted(m.step for m in history) == list(range(1, 21))
    assert "val/bits_per_byte" in run.data.metrics and "compression_avg/ratio_L0" in run.data.metrics
    assert run.info.status == "FINISHED"
    artifacts = [f.path for f in client.list_artifacts(run.info.run_id, "samples")]
    assert "samples/sample_generation_step_50.txt" not in artifacts  # only at generation_interval
    assert "MLflow run" in result.stdout


def test_resumed_run_matches_a_straight_run(tmp_path: Path, corpus: Path, settings_env) -> None:
    settings_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    steps = 12
    straight = train(
        TrainParams(
            config=ci_config(tmp_path / "a", max_steps=steps, checkpoint_interval=3, run_name="straight"),
            data_dir=corpus,
            progress=False,
        )
    )
    first = train(
        TrainParams(
            config=ci_config(tmp_path / "b", max_steps=steps, checkpoint_interval=3, run_name="resumed"),
            data_dir=corpus,
            progress=False,
            stop_after_steps=steps // 2,
        )
    )
    assert not first.complete and first.steps == steps // 2
    resumed = train(
        TrainParams(
            config=ci_config(tmp_path / "b", max_steps=steps, checkpoint_interval=3, run_name="resumed"),
            data_dir=corpus,
            progress=False,
            resume_from_checkpoint=first.final_checkpoint,
        )
    )
    assert resumed.complete and resumed.mlflow_run_id == first.mlflow_run_id
    a = read_checkpoint_file(Path(straight.final_checkpoint))["model_state"]
    b = read_checkpoint_file(Path(resumed.final_checkpoint))["model_state"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")

    def losses(run_id: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss/total_avg_accum"))

    assert losses(straight.mlflow_run_id) == losses(resumed.mlflow_run_id)
    assert len(losses(straight.mlflow_run_id)) == steps


def test_a_run_resumed_at_its_last_step_rewrites_nothing(tmp_path: Path, corpus: Path) -> None:
    """A rerun that finds its stage done (a retried task, a run that shares stage 1's folder) reports the
    checkpoint it resumed from, whose bytes (and so the first run's recorded hash) stay as they were."""
    config = ci_config(tmp_path, max_steps=3, checkpoint_interval=3, run_name="done")
    done = train(TrainParams(config=config, data_dir=corpus, progress=False, tracking=False))
    before = Path(done.final_checkpoint).read_bytes()
    again = train(
        TrainParams(
            config=config, data_dir=corpus, progress=False, tracking=False, resume_from_checkpoint=done.final_checkpoint
        )
    )
    assert again.complete and again.steps == 3 and again.final_checkpoint == done.final_checkpoint
    assert Path(done.final_checkpoint).read_bytes() == before
    assert sorted(p.name for p in Path(config.checkpoint.checkpoint_dir).glob("*.pt")) == ["checkpoint_step3.pt"]


def test_sigkill_mid_run_leaves_a_resumable_checkpoint(tmp_path: Path, corpus: Path) -> None:
    ckpt = tmp_path / "ckpt"
    args = [*train_command(corpus, ckpt, "max_steps=400", "checkpoint_interval=2"), "--no-tracking"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(CheckpointStore(ckpt).names()) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    names = CheckpointStore(ckpt).names()
    assert names, "no checkpoint was written before the kill"
    for name in names:  # every file left is complete
        read_checkpoint_file(ckpt / name)
    killed_at = load_checkpoint(ckpt)["global_step"]
    result = run_cli(
        [
            "-m",
            "abstractinator",
            "train",
            "--resume_from_checkpoint",
            str(ckpt),
            "--set",
            "max_steps=" + str(killed_at + 4),
            "--data",
            str(corpus),
            "--no-progress",
            "--no-tracking",
        ],
        env={},
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(ckpt)["global_step"] == killed_at + 4


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path, corpus: Path) -> None:
    ckpt = tmp_path / "ckpt"
    process = subprocess.Popen(
        [
            *train_command(
                corpus,
                ckpt,
                "max_steps=100000",
                "num_epochs=1000",  # one epoch is ~90 steps: the run must still be going at the SIGTERM
                "checkpoint_interval=100000",
                "validation_interval=100000",
            ),
            "--no-tracking",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in process.stdout:  # wait until the loop runs, then evict the "pod"
        output.append(line)
        if "train_start" in line:
            break
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    rest, _ = process.communicate(timeout=120)
    output.append(rest)
    assert process.returncode == 143, "".join(output)[-3000:]
    assert "stopped_by_sigterm" in rest
    step = load_checkpoint(ckpt)["global_step"]
    assert 0 < step < 100000


def test_two_stage_flow_with_the_seed_configs(tmp_path: Path, corpus: Path) -> None:
    """The seed README's two commands, shortened with --set, run where ./stage1_base.pt may be written."""
    shorten = [
        "--set",
        "max_steps=3",
        "--set",
        "batch_size=2",
        "--set",
        "sequence_length=128",
        "--data",
        str(corpus),
        "--no-progress",
        "--no-tracking",
    ]
    stage1 = run_cli(
        [
            str(REPO / "train.py"),
            "--config",
            str(REPO / "configs/stage1_super_tiny_config.py"),
            "--set",
            "checkpoint_dir=ckpt1",
            *shorten,
        ],
        env={},
        cwd=tmp_path,
    )
    assert stage1.returncode == 0, stage1.stderr[-3000:]
    assert (tmp_path / "stage1_base.pt").is_file()
    stage2 = run_cli(
        [
            str(REPO / "train.py"),
            "--config",
            str(REPO / "configs/stage2_super_tiny_config.py"),
            "--load_base_from",
            "./stage1_base.pt",
            "--set",
            "checkpoint_dir=ckpt2",
            *shorten,
        ],
        env={},
        cwd=tmp_path,
    )
    assert stage2.returncode == 0, stage2.stderr[-3000:]
    assert "stage2" in stage2.stdout
    saved_base = torch.load(tmp_path / "stage1_base.pt", weights_only=True)
    trained = load_checkpoint(tmp_path / "ckpt2")["model_state"]
    checked = 0
    for group, state in saved_base.items():
        if not isinstance(state, dict):
            continue
        for key, value in state.items():
            full = f"{group}.{key}"
            if full in trained:
                torch.testing.assert_close(trained[full], value, rtol=0, atol=0, msg=full)
                checked += 1
    assert checked > 10, "the base's tensors were not found in the stage-2 model"
    # The base config's top LM is continuous: validation fitted its temperature and the checkpoint stores it, so
    # `python evaluate.py` on it ends in scores.
    assert float(trained["top_lm.log_inverse_temperature"]) != 0.0
    evaluated = run_cli(
        [
            str(REPO / "evaluate.py"),
            "--checkpoint",
            "ckpt2",
            "--compression",
            "--data",
            str(corpus),
            "--no-canterbury",
            "--max-eval-bytes",
            "2048",
            "--out",
            "report",
            "--no-tracking",
            "--json",
        ],
        env={},
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert 0 < report["compression"]["test"]["bits_per_byte"] < 16


def test_mismatched_base_names_the_module(tmp_path: Path, corpus: Path) -> None:
    config = ci_config(
        tmp_path,
        top_transformer_config=None,
        top_lm_loss_weight=0.0,
        max_steps=1,
        save_base_components_path=str(tmp_path / "base.pt"),
    )
    train(TrainParams(config=config, data_dir=corpus, progress=False, tracking=False))
    wider = ci_config(tmp_path / "other", max_steps=1).as_dict()
    wider["model"]["compressor_level_configs"][0]["dim"] = 32
    from configs import validate_config

    with pytest.raises(Exception, match=r"compressor|expander"):
        train(
            TrainParams(
                config=validate_config(wider),
                data_dir=corpus,
                progress=False,
                tracking=False,
                load_base_from=str(tmp_path / "base.pt"),
            )
        )


def test_stage2_resumes_from_its_checkpoint_alone(tmp_path: Path, corpus: Path) -> None:
    """Stage 2 trains the top LM on a frozen base; resuming needs only the checkpoint (as documented)."""
    base_path = tmp_path / "base.pt"
    stage1 = ci_config(
        tmp_path / "s1",
        top_transformer_config=None,
        top_lm_loss_weight=0.0,
        max_steps=2,
        save_base_components_path=str(base_path),
    )
    train(TrainParams(config=stage1, data_dir=corpus, progress=False, tracking=False))
    stage2 = ci_config(tmp_path / "s2", max_steps=4, checkpoint_interval=2)
    first = train(
        TrainParams(
            config=stage2,
            data_dir=corpus,
            progress=False,
            tracking=False,
            load_base_from=str(base_path),
            stop_after_steps=2,
        )
    )
    assert first.stage == "stage2" and not first.complete
    resumed = train(
        TrainParams(
            config=stage2,
            data_dir=corpus,
            progress=False,
            tracking=False,
            resume_from_checkpoint=first.final_checkpoint,
        )
    )
    assert resumed.stage == "stage2" and resumed.complete and resumed.steps == 4
    before = read_checkpoint_file(Path(first.final_checkpoint))["model_state"]
    after = read_checkpoint_file(Path(resumed.final_checkpoint))["model_state"]
    base_keys = [key for key in after if key.startswith(("compressors.", "expanders."))]
    assert base_keys and all(torch.equal(before[key], after[key]) for key in base_keys), "the base moved"
    assert any(not torch.equal(before[key], after[key]) for key in after if key.startswith("top_lm."))
