"""The typed values one pipeline step hands the next: serialised once by the step that makes them (a kfp dict
output, or results/<step>.json of the dvc steps) and validated on read, so a missing, unknown or bad field fails
the reading step in one line instead of reaching the registry."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from configs.errors import UserError
from configs.loading import describe_validation_error


class EvaluateStepResult(BaseModel):
    """What the evaluation hands the promote step, as ONE typed value: the kfp `evaluation` dict output and
    results/evaluate.json alike, serialised once here and validated on read (`read_evaluation`)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # a NaN metric survives the JSON

    report_uri: str = Field(description="report.json under the run's eval folder.")
    report_hash: str = Field(description="Its sha256: the promote step refuses a report that differs.")
    metrics: dict[str, float]
    mlflow_run_id: str | None = Field(None, description="The run the evaluation logged its metrics to.")


class StepResultError(UserError):
    """A step's result handed to the next step does not validate: one line naming the field."""


def read_evaluation(value: dict | str | bytes, origin: str = "evaluation") -> EvaluateStepResult:
    """The evaluation's result from the kfp dict output or the JSON of results/evaluate.json; a missing or
    unknown key, or a bad value, raises StepResultError (the promote step then registers nothing)."""
    try:
        if isinstance(value, str | bytes):
            return EvaluateStepResult.model_validate_json(value)
        return EvaluateStepResult.model_validate(value)
    except ValidationError as error:
        raise StepResultError(f"{origin}: {describe_validation_error(error)}") from None
