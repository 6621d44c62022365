"""The one parser of registry references (components/infrastructure/model_reference.py), as the evaluation and the
codec see it."""

from __future__ import annotations

import pytest

from components.codec.file_format import CodecError
from components.codec.model_source import _registry_pin
from components.evaluation.model_loading import read_any_checkpoint
from components.infrastructure.model_reference import ModelReference, parse_model_reference
from components.training.checkpoints import CheckpointError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/abstractinator@champion", ModelReference("abstractinator", "champion", None)),
        ("models:/abstractinator/3", ModelReference("abstractinator", None, "3")),
        ("models:/team/model/12", ModelReference("team/model", None, "12")),
    ],
)
def test_references_parse_and_print_back(uri: str, expected: ModelReference) -> None:
    assert parse_model_reference(uri) == expected and str(expected) == uri


@pytest.mark.parametrize("uri", ["models:/", "models:/name", "models:/name@", "models:/name/latest", "runs:/x/y"])
def test_anything_else_is_one_line_in_every_user(uri: str) -> None:
    message = f"{uri}: a registry reference is models:/NAME@ALIAS or models:/NAME/VERSION"
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_model_reference(uri)
    if uri.startswith("models:/"):
        with pytest.raises(CodecError, match="a registry reference is"):
            _registry_pin(uri)
        with pytest.raises(CheckpointError, match="a registry reference is"):
            read_any_checkpoint(uri)
