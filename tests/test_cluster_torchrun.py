"""The torchrun helper a pipeline step uses for several GPUs: the command line, the in-process / torchrun choice,
SIGTERM forwarding, and (slow) a real two-process run on CPU through the worker module."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from pipelines import torchrun
from pipelines.torchrun import run_training, trainer_command

REPO = Path(__file__).resolve().parents[1]


def test_single_node_command_is_standalone_torchrun_of_the_cli():
    command = trainer_command(4, ["train", "--config", "configs/ci_config.py"], python="/usr/bin/python3")
    assert command == [
        "/usr/bin/python3",
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=4",
        "--standalone",
        "-m",
        "abstractinator",
        "train",
        "--config",
        "configs/ci_config.py",
    ]


def test_multi_node_command_uses_c10d_rendezvous():
    command = trainer_command(8, ["train"], nnodes=2, rdzv_endpoint="job-master-0:29400", python="py")
    assert "--standalone" not in command
    assert command[3:7] == [
        "--nproc_per_node=8",
        "--nnodes=2",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=job-master-0:29400",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"nproc": 0}, "nproc must be >= 1"), ({"nproc": 2, "nnodes": 2}, "need rdzv_endpoint")]
)
def test_bad_topology_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        trainer_command(args=["train"], **kwargs)


def ci_params(tmp_path: Path, steps: int = 2):
    from components.training.train import TrainParams
    from configs import load_config

    config = load_config(
        REPO / "configs/ci_config.py",
        [
            f"max_steps={steps}",
            f"checkpoint_dir={tmp_path / 'ckpt'}",
            "validation_interval=1000",
            "checkpoint_interval=1000",
            "generation_interval=1000",
            "batch_size=4",
            "warmup_steps=1",
        ],
    )
    return TrainParams(config=config, progress=False, tracking=False)


def test_params_survive_the_json_hand_over(tmp_path):
    from components.training.train import TrainParams

    params = ci_params(tmp_path)
    assert TrainParams.model_validate_json(params.model_dump_json()) == params


@pytest.mark.parametrize("gpus", [0, 1])
def test_one_gpu_or_none_trains_in_process(monkeypatch, tmp_path, gpus):
    import components.training.train

    calls = []
    monkeypatch.setattr(components.training.train, "train", lambda params: calls.append(params) or "in-process")
    monkeypatch.setattr(torchrun, "_run_forwarding_sigterm", lambda command: pytest.fail("started torchrun"))
    params = ci_params(tmp_path)
    assert run_training(params, gpus=gpus) == "in-process"
    assert calls == [params]


def test_several_gpus_run_the_worker_under_torchrun_and_read_rank0s_result(monkeypatch, tmp_path):
    import components.training.train
    from components.training.train import TrainParams, TrainResult

    monkeypatch.setattr(components.training.train, "train", lambda params: pytest.fail("trained in-process"))
    seen = {}
    result = TrainResult(
        stage="joint",
        steps=2,
        final_checkpoint="c.pt",
        base_components=None,
        mlflow_run_id=None,
        tracking_uri=None,
        data_dir="d",
        data_hash="h",
        config_hash="c",
        git_commit="g",
        final_metrics={"val/loss": 1.5},
        complete=True,
    )

    def fake_torchrun(command):
        seen["command"] = command
        params_file = Path(command[command.index("--params") + 1])
        seen["params"] = TrainParams.model_validate_json(params_file.read_text())
        Path(command[command.index("--result") + 1]).write_text(result.model_dump_json())
        return 0

    monkeypatch.setattr(torchrun, "_run_forwarding_sigterm", fake_torchrun)
    params = ci_params(tmp_path)
    assert run_training(params, gpus=4, workdir=tmp_path) == result
    assert seen["command"][2:7] == [
        "torch.distributed.run",
        "--nproc_per_node=4",
        "--standalone",
        "-m",
        "pipelines.torchrun",
    ]
    assert seen["params"] == params
    assert list(tmp_path.glob("abstractinator-torchrun-*")) == []  # hand-over files cleaned up


def test_no_result_from_rank0_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setattr(torchrun, "_run_forwarding_sigterm", lambda command: 1)
    with pytest.raises(torchrun.DistributedTrainingError, match="2 processes exited with status 1 and no result"):
        run_training(ci_params(tmp_path), gpus=2)


def test_sigterm_is_forwarded_to_the_training_processes(tmp_path):
    ready = tmp_path / "ready"
    child = (
        f"import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        f"time.sleep(60)\n"
    )

    def send_sigterm_when_ready() -> None:
        for _ in range(200):
            if ready.exists():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            threading.Event().wait(0.05)

    sender = threading.Thread(target=send_sigterm_when_ready)
    sender.start()
    status = torchrun._run_forwarding_sigterm([sys.executable, "-c", child])
    sender.join()
    assert status == 143  # the child got SIGTERM (and this process, whose handler forwarded it, lives on)


@pytest.mark.slow
def test_two_cpu_processes_train_through_the_worker(tmp_path, monkeypatch, data_home, text_corpus):
    from components.data.prepare_data import PrepareDataParams, prepare_data

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    prepared = tmp_path / "prepared"
    prepare_data(PrepareDataParams(source=str(text_corpus[0]), out_dir=prepared, include_eval_sets=False))
    params = ci_params(tmp_path, steps=3).model_copy(update={"data_dir": prepared})
    result = run_training(params, gpus=2, workdir=tmp_path)
    assert result.rank == 0 and result.steps == 3 and result.complete
    assert Path(result.data_dir) == prepared  # the params reached the workers through the JSON hand-over
    assert Path(result.final_checkpoint).is_file()
    assert "loss/total_avg_accum" in result.final_metrics


# -- through the pipeline's stage step ---------------------------------------------------------------------------------
STAGE_OVERRIDES = ["validation_interval=1000", "generation_interval=1000", "checkpoint_interval=2"]


@pytest.fixture(scope="module")
def small_prepared(tmp_path_factory) -> tuple[Path, str]:
    from components.data.shards import load_manifest
    from tests.conftest import prepare_small_corpus

    prepared = prepare_small_corpus(tmp_path_factory.mktemp("stage-corpus"), 150, seed=2)
    return prepared, load_manifest(prepared).data_hash


def stage_spec(root: Path, steps: int):
    from pipelines.run_spec import RunSpec

    return RunSpec(
        config="ci", overrides=STAGE_OVERRIDES, stage1_steps=steps, stage2_steps=1, artifact_root=str(root), run_key="k"
    )


def model_state(checkpoint: str) -> dict:
    from components.training.checkpoints import load_checkpoint

    return load_checkpoint(checkpoint)["model_state"]


@pytest.mark.slow
def test_a_stage_step_with_two_processes_logs_world_size_2_and_matches_one_process(
    tmp_path, monkeypatch, capfd, small_prepared
):
    """ABSTRACTINATOR_TRAINING_PROCESSES=2 (what N GPUs give a pod; gloo on CPU here): the stage step runs the
    trainer under torchrun, each process on half the batch, and ends where the one-process step ends."""
    from pipelines.step_results import PrepareStepResult
    from pipelines.step_train import train_stage_step

    prepared, data_hash = small_prepared
    data = PrepareStepResult(data_uri=str(prepared), data_hash=data_hash)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABSTRACTINATOR_TRAINING_PROCESSES", raising=False)
    one = train_stage_step(stage_spec(tmp_path / "one", 4), "stage1", data, tracking=False)
    assert "world_size=1" in "".join(capfd.readouterr())
    monkeypatch.setenv("ABSTRACTINATOR_TRAINING_PROCESSES", "2")
    two = train_stage_step(stage_spec(tmp_path / "two", 4), "stage1", data, tracking=False)
    logs = "".join(capfd.readouterr())
    assert "world_size=2" in logs and "train_start" in logs
    loss = "loss/total_avg_accum"
    assert two.final_metrics[loss] == pytest.approx(one.final_metrics[loss], rel=2e-3)  # as the DDP test
    a, b = model_state(one.checkpoint_uri), model_state(two.checkpoint_uri)
    worst = max(float((a[key].float() - b[key].float()).abs().max()) for key in a if a[key].is_floating_point())
    assert worst < 1e-4  # the same global batch: the same parameters up to reduction order (about 2e-6)
    assert two.base_components_uri and Path(two.base_components_uri).is_file()


@pytest.mark.slow
def test_a_killed_stage_resumes_on_retry_and_ends_with_the_uninterrupted_parameters(
    tmp_path, monkeypatch, capfd, small_prepared
):
    """A stage killed mid-run (SIGKILL: a preempted pod, nothing saved on the way out) and run again, as KFP's
    retry does, resumes from its own last checkpoint and ends with the same parameters as a run never killed."""
    import subprocess
    import time

    import torch

    from pipelines.step_results import PrepareStepResult
    from pipelines.step_train import train_stage_step

    prepared, data_hash = small_prepared
    data = PrepareStepResult(data_uri=str(prepared), data_hash=data_hash)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("ABSTRACTINATOR_TRAINING_PROCESSES", raising=False)
    monkeypatch.chdir(tmp_path)
    steps = 10
    straight = train_stage_step(stage_spec(tmp_path / "straight", steps), "stage1", data, tracking=False)

    killed_root = tmp_path / "killed"
    script = (
        f"from pipelines.step_train import train_stage_step\nfrom tests.test_cluster_torchrun import stage_spec\n"
        f"from pathlib import Path\nfrom pipelines.step_results import PrepareStepResult\n"
        f"data = PrepareStepResult.model_validate_json({data.model_dump_json()!r})\n"
        f"train_stage_step(stage_spec(Path({str(killed_root)!r}), {steps}), 'stage1', data, tracking=False)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = killed_root / "runs" / "k" / "stage1" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("checkpoint_step*.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, "the first attempt ended before it could be killed"
        time.sleep(0.05)
    process.kill()
    process.wait()
    saved = sorted(int(p.stem.removeprefix("checkpoint_step")) for p in checkpoints.glob("checkpoint_step*.pt"))
    assert saved and max(saved) < steps  # killed mid-run, after at least one checkpoint

    capfd.readouterr()
    retried = train_stage_step(stage_spec(killed_root, steps), "stage1", data, tracking=False)
    logs = "".join(capfd.readouterr())
    assert "stage_resumes" in logs and f"start_step={max(saved)}" in logs  # not from step 0
    assert retried.checkpoint_uri.endswith(f"checkpoint_step{steps}.pt")
    a, b = model_state(straight.checkpoint_uri), model_state(retried.checkpoint_uri)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
