"""Running the trainer under torchrun inside one pipeline step: one process per GPU the pod was given.

A pipeline stage (pipelines.step_train.train_stage_step: the kfp component and `abstractinator pipeline step`)
calls `run_training(params, training_processes())`: with 0 or 1 GPU it calls `components.training.train.train` in
its own process (nothing changes from the local runner); with N > 1 it writes the TrainParams to a JSON file and
runs `python -m torch.distributed.run --standalone --nproc_per_node N -m pipelines.torchrun --params F --result R`
(this module's `main`), whose rank 0 writes the TrainResult back as JSON. The same `components.training.train.train`
runs in every case; DDP, rank-0-only logging and checkpointing live there (components/training/distributed.py).

SIGTERM (a pod eviction) sent to the step is passed on to torchrun, which passes it to every rank: the trainer
saves a checkpoint and exits 143, and `run_training` returns the interrupted result (or raises if none was
written). For several nodes, manifests/pytorchjob/ runs the same trainer from a Training Operator PyTorchJob.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from components.training.train import TrainParams, TrainResult

WORKER_MODULE = "pipelines.torchrun"
PROCESSES_ENV = "ABSTRACTINATOR_TRAINING_PROCESSES"


class DistributedTrainingError(RuntimeError):
    """torchrun exited without a result from rank 0."""


def trainer_command(
    nproc: int,
    args: list[str],
    *,
    module: str = "abstractinator",
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The torchrun command line that runs `python -m <module> <args...>` on `nproc` processes per node.

    `module="abstractinator"` with args `["train", "--config", ...]` is the documented CLI form. `python -m
    torch.distributed.run` is torchrun itself, started with the same interpreter as the caller (a kfp component's
    Python may not have a `torchrun` script on PATH). One node uses `--standalone` (a local rendezvous); several
    need `rdzv_endpoint` (host:port of node 0) and run c10d rendezvous.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1 (got {nproc})")
    if nnodes < 1:
        raise ValueError(f"nnodes must be >= 1 (got {nnodes})")
    command = [python, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("several nodes need rdzv_endpoint (host:port of node 0)")
        command += [f"--nnodes={nnodes}", "--rdzv_backend=c10d", f"--rdzv_endpoint={rdzv_endpoint}"]
    return [*command, "-m", module, *args]


def visible_gpus() -> int:
    """How many CUDA devices this pod can see (the nvidia.com/gpu limit it was scheduled with)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def training_processes() -> int:
    """How many trainer processes a pipeline stage runs: ABSTRACTINATOR_TRAINING_PROCESSES if set (N CPU
    processes with gloo where there is no GPU: how the tests run it), else one per visible GPU, at least 1."""
    import os

    configured = os.environ.get(PROCESSES_ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            from configs import ConfigError

            raise ConfigError(f"{PROCESSES_ENV}={configured!r}: must be a whole number >= 1")
        return int(configured)
    return max(visible_gpus(), 1)


def _run_forwarding_sigterm(command: list[str]) -> int:
    """Run `command`, passing a SIGTERM this process receives on to it; its exit status."""
    process = subprocess.Popen(command)

    def forward(signum, frame) -> None:
        process.send_signal(signal.SIGTERM)

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: no forwarding
        previous = None
    try:
        return process.wait()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def run_training(params: TrainParams, gpus: int | None = None, workdir: Path | None = None) -> TrainResult:
    """Train with `params` on `gpus` processes (default: every visible GPU); in-process when that is 0 or 1."""
    from components.training.train import TrainResult, train

    nproc = visible_gpus() if gpus is None else gpus
    if nproc <= 1:
        return train(params)
    with tempfile.TemporaryDirectory(prefix="abstractinator-torchrun-", dir=workdir) as tmp:
        params_file, result_file = Path(tmp) / "train_params.json", Path(tmp) / "train_result.json"
        params_file.write_text(params.model_dump_json())
        status = _run_forwarding_sigterm(
            trainer_command(nproc, ["--params", str(params_file), "--result", str(result_file)], module=WORKER_MODULE)
        )
        if result_file.is_file():
            return TrainResult.model_validate_json(result_file.read_text())
        raise DistributedTrainingError(f"torchrun with {nproc} processes exited with status {status} and no result")


def main(argv: list[str] | None = None) -> int:
    """One torchrun worker: train with the params file; rank 0 writes the result file."""
    from components.infrastructure.atomic_files import write_text_atomic
    from components.training.train import TrainParams, train

    parser = argparse.ArgumentParser(prog=f"python -m {WORKER_MODULE}")
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = train(TrainParams.model_validate_json(args.params.read_text()))
    if result.rank == 0:
        write_text_atomic(args.result, result.model_dump_json())  # a reader never sees half a file
    return 143 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
