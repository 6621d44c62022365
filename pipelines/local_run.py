"""Run the training pipeline on this machine with `kfp.local.SubprocessRunner`: each task is a subprocess of
this interpreter (the project is installed in the venv, so the component code imports). Platform settings
(GPU, Secret) are left out: kfp.local ignores them. The steps themselves write to the artifact root (S3 via
boto3 or a local folder); kfp.local's own pipeline_root only holds its task bookkeeping.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from components.logs import get_logger

log = get_logger(__name__)


def run_local(arguments: dict[str, Any], pipeline_root: Path | None = None) -> dict[str, Any]:
    """Run the pipeline with `arguments` (pipeline parameters); returns {'reason', 'seconds', 'pipeline_root'}.
    A failing task raises RuntimeError naming it. Without `pipeline_root`, kfp.local's folder is a temp dir
    removed afterwards."""
    from kfp import local

    from pipelines.training import build_pipeline

    root = Path(pipeline_root or tempfile.mkdtemp(prefix="abstractinator-kfp-local-"))
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    started = time.monotonic()
    try:
        task = build_pipeline(local=True)(**arguments)
        reason = task.output if hasattr(task, "output") else None
    finally:
        if pipeline_root is None:  # our own bookkeeping folder: the steps' artifacts live in the artifact root
            shutil.rmtree(root, ignore_errors=True)
    seconds = round(time.monotonic() - started, 1)
    log.info("pipeline_run_local_done", seconds=seconds, pipeline_root=str(root), reason=reason)
    return {"reason": reason, "seconds": seconds, "pipeline_root": str(root)}
