"""Load an `ExpConfig` from wherever one lives, apply `--set key.sub=value` overrides, and turn every failure
into a one-line `ConfigError` naming the file and the field path.

Accepted sources:
- a Python config file exporting `exp_config` (an ExpConfig or a dict), like the seed's configs/*.py;
- a YAML or JSON file holding the config mapping;
- a checkpoint (.pt) whose `exp_config` entry is the config as plain data (loaded with weights_only=True).

Each may be sectioned or flat (written before the sections): the schema moves flat keys to their sections.
"""

from __future__ import annotations

import json
import runpy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from configs.errors import UserError, torch_load_failure
from configs.flat_keys import sectioned_path
from configs.schema import FLAT_KEY_SECTIONS, ExpConfig

CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt"}
MAX_CONFIG_BYTES = 1_000_000  # a config is a few KB; a bigger file is a mistake (or an attack on memory)
MAX_MESSAGE_CHARS = 2000  # a ConfigError is one readable line, whatever the input held
MAX_VALUE_CHARS = 80  # of an offending value quoted in a message


class ConfigError(UserError):
    """A config that cannot be used; str() is one line naming the problem (and the field path), capped in length."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 30] + f" ... ({len(message)} characters in all)"
        super().__init__(message)


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors/aliases: nested aliases ("billion laughs") expand a few hundred bytes into
    gigabytes of lists. A config never needs them, so they are refused where they appear."""

    def compose_node(self, parent, index):  # PyYAML's hook for every node, aliases included
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not accepted in configs", mark)
        return super().compose_node(parent, index)


def safe_yaml(text: str) -> Any:
    """yaml.safe_load with aliases refused (see _NoAliasLoader)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 5] + " ...]"


def describe_validation_error(error: ValidationError) -> str:
    """All of a pydantic error's problems on one line: `path.to.field: message; other.field: message`."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] not in ("value_error", "assertion_error") and "input" in item:
            message += f" (got {_quoted(item['input'])})"
        parts.append(f"{path}: {message}" if path else message)  # a whole-config check names its keys itself
    return "; ".join(parts)


def validate_config(data: Any, origin: str = "<config>") -> ExpConfig:
    if isinstance(data, ExpConfig):
        data = data.as_dict()
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: exp_config must be a mapping or an ExpConfig, got {type(data).__name__}")
    try:
        return ExpConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {describe_validation_error(error)}") from None


def _read_python(path: Path) -> Any:
    try:
        namespace = runpy.run_path(str(path))
    except SystemExit as error:  # sys.exit(3) in a config would otherwise end the command silently with 3
        called = f"sys.exit({error.code!r})"
        raise ConfigError(f"{path}: the config file called {called}; it must define exp_config") from None
    except Exception as error:  # a config file is user code: any failure is a config problem
        raise ConfigError(f"{path}: the config file raised {type(error).__name__}: {error}") from None
    if "exp_config" not in namespace:
        raise ConfigError(f"{path}: defines no `exp_config`")
    return namespace["exp_config"]


def _read_mapping_file(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config file is at most {MAX_CONFIG_BYTES:,}")
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if path.suffix == ".json" else safe_yaml(text)
    except RecursionError:
        raise ConfigError(f"{path}: cannot be parsed: nested too deeply") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = " ".join(lines[:2]) if lines else type(error).__name__
        detail = detail.replace(' in "<unicode string>",', " at").rstrip(":")
        raise ConfigError(f"{path}: cannot be parsed: {detail}") from None


def _read_checkpoint(path: Path) -> Any:
    import torch  # only checkpoints need torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise ConfigError(f"{path}: not a readable checkpoint ({torch_load_failure(error)})") from None
    if not isinstance(checkpoint, dict) or "exp_config" not in checkpoint:
        raise ConfigError(f"{path}: checkpoint holds no exp_config")
    return checkpoint["exp_config"]


def read_config_data(path: str | Path) -> Any:
    """The raw config (dict or ExpConfig) stored at `path`, before validation."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.suffix == ".py":
        return _read_python(path)
    if path.suffix in (".yaml", ".yml", ".json"):
        return _read_mapping_file(path)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return _read_checkpoint(path)
    raise ConfigError(f"{path}: unknown config type (use .py, .yaml, .yml, .json or a .pt checkpoint)")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.0=value` -> (['a', 'b', '0'], value); the value is read as YAML (numbers, bools, null, lists)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value (e.g. optim.max_steps=20)")
    raw = raw.strip()
    try:
        value = None if raw in ("None", "none") else safe_yaml(raw) if raw else ""
    except (yaml.YAMLError, RecursionError):
        value = raw
    return key.strip().split("."), value


def _set_path(data: Any, path: list[str], value: Any, full_key: str) -> None:
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(data, list):
            if not part.isdigit() or int(part) >= len(data):
                raise ConfigError(f"--set {full_key}: no list index {part!r} (it has {len(data)} entries)")
            index: Any = int(part)
        elif isinstance(data, dict):
            index = part
            if not last and index not in data:
                raise ConfigError(f"--set {full_key}: unknown key {'.'.join(path[: depth + 1])!r}")
        else:
            raise ConfigError(f"--set {full_key}: {'.'.join(path[:depth])!r} is not a mapping or list")
        if last:
            data[index] = value
        else:
            if data[index] is None:
                raise ConfigError(f"--set {full_key}: {'.'.join(path[: depth + 1])!r} is null")
            data = data[index]


def apply_overrides(config: ExpConfig, overrides: Iterable[str], origin: str = "--set") -> ExpConfig:
    """A new, revalidated config with each `key.sub=value` applied in order: `optim.max_steps=20` or the flat
    seed name `max_steps=20`."""
    overrides = list(overrides)
    if not overrides:
        return config
    data = config.as_dict()
    for text in overrides:
        path, value = parse_override(text)
        # a flat seed name (`max_steps=20`) goes to its section (configs/schema.py FLAT_KEY_SECTIONS)
        _set_path(data, sectioned_path(path, FLAT_KEY_SECTIONS), value, text.partition("=")[0])
    return validate_config(data, origin=f"{origin} {' '.join(overrides)}")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExpConfig:
    """The validated config at `path` with `overrides` applied; raises ConfigError (one line) on any problem."""
    config = validate_config(read_config_data(path), origin=str(path))
    return apply_overrides(config, overrides, origin=f"{path} with --set")
