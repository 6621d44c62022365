"""Config schema and loading: every seed config loads; any mistake fails naming the field path."""

import json
import re
from pathlib import Path

import pytest
import torch
import yaml

from configs import ConfigError, ExpConfig, ModelConfig, apply_overrides, load_config

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIGS = [
    "config.py",
    "tiny_config.py",
    "super_tiny_config.py",
    "stage1_super_tiny_config.py",
    "stage2_super_tiny_config.py",
    "ci_config.py",
    "demo_config.py",
]


@pytest.mark.parametrize("name", SEED_CONFIGS)
def test_every_shipped_config_loads(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert config.model.num_levels == len(config.model.compressor_level_configs)
    assert config.data.dataset_name == "default"


def test_seed_configs_keep_their_model_and_training_values() -> None:
    tiny = load_config(REPO / "configs/tiny_config.py")
    level = tiny.model.compressor_level_configs[0]
    assert (level.dim, level.heads, level.window, level.codebook_size) == (128, 4, 128, 1024)
    assert (tiny.data.batch_size, tiny.optim.gradient_accumulation_steps, tiny.optim.learning_rate) == (64, 2, 1e-4)
    assert tiny.model.top_transformer_config.dim == 256 and tiny.model.top_transformer_config.continuous
    stage1 = load_config(REPO / "configs/stage1_super_tiny_config.py")
    assert stage1.model.top_transformer_config is None and stage1.model.top_lm_loss_weight == 0.0
    assert stage1.checkpoint.save_base_components_path == "./stage1_base.pt"
    assert (stage1.data.batch_size, stage1.optim.gradient_accumulation_steps) == (64, 1)
    stage2 = load_config(REPO / "configs/stage2_super_tiny_config.py")
    assert stage2.model.compressor_level_configs == stage1.model.compressor_level_configs
    assert stage2.model.top_transformer_config.dim == 128
    ci = load_config(REPO / "configs/ci_config.py")
    assert ci.model.has_discrete_top_lm and ci.model.num_levels == 1


def test_dict_style_access_reads_writes_and_validates() -> None:
    config = load_config(REPO / "configs/config.py")
    assert config["optim"]["max_steps"] is None
    config["optim"]["max_steps"] = 20
    assert config.optim.max_steps == 20
    assert config["model"]["compressor_level_configs"][0]["codebook_size"] == 4096
    assert "optim" in config and "learning_rate" in config["optim"] and "no_such_key" not in config
    assert config.get("no_such_key", 7) == 7
    with pytest.raises(ValueError, match="max_steps"):
        config["optim"]["max_steps"] = "many"
    with pytest.raises(KeyError):
        config["no_such_key"] = 1


def test_loading_a_config_does_not_share_state_with_the_file_module() -> None:
    first = load_config(REPO / "configs/config.py")
    first["data"]["batch_size"] = 3
    assert load_config(REPO / "configs/config.py").data.batch_size == 16


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_unknown_key_names_the_field_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.py",
        "exp_config = {'compressor_level_configs': [{'codebok_size': 12}]}\n",
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "compressor_level_configs.0.codebok_size: unknown key" in message
    assert "\n" not in message


def test_wrong_type_names_the_field_path(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "compressor_level_configs:\n  - codebook_size: lots\n")
    with pytest.raises(ConfigError, match=r"compressor_level_configs\.0\.codebook_size: .*integer.*'lots'"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"num_levels": 2}, "num_levels (2) must equal"),
        ({"compressor_level_configs": [{"dim": 100, "heads": 8}]}, "compressor_level_configs.0: dim (100)"),
        ({"top_transformer_config": None}, "top_lm_loss_weight > 0 needs"),
        ({"expander_eos_id": 1}, "expander_eos_id"),
        ({"initial_vocab_size": 300}, "initial_vocab_size"),
        ({"compressor_level_configs": [{"target_compression_ratio": 0.25}]}, "no gradient"),
        ({"compressor_level_configs": [{"min_segment_len": 4, "max_segment_len": 2}]}, "below min_segment_len"),
        ({"scheduler_type": "warmup_stable"}, "scheduler_type"),
        ({"top_transformer_config": {"embed_dim": 99}}, "embed_dim (99) must equal"),
        ({"propagate_key_padding_mask": False}, "padding is always masked"),
        ({"use_decoder_only_expander": False}, "decoder-only expander is the one built"),
    ],
)
def test_inconsistent_values_are_rejected_with_a_reason(tmp_path: Path, data: dict, fragment: str) -> None:
    path = write(tmp_path / "bad.json", json.dumps(data))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert fragment in str(error.value)
    assert str(error.value).startswith(str(path))


