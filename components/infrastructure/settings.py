"""Process-wide settings, read once from the environment (prefix ABSTRACTINATOR_) and never from scattered
os.environ reads. Secrets (S3 keys) are not settings: boto3 reads AWS_* variables itself, so they never pass
through our code, logs or MLflow params."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ABSTRACTINATOR_", extra="ignore")

    data_home: Path = Field(
        default=Path(".data"),
        description="Downloads, prepared corpora and eval sets live here (relative to the working directory).",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ABSTRACTINATOR_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3-compatible endpoint (SeaweedFS, MinIO); None means AWS itself.",
    )
    s3_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("ABSTRACTINATOR_S3_REGION", "AWS_DEFAULT_REGION", "AWS_REGION"),
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ABSTRACTINATOR_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="None: a local store under ./mlruns/<project_name> (no server needed).",
    )
    carried_archives_dir: Path | None = Field(
        default=None,
        description="A read-only folder of the pinned archives (default corpus, eval sets) that the image carries "
        "(docker/Dockerfile): a pinned archive is read from there (its sha256 checked) and never downloaded; one "
        "missing or damaged there is an error. Unset (or empty): archives are downloaded into the downloads folder.",
    )
    log_format: str = Field(default="console", description="'console' for people, 'json' for machines.")
    git_commit: str | None = Field(
        default=None,
        description="The code's commit where there is no git checkout (set in the training image at build time).",
    )

    @field_validator("s3_endpoint_url", "mlflow_tracking_uri", "s3_region", "carried_archives_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value, info):
        """A key present but empty (a cluster's settings ConfigMap with no endpoint: AWS) means "not set"."""
        if isinstance(value, str) and not value.strip():
            return "us-east-1" if info.field_name == "s3_region" else None
        return value

    @property
    def downloads_dir(self) -> Path:
        return self.data_home / "downloads"

    @property
    def default_prepared_dir(self) -> Path:
        return self.data_home / "prepared" / "default"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
