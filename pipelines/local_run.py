"""Run the training pipeline on this machine with `kfp.local.SubprocessRunner`: each task is a subprocess of
this interpreter (the project is installed in the venv, so the component code imports). Platform settings
(GPU, Secret, ConfigMap) are left out: kfp.local ignores them. The steps themselves write to the artifact root
(S3 via boto3 or a local folder); kfp.local's pipeline_root holds its task bookkeeping, the KFP artifacts
(Dataset, Model, Metrics, Markdown) and, with a `pipeline_root` given, its task cache (kfp.local 2.17 caches
the tasks compiled with caching on, as a cluster does), so an unchanged rerun reuses trained stages.

The screen shows one line per task start and end, progress bars (pipelines/local_progress.py); the full
executor logs go to `log_path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from components.infrastructure.logs import get_logger
from configs.errors import UserError

log = get_logger(__name__)
PROGRESS_ENV = "ABSTRACTINATOR_PIPELINE_PROGRESS"


class LocalRunError(UserError):
    """A task of a local run failed: one line naming it and where its full logs are (its own traceback, if it
    had one, is in those logs)."""


def run_local(
    arguments: dict[str, Any], pipeline_root: Path | None = None, log_path: Path | None = None, follow: bool = True
) -> dict[str, Any]:
    """Run the pipeline with `arguments` (pipeline parameters); returns {'reason', 'seconds', 'pipeline_root',
    'log_path', 'evaluation'} ('evaluation': the evaluate task's result when it ran, else None). A failing task
    raises LocalRunError naming it and `log_path` (its last log lines are on the screen, all of them in the log).
    Without `pipeline_root`, kfp.local's folder is a temp dir removed afterwards (and nothing is cached).
    `follow=False` leaves kfp.local's output as it is."""
    from kfp import local

    from components.infrastructure.settings import get_settings
    from pipelines.local_progress import FollowableOutput, default_log_path
    from pipelines.training import build_pipeline

    root = Path(pipeline_root or tempfile.mkdtemp(prefix="abstractinator-kfp-local-"))
    root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path or default_log_path(get_settings().data_home)).absolute()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
        enable_caching=pipeline_root is not None,
    )
    started = time.monotonic()
    earlier_runs = set(root.iterdir())
    previous = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "1" if follow else "0"  # the tasks' trainers draw progress the view can read
    try:
        with log_path.open("w") as log_file, warnings.catch_warnings():
            # "custom or non-Python base image": the image is the cluster's; here the venv runs the tasks
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            view = FollowableOutput(log_file) if follow else None
            with contextlib.redirect_stdout(view) if view else contextlib.nullcontext():
                try:
                    task = build_pipeline(local=True)(**arguments)
                except RuntimeError as error:  # kfp.local's "Task ... finished with status FAILURE"
                    raise LocalRunError(f"{' '.join(str(error).split())} (full task logs: {log_path})") from None
                finally:
                    if view:
                        view.close_view()
        reason = task.output if hasattr(task, "output") else None
        evaluation = _evaluation_of(set(root.iterdir()) - earlier_runs)
    finally:
        if previous is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = previous
        if pipeline_root is None:  # our own bookkeeping folder: the steps' artifacts live in the artifact root
            shutil.rmtree(root, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    log.info("pipeline_run_local_done", seconds=seconds, pipeline_root=str(root), reason=reason)
    return {
        "reason": reason,
        "seconds": seconds,
        "pipeline_root": str(root),
        "log_path": str(log_path),
        "evaluation": evaluation,
    }


def _evaluation_of(new_runs: set[Path]) -> dict | None:
    """The evaluate task's result (its `result` output) in this run's folder (None when the run skipped it).
    kfp.local 2.17 keeps each task's outputs in <pipeline_root>/<pipeline name>-<timestamp>/<task>/executor_output.json
    (kfp/local/executor_input_utils.py: `get_local_pipeline_resource_name`, `construct_local_task_root`)."""
    from pipelines.step_table import EVALUATE, RESULT_OUTPUT, kfp_task_name

    if len(new_runs) != 1:  # another run started beside this one in the same folder: not ours to guess
        return None
    outputs = next(iter(new_runs)) / kfp_task_name(EVALUATE) / "executor_output.json"
    if not outputs.is_file():
        return None
    return json.loads(outputs.read_text()).get("parameterValues", {}).get(RESULT_OUTPUT)
