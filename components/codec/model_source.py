"""The model a file is coded with: loaded through components/evaluation/model_loading.py, identified for the header.

A registry reference with an alias (models:/name@champion) is pinned to the version the alias points at now
(models:/name/3), so `decompress` without --model finds the same weights after the alias has moved on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.codec.file_format import CodecError, ModelIdentity, weights_sha256
from components.evaluation.model_loading import load_model


@dataclass
class CodecModel:
    model: object
    identity: ModelIdentity


def _registry_pin(location: str) -> tuple[str, str, str]:
    """(name, version, pinned reference) of models:/name@alias or models:/name/version."""
    from components.infrastructure.model_reference import parse_model_reference

    try:
        name, tail, version = parse_model_reference(location)
    except ValueError as error:
        raise CodecError(str(error)) from None
    if version is not None:
        return name, version, location
    from components.infrastructure.redaction import one_line, redact
    from components.infrastructure.tracking import mlflow_failures, resolve_tracking_uri
    from components.registry.promote import alias_version, client_for

    tracking_uri = resolve_tracking_uri(None)
    try:
        version = alias_version(client_for(tracking_uri), name, tail)
    except mlflow_failures() as error:  # a failing or unreachable server: one line, the password masked
        raise CodecError(f"{location}: MLflow at {redact(tracking_uri)} failed: {one_line(error)}") from None
    if version is None:
        raise CodecError(f"{location}: no such model alias in the MLflow registry")
    return name, str(version.version), f"models:/{name}/{version.version}"


def load_codec_model(location: str) -> CodecModel:
    """The model at `location` (checkpoint file/folder, s3://, models:/...) on CPU, with its identity."""
    name = version = None
    source = location
    if location.startswith("models:/"):
        name, version, source = _registry_pin(location)
    elif not location.startswith("s3://"):
        source = str(Path(location).resolve())
    loaded = load_model(source, device="cpu")
    identity = ModelIdentity(
        weights_sha256=weights_sha256(loaded.model), source=source, registry_name=name, registry_version=version
    )
    return CodecModel(loaded.model, identity)
