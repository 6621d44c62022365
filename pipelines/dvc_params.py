"""params.yaml of the dvc stages, validated by pydantic (the same RunSpec and GateRules the kfp pipeline and
the CLI use): a wrong key or value fails naming the field.

dvc.yaml declares files named here as dependencies, so three values must be what dvc can watch: `run.config` is
the config file's path (not a config name), `run.run_key` is set (the checkpoint folders are outputs), and a
local `data.source` lies under data/local (the folder dvc.yaml declares for the prepare stage)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.registry.gate_rules import GateRules
from configs import ConfigError
from configs.loading import describe_validation_error
from pipelines.run_spec import RunSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


LOCAL_SOURCE_DIR = Path("data/local")


class DataParams(_Strict):
    source: str = "default"
    out_dir: Path = Path("data/prepared")
    include_eval_sets: bool = True

    @field_validator("source")
    @classmethod
    def _watched_if_local(cls, source: str) -> str:
        if source == "default" or source.startswith(("s3://", "hf:")):
            return source
        path = Path(source)
        if path.is_absolute() or not (path == LOCAL_SOURCE_DIR or LOCAL_SOURCE_DIR in path.parents):
            raise ValueError(
                f"a local source must lie under {LOCAL_SOURCE_DIR}/ (the folder dvc.yaml declares as "
                f"the prepare stage's dependency), got {source!r}"
            )
        return source


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

    @model_validator(mode="after")
    def _dvc_can_watch_it(self) -> DvcParams:
        if not Path(self.run.config).suffix:  # a name like "ci" is resolved by code dvc cannot follow
            raise ValueError(
                f"run.config: give the config file's path, e.g. configs/{self.run.config}_config.py "
                "(dvc.yaml declares it as a dependency)"
            )
        if not self.run.run_key:
            raise ValueError("run.run_key: must be set (dvc.yaml names the checkpoint folders by it)")
        if self.run.stage2_steps is None:  # None is for the kfp stage-1 task alone
            raise ValueError("run.stage2_steps: must be a step count (>= 1)")
        return self


def load_dvc_params(path: Path) -> DvcParams:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot be read ({str(error).splitlines()[0]})") from None
    try:
        return DvcParams.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError(f"{path}: {describe_validation_error(error)}") from None
