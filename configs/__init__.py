"""Experiment config schema (strict pydantic, in sections) and loading. Imports nothing of ours: model/ builds on it."""

from configs.errors import UserError
from configs.loading import ConfigError, apply_overrides, load_config, validate_config
from configs.schema import (
    CheckpointConfig,
    CompressorLevelConfig,
    DataConfig,
    ExpConfig,
    LoggingConfig,
    ModelConfig,
    OptimConfig,
    TopTransformerConfig,
    ValidationConfig,
)

__all__ = [
    "CheckpointConfig",
    "CompressorLevelConfig",
    "ConfigError",
    "DataConfig",
    "ExpConfig",
    "LoggingConfig",
    "ModelConfig",
    "OptimConfig",
    "TopTransformerConfig",
    "UserError",
    "ValidationConfig",
    "apply_overrides",
    "load_config",
    "validate_config",
]
