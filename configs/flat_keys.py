"""Flat keys moved to their sections, the two places it happens: reading a flat config (the seed's files,
YAML/JSON written before the sections, the `exp_config` of older checkpoints) and rewriting a flat
`--set max_steps=20` to `optim.max_steps`.

A field keeps its seed name inside its section (`optim.learning_rate`, `checkpoint.checkpoint_interval`), so a
flat key and its sectioned form differ by the section only and one grep finds both. Which section owns a key is
`configs.schema.sections`, derived from the section models' own fields: adding a field to a section is
all it takes.
"""

from __future__ import annotations

from typing import Any


def _explicit_fields(section: Any) -> Any:
    """A section given as a model, as the mapping of the fields its author set (defaults are not 'given')."""
    fields_set = getattr(section, "model_fields_set", None)
    if fields_set is None:
        return section
    return {name: getattr(section, name) for name in fields_set}


def sectioned(data: dict[str, Any], sections: dict[str, str]) -> dict[str, Any]:
    """`data` with each flat key moved into its section (`sections`: flat key -> section); keys it does not
    know stay where they are (the schema then drops a seed key or refuses an unknown one by name). A key given
    both flat and in its section is refused (ValueError, one line): neither spelling may silently win."""
    flat = [key for key in data if key in sections]
    if not flat:
        return data
    result = {key: value for key, value in data.items() if key not in sections}
    for key in flat:
        section = sections[key]
        target = result.get(section)
        if target is None:
            target = {}
        else:
            target = _explicit_fields(target)
            if not isinstance(target, dict):
                raise ValueError(f"{section}: must be a mapping of its keys (got {type(target).__name__})")
            if key in target:
                raise ValueError(f"{key} is given twice, flat and as {section}.{key}: keep one")
            target = dict(target)
        target[key] = data[key]
        result[section] = target
    return result


def sectioned_path(path: list[str], sections: dict[str, str]) -> list[str]:
    """A `--set` key path with a flat first name rewritten to its section: ['max_steps'] -> ['optim', 'max_steps']."""
    if path and path[0] in sections:
        return [sections[path[0]], *path]
    return path
