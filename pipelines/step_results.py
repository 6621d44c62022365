"""The typed values the pipeline's steps hand each other, one model per step (pipelines/step_table.py names which):
serialised once by the step that makes it (the kfp task's one dict output `result`, or results/<step>.json of
the dvc steps) and validated on read (`StepResult.read`), so a missing, unknown or bad field fails the reading
step in one line naming it instead of reaching the registry. Adding a field: the model here, the step that
fills it and the step that reads it; the kfp wiring and the dvc files carry the whole value unchanged.

KFP's typed artifacts (Dataset, Model, Metrics, Markdown: pipelines/kfp_artifacts.py) still carry the files;
these values carry what describes them (URIs, hashes, runs, metrics)."""

from __future__ import annotations

import json
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from components.infrastructure.redaction import redact_data
from configs.errors import UserError
from configs.loading import describe_validation_error

TrainingStage = Literal["stage1", "stage2"]


class StepResultError(UserError):
    """A step's result handed to the next step does not validate: one line naming the field."""


class StepResult(BaseModel):
    """A step's result. Unknown keys are refused (a misspelt or stale field fails instead of being dropped); a NaN
    or infinite metric is written as the string "NaN" / "Infinity" (strict JSON, which kfp's protobuf Struct and
    the launcher's JSON need) and read back as the float."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")

    @field_validator("*", mode="after")
    @classmethod
    def _without_credentials(cls, value):
        """Every string masked of credentials (components/infrastructure/redaction.py): a result is kept in kfp's
        metadata store, its UI and results/<step>.json, and the tracking URI the promote step used may carry
        the MLflow password (a full local run's promote output held it)."""
        return redact_data(value)

    @classmethod
    def read(cls, value: dict | str | bytes, origin: str) -> Self:
        """The result from a kfp dict output or a results/<step>.json text; StepResultError (one line naming
        `origin` and the field) when a key is missing or unknown or a value is bad."""
        try:
            if isinstance(value, str | bytes):
                return cls.model_validate_json(value)
            return cls.model_validate(value)
        except ValidationError as error:
            raise StepResultError(f"{origin}: {describe_validation_error(error)}") from None

    def handed_on(self) -> dict:
        """The kfp dict output, as strict JSON values: a field that is None is left out (it reads back as its
        default, None), since kfp refuses None anywhere in a dict parameter (kfp 2.17
        compiler/pipeline_spec_builder.py `to_protobuf_value`, which kfp.local runs on every task input), and a
        non-finite metric is its string, since protobuf's JSON refuses a NaN number (json_format: "Fail to
        serialize NaN for Value.number_value")."""
        return json.loads(self.model_dump_json(exclude_none=True))


class PrepareStepResult(StepResult):
    """What prepare_data hands on: the data and nothing else, since KFP's cache key of every training task holds
    this value whole (and dvc hashes results/prepare_data.json as a dependency). The champion check's decision is
    the task's control output, not part of the result (pipelines/kfp_tasks.py)."""

    data_uri: str = Field(description="The prepared data: content addressed under the artifact root, or a folder.")
    data_hash: str = Field(description="Its content hash: every reader checks the data against it.")


class TrainStepResult(StepResult):
    """What a training step (stage1_pretrain, stage2_top_lm) hands on."""

    stage: TrainingStage
    checkpoint_uri: str
    checkpoint_hash: str = Field(description="sha256 of the final checkpoint: each reader checks it.")
    base_components_uri: str | None = Field(None, description="Stage 1's frozen base for stage 2.")
    base_components_hash: str | None = None
    mlflow_run_id: str | None = Field(None, description="The training run (lineage of the registered version).")
    final_metrics: dict[str, float] = Field(default_factory=dict)


class EvaluateStepResult(StepResult):
    """What the evaluation hands the promote step."""

    report_uri: str = Field(description="report.json under the run's eval folder.")
    report_hash: str = Field(description="Its sha256: the promote step refuses a report that differs.")
    metrics: dict[str, float]
    mlflow_run_id: str | None = Field(None, description="The run the evaluation logged its metrics to.")


class PromoteStepResult(StepResult):
    """The registry's decision on the run's model (the end of the pipeline)."""

    model: str
    version: str
    action: str
    promoted: bool
    champion: str | None = None
    reasons: list[str]
    tracking_uri: str
