"""The compiled retry policy of the training tasks, read as KFP 2.17.0 and Argo will read it, and the GPU-hour
bound a failing run can burn, computed from the compiled YAML alone and stated in docs/cluster.md.

How the spec becomes Argo's (kubeflow/pipelines 2.17.0, backend/src/v2/compiler/argocompiler/container.go):
`maxRetryCount` -> `retryStrategy.limit`, `backoffDuration` / `backoffFactor` / `backoffMaxDuration` ->
`retryStrategy.backoff.{duration,factor,maxDuration}`, and no `retryPolicy` (Argo's default, OnFailure). Argo
(v4.0.5, workflow/controller/operator.go `processNodeRetries`) waits duration * factor^(n-1) before retry n, starts
no retry after maxDuration from the first attempt's start, and cuts a retried pod's deadline to that point.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main

REPO = Path(__file__).resolve().parents[1]
TRAINING = ("stage1-pretrain", "stage2-top-lm")
GPU_TASKS = (*TRAINING, "evaluate")


def compile_with(tmp_path: Path, *flags: str) -> tuple[dict, dict]:
    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "--out", str(out), *flags]) == 0
    pipeline, platform = yaml.safe_load_all(out.read_text())
    return pipeline, platform


def tasks_of(pipeline: dict) -> dict:
    (condition,) = [name for name in pipeline["root"]["dag"]["tasks"] if name.startswith("condition")]
    return {**pipeline["root"]["dag"]["tasks"], **pipeline["components"][f"comp-{condition}"]["dag"]["tasks"]}


def seconds(duration: str) -> int:
    assert duration.endswith("s"), duration  # the IR keeps protobuf Durations as "<n>s"
    return int(duration[:-1])


def deadline_s(platform: dict, task: str) -> int:
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return int(executors[f"exec-{task}"]["activeDeadlineSeconds"])


def gpus_of(pipeline: dict, task: str) -> int:
    container = pipeline["deploymentSpec"]["executors"][f"exec-{task}"]["container"]
    return int(container.get("resources", {}).get("accelerator", {}).get("resourceCount", 0))


def attempts_and_window(pipeline: dict, platform: dict, task: str) -> tuple[int, int | None]:
    """(attempts, Argo's maxDuration in seconds) of a task as compiled; no retry policy: (1, None)."""
    policy = tasks_of(pipeline)[task].get("retryPolicy")
    if not policy:
        return 1, None
    return policy["maxRetryCount"] + 1, seconds(policy["backoffMaxDuration"])


def gpu_hours_from_spec(pipeline: dict, platform: dict) -> float:
    """attempts x deadline x GPUs, summed over the GPU tasks, from the compiled YAML alone."""
    total = 0
    for task in GPU_TASKS:
        attempts, _ = attempts_and_window(pipeline, platform, task)
        total += attempts * deadline_s(platform, task) * gpus_of(pipeline, task)
    return total / 3600


@pytest.mark.parametrize(
    "flags",
    [(), ("--gpus", "4", "--training-retries", "2", "--training-timeout", "7200")],
    ids=["defaults", "4-gpus-2-retries-2h"],
)
def test_every_retry_fits_in_the_window_argo_allows(tmp_path, flags):
    """Each training task's attempts may all run to their deadline, with the backoffs between them, before
    Argo's maxDuration ends the retries (kfp's default, 3600 s, would have ended them after the first hour)."""
    pipeline, platform = compile_with(tmp_path, *flags)
    for task in TRAINING:
        policy = tasks_of(pipeline)[task]["retryPolicy"]
        attempts, window = attempts_and_window(pipeline, platform, task)
        backoffs = sum(seconds(policy["backoffDuration"]) * policy["backoffFactor"] ** n for n in range(attempts - 1))
        assert attempts >= 2 and seconds(policy["backoffDuration"]) > 0
        assert window >= attempts * deadline_s(platform, task) + backoffs, task
    assert "retryPolicy" not in tasks_of(pipeline)["evaluate"]


def test_the_compile_command_and_the_docs_state_the_gpu_hour_bound(tmp_path, capsys):
    """The bound printed by `pipeline compile` is the compiled YAML's attempts x deadline x GPUs, and
    docs/cluster.md states the default compile's (--gpus 1) number and a formula that gives it."""
    pipeline, platform = compile_with(tmp_path, "--gpus", "1")
    bound = gpu_hours_from_spec(pipeline, platform)
    out = capsys.readouterr().out
    assert f"a failing run holds at most {bound:g} GPU hours" in out
    docs = " ".join((REPO / "docs" / "cluster.md").read_text().split())  # lines joined
    assert f"at most **{bound:g} GPU hours**" in docs, "docs/cluster.md must state the default's bound"
    stated = re.search(r"GPUs x \(2 x \(retries \+ 1\) x training deadline \+ evaluation deadline\)", docs)
    assert stated, "docs/cluster.md must state the formula"

    pipeline, platform = compile_with(tmp_path, "--gpus", "4", "--training-retries", "2", "--training-timeout", "7200")
    assert gpu_hours_from_spec(pipeline, platform) == 4 * (2 * 3 * 2 + 6)  # hours: 4 GPUs, 3 attempts of 2 h, eval 6 h
    assert "at most 72 GPU hours" in capsys.readouterr().out