def test_yaml_json_and_python_dict_configs_load_alike(tmp_path: Path) -> None:
    data = {"batch_size": 4, "compressor_level_configs": [{"dim": 64, "heads": 4}]}
    as_yaml = load_config(write(tmp_path / "c.yaml", yaml.safe_dump(data)))
    as_json = load_config(write(tmp_path / "c.json", json.dumps(data)))
    as_py = load_config(write(tmp_path / "c.py", f"exp_config = {data!r}\n"))
    assert as_yaml == as_json == as_py
    assert as_py.model.compressor_level_configs[0].dim == 64


def test_checkpoint_config_loads_and_a_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    config = load_config(REPO / "configs/ci_config.py")
    path = tmp_path / "checkpoint_step10.pt"
    torch.save({"exp_config": config.as_dict(), "global_step": 10}, path)
    assert load_config(path) == config
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConfigError, match="truncated.pt: not a readable checkpoint"):
        load_config(truncated)


def test_config_file_problems_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match="defines no `exp_config`"):
        load_config(write(tmp_path / "empty.py", "x = 1\n"))
    with pytest.raises(ConfigError, match="raised ZeroDivisionError"):
        load_config(write(tmp_path / "broken.py", "exp_config = 1 / 0\n"))
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(write(tmp_path / "broken.yaml", "a: [unclosed\n"))
    with pytest.raises(ConfigError, match="unknown config type"):
        load_config(write(tmp_path / "config.toml", "a = 1\n"))


def test_overrides_reach_nested_fields_and_are_validated() -> None:
    base = ExpConfig()
    changed = apply_overrides(
        base,
        [
            "max_steps=20",
            "compressor_level_configs.0.codebook_size=512",
            "compressor_level_configs.0.entropy_abs_threshold=1.5",
            "learning_rate=3e-4",
            "top_transformer_config.continuous=false",
            "scheduler_specific_kwargs={min_lr: 0.0}",
        ],
    )
    assert changed.optim.max_steps == 20 and changed.optim.learning_rate == 3e-4
    assert changed.model.compressor_level_configs[0].codebook_size == 512
    assert changed.model.compressor_level_configs[0].entropy_abs_threshold == 1.5
    assert changed.model.top_transformer_config.continuous is False
    assert changed.optim.scheduler_specific_kwargs == {"min_lr": 0.0}
    assert (
        apply_overrides(base, ["top_transformer_config=null", "top_lm_loss_weight=0"]).model.top_transformer_config
        is None
    )
    assert base.optim.max_steps is None  # the original is untouched


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("compressor_level_configs.0.codebook_size=abc", "compressor_level_configs.0.codebook_size"),
        ("compressor_level_configs.3.dim=8", "no list index '3'"),
        ("no_such.key=1", "unknown key 'no_such'"),
        ("nokey", "expected key=value"),
        ("batch_size.x=1", "'data.batch_size' is not a mapping or list"),
        ("max_steps.x=1", "'optim.max_steps' is null"),
    ],
)
def test_bad_overrides_name_the_problem(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        apply_overrides(ExpConfig(), [override])


def test_every_shipped_config_bounds_its_segments():
    """Flat entropy at initialisation makes a window one segment unless max_segment_len cuts it."""
    for path in sorted((REPO / "configs").glob("*config.py")):
        config = load_config(path)
        for level in config.model.compressor_level_configs:
            assert level.max_segment_len is not None and level.max_segment_len <= 32, path.name


def test_seed_keys_that_act_on_nothing_load_and_are_dropped_with_a_log_line(tmp_path: Path, caplog) -> None:
    """The seed's values of keys that act on nothing load (its files and old checkpoints hold them), are not in the
    schema nor in the loaded config (so no hash or MLflow param carries them), and a log line names each."""
    seed_values = {
        "initial_vocab_size": 259,
        "expander_eos_id": 257,
        "use_decoder_only_expander": True,
        "expander_num_enc_layers": 1,
        "propagate_key_padding_mask": True,
        "compressor_level_configs": [
            {"max_seq_len_encoder": 1024, "target_compression_ratio": None, "compression_loss_weight": 0.5}
        ],
    }
    path = write(tmp_path / "seed.json", json.dumps(seed_values))
    with caplog.at_level("INFO", logger="configs.seed_keys"):
        config = load_config(path)
    dropped = {"initial_vocab_size", "expander_eos_id", "use_decoder_only_expander", "expander_num_enc_layers"}
    dropped |= {"propagate_key_padding_mask"}
    level_dropped = {"max_seq_len_encoder", "target_compression_ratio", "compression_loss_weight"}
    data = config.as_dict()
    assert not dropped & (data.keys() | data["model"].keys())
    assert not level_dropped & data["model"]["compressor_level_configs"][0].keys()
    assert not (dropped & (ExpConfig.model_fields.keys() | ModelConfig.model_fields.keys()))
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert all(key in logged for key in dropped | level_dropped), logged
    assert config == load_config(write(tmp_path / "plain.json", "{}"))  # they changed nothing
