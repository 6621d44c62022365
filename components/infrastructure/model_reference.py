"""The one parser of MLflow registry references: `models:/NAME@ALIAS` and `models:/NAME/VERSION` (what the
evaluation, the codec and the CLI accept wherever a checkpoint may be named)."""

from __future__ import annotations

from typing import NamedTuple

PREFIX = "models:/"


class ModelReference(NamedTuple):
    name: str
    alias: str | None
    version: str | None

    def __str__(self) -> str:
        return f"{PREFIX}{self.name}@{self.alias}" if self.alias else f"{PREFIX}{self.name}/{self.version}"


def parse_model_reference(uri: str) -> ModelReference:
    """NAME and ALIAS or VERSION of a registry reference; ValueError (one line) for anything else."""
    reference = uri.removeprefix(PREFIX) if uri.startswith(PREFIX) else ""
    if "@" in reference:
        name, _, alias = reference.partition("@")
        version = None
    else:
        name, _, version = reference.rpartition("/")
        alias = None
    if not name or not (alias or version) or (version is not None and not version.isdigit()):
        raise ValueError(f"{uri}: a registry reference is {PREFIX}NAME@ALIAS or {PREFIX}NAME/VERSION")
    return ModelReference(name, alias, version)
