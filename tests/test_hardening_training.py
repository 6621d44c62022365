"""Training under faults: exact resume at any step (before the codebook-reset cutoff too), a non-finite loss
stops the run without a checkpoint from it, the checkpoint step's metrics are sent before its checkpoint, and
what killed writers left behind is removed at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partialmethod
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from components.infrastructure.tracking import RunTracker
from components.training.checkpoints import CheckpointStore, load_checkpoint, read_checkpoint_file
from components.training.train import Trainer, TrainingDiverged, TrainParams, train
from configs import load_config
from model.quantizer import EmaVectorQuantizer
from tests.conftest import prepare_small_corpus, train_command

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return prepare_small_corpus(tmp_path_factory.mktemp("hardening-train"), 60, seed=5)


def small_config(folder: Path, **changes):
    """The CI model on small batches with codebook-reset checks every 2 steps (a code is dead after 5 unused
    steps; resets stop at step total // 2) and no validation or sampling in between."""
    config = load_config(REPO / "configs/ci_config.py")
    level = {**config.model.compressor_level_configs[0].as_dict(), "vq_reset_interval": 2}
    defaults = {
        "checkpoint_dir": str(folder),
        "compressor_level_configs": [level],
        "batch_size": 2,
        "sequence_length": 64,
        "validation_interval": 1000,
        "validation_max_bytes": 512,
        "generation_interval": 1000,
        "checkpoint_interval": 1000,
    }
    return config.updated(**{**defaults, **changes})


def test_the_reset_buffer_round_trips_so_resets_after_a_restore_are_the_same() -> None:
    """The quick guard: a quantizer restored from state_dict + reset_buffer_state makes exactly the resets of
    the one that kept running (without the buffer, the replacements are drawn from zeros)."""
    torch.manual_seed(0)
    live = EmaVectorQuantizer(num_codes=32, dim=8, reset_interval=2, ring_size=64, vectors_per_step=16).train()
    batches = [torch.randn(2, 24, 8) * (1 + i) for i in range(12)]
    valid = torch.ones(2, 24, dtype=torch.bool)
    for batch in batches[:5]:
        live(batch, valid)
    restored = EmaVectorQuantizer(num_codes=32, dim=8, reset_interval=2, ring_size=64, vectors_per_step=16).train()
    restored.load_state_dict(live.state_dict())
    restored.load_reset_buffer_state(live.reset_buffer_state())
    rng, resets_before = torch.get_rng_state(), int(live.total_resets)
    for batch in batches[5:]:
        live(batch, valid)
    resets_live, codebook_live = int(live.total_resets), live.codebook.clone()
    torch.set_rng_state(rng)
    for batch in batches[5:]:
        restored(batch, valid)
    assert resets_live > resets_before  # resets did happen after the restore point
    assert int(restored.total_resets) == resets_live and torch.equal(restored.codebook, codebook_live)
    with pytest.raises(ValueError, match="does not fit"):
        EmaVectorQuantizer(num_codes=32, dim=8, ring_size=32).load_reset_buffer_state(live.reset_buffer_state())


@pytest.mark.slow
def test_resume_at_any_step_gives_the_straight_runs_weights_bit_for_bit(tmp_path: Path, corpus: Path) -> None:
    steps = 14  # reset checks at steps 2, 4, 6; none from 7 on
    straight = train(
        TrainParams(
            config=small_config(tmp_path / "straight", max_steps=steps), data_dir=corpus, progress=False, tracking=False
        )
    )
    expected = read_checkpoint_file(Path(straight.final_checkpoint))["model_state"]
    assert int(expected["compressors.0.quantizer.total_resets"]) > 0  # the resets this test is about happened
    for stop_at in (1, 5, 9):  # before any reset check, just before the last reset, after the cutoff
        folder = tmp_path / f"resumed-at-{stop_at}"
        first = train(
            TrainParams(
                config=small_config(folder, max_steps=steps),
                data_dir=corpus,
                progress=False,
                tracking=False,
                stop_after_steps=stop_at,
            )
        )
        resumed = train(
            TrainParams(
                config=small_config(folder, max_steps=steps),
                data_dir=corpus,
                progress=False,
                tracking=False,
                resume_from_checkpoint=first.final_checkpoint,
            )
        )
        got = read_checkpoint_file(Path(resumed.final_checkpoint))["model_state"]
        assert got.keys() == expected.keys()
        different = [key for key in expected if not torch.equal(expected[key], got[key])]
        assert not different, f"resumed at step {stop_at}: {different[:5]}"


def test_a_non_finite_loss_stops_training_without_a_checkpoint_from_it(
    tmp_path: Path, corpus: Path, settings_env
) -> None:
    settings_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    config = small_config(
        tmp_path / "ckpt", max_steps=6, learning_rate=1e30, checkpoint_interval=1, run_name="diverges"
    )
    with pytest.raises(TrainingDiverged, match=r"training diverged at step \d+: the (loss|gradient norm) is"):
        train(TrainParams(config=config, data_dir=corpus, progress=False))
    store = CheckpointStore(tmp_path / "ckpt")
    for name in store.names():  # what was written is from finite steps only
        state = read_checkpoint_file(tmp_path / "ckpt" / name)["model_state"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), name
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name(config.logging.project_name).experiment_id])
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["failure"]


