"""What every pipeline task checks and records at run time, on a cluster or under kfp.local.

Run-time settings reach a cluster task as environment variables from the ConfigMap `abstractinator-pipeline-settings`
(kfp-kubernetes `use_config_map_as_env`; see pipelines/training.py), never as values compiled into the YAML:

    MLFLOW_TRACKING_URI             the tracking server (no credentials: those come from a Secret)
    ABSTRACTINATOR_S3_ENDPOINT_URL  S3-compatible endpoint; empty: AWS
    AWS_DEFAULT_REGION              the bucket's region
    ABSTRACTINATOR_ARTIFACT_ROOT    s3://bucket/prefix for data, checkpoints and reports (the `artifact_root`
                                    pipeline parameter overrides it when not empty)

A compiled cluster task also carries ABSTRACTINATOR_REQUIRE_TRACKING_SERVER=1: without a tracking server the steps
would fall back to ./mlruns in the image's working directory (not writable, and a throwaway registry per pod), so
`check_task_environment` stops the task at once with one line naming the missing key. It also stops a task whose
image holds other code than the pipeline was compiled from (the compiled code identity is a task input, part of
KFP's cache key, so a cache hit always means "same code").

The KFP run id (pod label `pipeline/runid`, set by the API server: kubeflow/pipelines
backend/src/apiserver/template/argo_template.go `SetPodMetadataLabels`) reaches a task as KFP_RUN_ID through
the downward API; the steps tag their MLflow runs with it (`kfp_run_id`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from components.infrastructure.tracking import KFP_RUN_ID_ENV
from configs.errors import UserError

SETTINGS_CONFIG_MAP = "abstractinator-pipeline-settings"
SETTINGS_KEYS = (
    "MLFLOW_TRACKING_URI",
    "ABSTRACTINATOR_S3_ENDPOINT_URL",
    "AWS_DEFAULT_REGION",
    "ABSTRACTINATOR_ARTIFACT_ROOT",
)
REQUIRE_TRACKING_ENV = "ABSTRACTINATOR_REQUIRE_TRACKING_SERVER"
RUN_ID_ENV = KFP_RUN_ID_ENV
RUN_ID_LABEL = "pipeline/runid"


class TaskSettings(BaseSettings):
    """The task's environment, read when asked (tests change it)."""

    model_config = SettingsConfigDict(extra="ignore")

    mlflow_tracking_uri: str = Field("", alias="MLFLOW_TRACKING_URI")
    artifact_root: str = Field("", alias="ABSTRACTINATOR_ARTIFACT_ROOT")
    require_tracking_server: bool = Field(False, alias=REQUIRE_TRACKING_ENV)
    pipeline_progress: bool = Field(False, alias="ABSTRACTINATOR_PIPELINE_PROGRESS")


class TaskEnvironmentError(UserError):
    """The task cannot run in this environment; the message is one line saying what to fix."""


def artifact_root(requested: str) -> str:
    """The pipeline parameter if set, else ABSTRACTINATOR_ARTIFACT_ROOT (from the settings ConfigMap)."""
    root = requested.strip() or TaskSettings().artifact_root.strip()
    if not root:
        raise TaskEnvironmentError(
            f"no artifact root: set key ABSTRACTINATOR_ARTIFACT_ROOT in ConfigMap {SETTINGS_CONFIG_MAP} "
            "(or pass the artifact_root parameter)"
        )
    return root


def task_run_spec(
    code_identity: str,
    config: str,
    overrides: list,
    stage1_steps: int,
    stage2_steps: int | None,
    artifact_root_parameter: str,
    run_key: str,
):
    """What every component does first: check the task's environment, then build the run's RunSpec from the
    pipeline parameters (an empty run key means derived; an empty artifact root means the ConfigMap's; no
    stage2_steps: the stage-1 task, which must not depend on it)."""
    from pipelines.run_spec import RunSpec

    check_task_environment(code_identity)
    return RunSpec(
        config=config,
        overrides=overrides,
        stage1_steps=stage1_steps,
        stage2_steps=stage2_steps,
        artifact_root=artifact_root(artifact_root_parameter),
        run_key=run_key or None,
    )


def check_task_environment(compiled_code_identity: str) -> None:
    """Stop before any work when the task cannot do it right (see the module docstring)."""
    from components.infrastructure.provenance import code_identity

    settings = TaskSettings()
    if settings.require_tracking_server and not settings.mlflow_tracking_uri.strip():
        raise TaskEnvironmentError(
            f"no tracking server: key MLFLOW_TRACKING_URI is missing or empty in ConfigMap {SETTINGS_CONFIG_MAP}"
        )
    if compiled_code_identity and compiled_code_identity != code_identity():
        raise TaskEnvironmentError(
            f"this image's code ({code_identity()[:12]}) is not the code the pipeline was compiled from "
            f"({compiled_code_identity[:12]}): build the image and compile the pipeline from the same checkout"
        )


def show_progress() -> bool:
    """Draw the trainer's progress bar: under `abstractinator pipeline run-local`, which turns it into bars on
    the screen (pipelines/local_progress.py); not in a pod's log."""
    return TaskSettings().pipeline_progress


@contextlib.contextmanager
def task_failure() -> Iterator[None]:
    """In a component: a problem the user fixes (settings, config, damaged or mismatched data) ends the task with
    one `error: ...` line and exit status 2 instead of a traceback. Anything else still raises (and KFP retries
    the training tasks)."""
    from components.infrastructure.redaction import print_error

    try:
        yield
    except UserError as error:
        print_error(error)
        raise SystemExit(2) from None
