"""The model a file is coded with: loaded through components/evaluation/model_loading.py, identified for the header.

A registry reference with an alias (models:/name@champion) is pinned to the version the alias points at now
(models:/name/3), so `decompress` without --model finds the same weights after the alias has moved on.

The header names a model portably: a registry reference or an s3:// URI as given, a local checkpoint by its file
(or folder) name only, never an absolute path of this machine (which says where the user keeps files, and means
nothing elsewhere). The weights' sha256 is what identifies it; `header_model_location` finds a named checkpoint
beside the compressed file or in the current folder (older headers hold an absolute path, used as it is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.codec.file_format import CodecError, ModelIdentity, weights_sha256
from components.evaluation.model_loading import load_model
from components.infrastructure.storage import is_s3


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
    load_from = reference = location
    if location.startswith("models:/"):
        name, version, load_from = _registry_pin(location)
        reference = load_from
    elif not is_s3(location):
        reference = Path(location).resolve().name  # portable: the file name, not where this machine keeps it
    loaded = load_model(load_from, device="cpu")
    identity = ModelIdentity(
        weights_sha256=weights_sha256(loaded.model), source=reference, registry_name=name, registry_version=version
    )
    return CodecModel(loaded.model, identity)


def header_model_location(header_source: str | None, weights: str, compressed: Path | str, stdio: bool) -> str:
    """Where the model a header names is, for `decompress` without --model."""
    if header_source is None:
        raise CodecError(f"{compressed}: the header names no model; pass --model")
    if header_source.startswith(("models:/", "s3://")) or Path(header_source).is_absolute():
        return header_source
    places = ([] if stdio else [Path(compressed).parent]) + [Path.cwd()]
    for place in places:
        if (place / header_source).exists():
            return str(place / header_source)
    raise CodecError(
        f"{compressed}: made with checkpoint {header_source} (weights sha256 {weights[:12]}), which is not "
        f"{'beside it or ' if not stdio else ''}in the current folder; pass --model"
    )
