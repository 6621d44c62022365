"""The sectioned config: the one flat-key table covers the schema, every config written flat (the seed's files,
YAML/JSON, older checkpoints) loads to the same config as the sectioned form, a key given twice is refused, and
`--set` takes both the sectioned path and the flat seed name.

tests/data/flat_configs_before_sections.json holds `as_dict()` of every shipped config as the code wrote it
before the sections (flat), i.e. what older YAML files and checkpoints hold."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH, _validate_param_name

from components.infrastructure.provenance import flatten
from configs import ConfigError, ExpConfig, apply_overrides, load_config, validate_config
from configs.schema import FLAT_KEY_SECTIONS, SECTIONS
from configs.seed_keys import EXPERIMENT_SEED_KEYS

REPO = Path(__file__).resolve().parents[1]
FLAT_BEFORE = json.loads((REPO / "tests/data/flat_configs_before_sections.json").read_text())
TOP_LEVEL_FIELDS = {"seed", "device"}


def test_the_table_maps_every_section_field_and_names_no_other() -> None:
    """The table (derived from the section models in configs/schema.py) is the only way a flat config reaches a
    field: it maps every section field to its section, and no flat key is also a section, a top-level field or a
    dropped seed key."""
    assert set(SECTIONS) == ExpConfig.model_fields.keys() - TOP_LEVEL_FIELDS
    for section in SECTIONS:
        fields = set(ExpConfig.model_fields[section].annotation.model_fields)
        mapped = {key for key, owner in FLAT_KEY_SECTIONS.items() if owner == section}
        assert mapped == fields, f"{section}: unmapped {fields - mapped}, mapped but absent {mapped - fields}"
    assert not FLAT_KEY_SECTIONS.keys() & (set(SECTIONS) | TOP_LEVEL_FIELDS | EXPERIMENT_SEED_KEYS.keys())


@pytest.mark.parametrize("name", sorted(FLAT_BEFORE))
def test_every_shipped_config_loads_to_its_flat_form_from_before_the_sections(name: str) -> None:
    """The seed's flat files (tiny, super_tiny, stage1/2) and the sectioned ones (base, ci, demo) alike."""
    flat = FLAT_BEFORE[name]
    assert not flat.keys() & set(SECTIONS)  # the fixture really is flat
    assert validate_config(flat) == load_config(REPO / "configs" / name)


def test_flat_yaml_json_and_checkpoint_configs_load_to_the_sectioned_config(tmp_path: Path) -> None:
    sectioned = load_config(REPO / "configs/ci_config.py")
    flat = FLAT_BEFORE["ci_config.py"]
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat))
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    torch.save({"exp_config": flat, "model_state": {}}, tmp_path / "old.pt")  # as older checkpoints hold it
    for name in ("flat.yaml", "flat.json", "old.pt"):
        assert load_config(tmp_path / name) == sectioned, name
    (tmp_path / "sectioned.yaml").write_text(yaml.safe_dump(sectioned.as_dict()))
    assert load_config(tmp_path / "sectioned.yaml") == sectioned
    assert set(sectioned.as_dict()) == set(SECTIONS) | TOP_LEVEL_FIELDS  # what checkpoints and YAML now hold


def test_flat_and_sectioned_keys_mix_in_one_file(tmp_path: Path) -> None:
    (tmp_path / "mixed.yaml").write_text("max_steps: 3\noptim: {learning_rate: 0.002}\nbatch_size: 4\n")
    config = load_config(tmp_path / "mixed.yaml")
    assert (config.optim.max_steps, config.optim.learning_rate, config.data.batch_size) == (3, 0.002, 4)


@pytest.mark.parametrize(
    "text",
    [
        "learning_rate: 0.001\noptim: {learning_rate: 0.002}\n",
        "optim: {max_steps: 2}\nmax_steps: 3\n",
        "model: {compressor_level_configs: []}\ncompressor_level_configs: []\n",
    ],
)
def test_a_key_given_flat_and_in_its_section_is_refused_in_one_line(tmp_path: Path, text: str) -> None:
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "twice.yaml")
    message = str(error.value)
    key = yaml.safe_load(text).keys() - set(SECTIONS)
    (flat_key,) = key
    assert "\n" not in message and "given twice" in message
    assert f"{FLAT_KEY_SECTIONS[flat_key]}.{flat_key}" in message, message


def test_a_key_given_twice_in_python_is_refused_too() -> None:
    with pytest.raises(ValueError, match=r"max_steps is given twice, flat and as optim\.max_steps"):
        ExpConfig(max_steps=3, optim={"max_steps": 4})


@pytest.mark.parametrize(
    ("flat", "sectioned"),
    [
        ("max_steps=20", "optim.max_steps=20"),
        ("batch_size=3", "data.batch_size=3"),
        ("compressor_level_configs.0.codebook_size=512", "model.compressor_level_configs.0.codebook_size=512"),
        ("top_transformer_config.continuous=true", "model.top_transformer_config.continuous=true"),
        ("run_name=other", "logging.run_name=other"),
    ],
)
def test_set_takes_the_flat_seed_name_and_the_sectioned_path_alike(flat: str, sectioned: str) -> None:
    ci = load_config(REPO / "configs/ci_config.py")
    by_flat, by_section = apply_overrides(ci, [flat]), apply_overrides(ci, [sectioned])
    assert by_flat == by_section != ci


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("no_such_key=1", "no_such_key: unknown key"),
        ("optim.no_such_key=1", "optim.no_such_key: unknown key"),
        ("model.compressor_level_configs.0.no_such_key=1", "model.compressor_level_configs.0.no_such_key"),
        ("model.no_such.x=1", "unknown key 'model.no_such'"),
    ],
)
def test_unknown_keys_still_name_their_path(override: str, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        apply_overrides(load_config(REPO / "configs/ci_config.py"), [override])


def test_flat_names_still_read_as_the_seed_read_them() -> None:
    """The seed's files read `base.compressor_level_configs[0]`; seed-style code reads `cfg['max_steps']`."""
    ci = load_config(REPO / "configs/ci_config.py")
    assert ci.compressor_level_configs is ci.model.compressor_level_configs
    assert ci.max_steps == ci["max_steps"] == ci.get("max_steps") == ci.optim.max_steps == 50
    assert ci.get("no_such_key", 7) == 7
    with pytest.raises(AttributeError):
        _ = ci.no_such_key


def test_updated_is_a_delta_per_section_in_either_spelling() -> None:
    ci = load_config(REPO / "configs/ci_config.py")
    by_section = ci.updated(optim={"max_steps": 3})
    assert by_section == ci.updated(max_steps=3)
    assert by_section.optim.learning_rate == ci.optim.learning_rate  # the other keys of the section are kept
    assert by_section.optim.max_steps == 3 and ci.optim.max_steps == 50


@pytest.mark.parametrize("name", sorted(FLAT_BEFORE))
def test_mlflow_params_of_every_shipped_config_are_valid_mlflow_params(name: str) -> None:
    """Training logs flatten(config.as_dict()) as params (components/training/train.py); MLflow refuses a name
    with other characters or over 250 characters and a value over 6000 (mlflow/utils/validation.py)."""
    params = flatten(load_config(REPO / "configs" / name).as_dict())
    assert "optim.learning_rate" in params and "model.compressor_level_configs.0.dim" in params
    for key, value in params.items():
        _validate_param_name(key)
        assert len(key) <= MAX_ENTITY_KEY_LENGTH and len(value) <= MAX_PARAM_VAL_LENGTH