def test_the_checkpoint_steps_metrics_are_sent_before_its_checkpoint(
    tmp_path: Path, corpus: Path, settings_env, monkeypatch
) -> None:
    """A SIGKILL right after a checkpoint must lose none of the metrics of the steps it covers (on resume those
    steps are not run again): when a checkpoint is written, the server already holds its step's metrics."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings_env(MLFLOW_TRACKING_URI=uri)
    seen: dict[int, set[int]] = {}
    original = Trainer.save_checkpoint

    def save_and_look(self, *args, **kwargs):
        original(self, *args, **kwargs)
        history = MlflowClient(uri).get_metric_history(self.tracker.run_id, "loss/total_avg_accum")
        seen[self.step] = {m.step for m in history}

    monkeypatch.setattr(Trainer, "save_checkpoint", save_and_look)
    config = small_config(tmp_path / "ckpt", max_steps=6, checkpoint_interval=3, mlflow_batch_interval=1000)
    train(TrainParams(config=config, data_dir=corpus, progress=False))
    assert seen[3] == {1, 2, 3} and seen[6] == set(range(1, 7))


def test_metrics_queued_during_an_outage_ride_in_the_checkpoint(
    tmp_path: Path, corpus: Path, settings_env, monkeypatch
) -> None:
    """The server is down when the checkpoint is written: its unsent metrics are in the checkpoint, and a resume
    against a reachable server sends them (a kill would otherwise lose them for good)."""
    settings_env(MLFLOW_TRACKING_URI="http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setattr(RunTracker, "close", partialmethod(RunTracker.close, retry_for_s=0.0))  # no 30 s wait
    config = small_config(tmp_path / "ckpt", max_steps=4, checkpoint_interval=2, mlflow_batch_interval=1000)
    first = train(TrainParams(config=config, data_dir=corpus, progress=False, stop_after_steps=2))
    pending = load_checkpoint(first.final_checkpoint)["tracking_pending"]
    assert sorted({m[3] for m in pending["metrics"] if m[0] == "loss/total_avg_accum"}) == [1, 2]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings_env(MLFLOW_TRACKING_URI=uri)
    resumed = train(
        TrainParams(config=config, data_dir=corpus, progress=False, resume_from_checkpoint=first.final_checkpoint)
    )
    history = MlflowClient(uri).get_metric_history(resumed.mlflow_run_id, "loss/total_avg_accum")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]


def test_leftovers_of_killed_writers_are_removed_at_the_next_start(tmp_path: Path, corpus: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / ".checkpoint_step4.pt.k2j3h4").write_bytes(b"\0" * 100_000)  # a torch.save cut short by SIGKILL
    (folder / ".latest.abcd").write_bytes(b"checkpoint_step4.pt\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = Path(tempfile.mkdtemp(prefix=f"abstractinator-train-{dead.pid}-"))
    (orphan / "base.pt").write_bytes(b"\0" * 1000)
    alive = Path(tempfile.mkdtemp(prefix=f"abstractinator-ckpt-{os.getpid()}-"))  # a live writer's: kept
    try:
        train(TrainParams(config=small_config(folder, max_steps=1), data_dir=corpus, progress=False, tracking=False))
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_step1.pt", "latest"]
        assert not orphan.exists() and alive.exists()
    finally:
        for path in (orphan, alive):
            if path.exists():
                subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.mark.slow
def test_sigkill_loses_no_metric_of_a_checkpointed_step(tmp_path: Path, corpus: Path) -> None:
    """The issue's probe: kill -9 mid-run, resume; MLflow has every step's loss exactly once per step run."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    ckpt = tmp_path / "ckpt"
    args = train_command(corpus, ckpt, "max_steps=200", "checkpoint_interval=3", "mlflow_batch_interval=1000")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    process = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(CheckpointStore(ckpt).names()) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = load_checkpoint(ckpt)["global_step"]
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "abstractinator",
            "train",
            "--resume_from_checkpoint",
            str(ckpt),
            "--set",
            f"max_steps={killed_at + 3}",
            "--data",
            str(corpus),
            "--no-progress",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("abstractinator-ci").experiment_id])
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "loss/total_avg_accum")}
    assert set(range(1, killed_at + 4)) <= steps


@pytest.fixture
def small_disk(tmpfs):
    """A real 80 MB tmpfs: more free space than the low-space guess, so only the errno can tell."""
    return tmpfs("80m")


def test_a_full_disk_inside_torch_save_is_named_by_its_errno(small_disk) -> None:
    """torch.save turns ENOSPC into `[enforce fail at inline_container.cc:672] unexpected pos ...`; the checkpoint
    writer names it from the errno of the write, on a real file system that fills up mid-tensor."""
    from components.training.checkpoints import CheckpointError, atomic_torch_save

    target = small_disk / "checkpoint_step1.pt"
    with pytest.raises(CheckpointError) as refused:
        atomic_torch_save({"weights": torch.zeros(25 * 2**20)}, target)  # 100 MB for 80 MB
    assert str(refused.value) == f"{small_disk}: disk full while writing checkpoint_step1.pt"
    assert list(small_disk.iterdir()) == []  # the partial temporary file went with the failure
