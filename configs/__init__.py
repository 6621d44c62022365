"""Experiment config schema (strict pydantic) and loading. Imports nothing of ours: model/ builds on it."""

from configs.errors import UserError
from configs.loading import ConfigError, apply_overrides, load_config, validate_config
from configs.schema import CompressorLevelConfig, ExpConfig, TopTransformerConfig

__all__ = [
    "CompressorLevelConfig",
    "ConfigError",
    "ExpConfig",
    "TopTransformerConfig",
    "UserError",
    "apply_overrides",
    "load_config",
    "validate_config",
]
