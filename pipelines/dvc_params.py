"""params.yaml of the dvc stages, validated by pydantic (the same RunSpec and GateRules the kfp pipeline and
the CLI use): a wrong key or value fails naming the field."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.gate_rules import GateRules
from configs import ConfigError
from configs.loading import describe_validation_error
from pipelines.steps import RunSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataParams(_Strict):
    source: str = "default"
    out_dir: Path = Path("data/prepared")
    include_eval_sets: bool = True


class EvaluateStepParams(_Strict):
    tasks: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)
    max_eval_bytes: int | None = Field(None, ge=1)
    canterbury: bool = True


class RegistryParams(_Strict):
    model_name: str = "abstractinator"


class DvcParams(_Strict):
    run: RunSpec
    data: DataParams = Field(default_factory=DataParams)
    evaluate: EvaluateStepParams = Field(default_factory=EvaluateStepParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    gate: GateRules = Field(default_factory=GateRules)


def load_dvc_params(path: Path) -> DvcParams:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot be read ({str(error).splitlines()[0]})") from None
    try:
        return DvcParams.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(f"{path}: {describe_validation_error(error)}") from None
