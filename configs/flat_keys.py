"""The one table that knows which section owns each flat key, and the two places it is used: reading a flat
config (the seed's files, YAML/JSON written before the sections, the `exp_config` of older checkpoints) and
rewriting a flat `--set max_steps=20` to `optim.max_steps`.

A field keeps its seed name inside its section (`optim.learning_rate`, `checkpoint.checkpoint_interval`), so a
flat key and its sectioned form differ by the section only and one grep finds both. tests/test_config_sections.py
checks that this table and the section models in configs/schema.py name the same fields, so a field added
without an entry here fails a test.
"""

from __future__ import annotations

from typing import Any

# flat key -> the ExpConfig section that holds it (configs/schema.py says who reads each section)
FLAT_KEY_SECTIONS: dict[str, str] = {
    # model: what build_model reads (model/autoencoder.py)
    "num_levels": "model",
    "compressor_level_configs": "model",
    "expander_dim_scale": "model",
    "expander_num_dec_layers": "model",
    "expander_heads_scale": "model",
    "expander_max_len": "model",
    "aux_lm_loss_weight": "model",
    "top_lm_loss_weight": "model",
    "top_transformer_config": "model",
    "use_continuous_expander_inputs": "model",
    "cross_lookback": "model",
    "expander_reads_lm_state": "model",
    "expander_reads_top_state": "model",
    "attention_backend": "model",
    # optim: the optimizer, the schedule and the loop's length (components/training/optimization.py, train.py)
    "learning_rate": "optim",
    "num_epochs": "optim",
    "max_steps": "optim",
    "gradient_clip_norm": "optim",
    "gradient_accumulation_steps": "optim",
    "scheduler_type": "optim",
    "warmup_steps": "optim",
    "scheduler_specific_kwargs": "optim",
    "weight_decay": "optim",
    # data: where the bytes come from and the windows they are cut into (components/data/)
    "dataset_name": "data",
    "dataset_config": "data",
    "dataset_train_split": "data",
    "text_column_name": "data",
    "data_dir": "data",
    "sequence_length": "data",
    "batch_size": "data",
    # checkpoint: components/training/checkpoints.py and train.py's saving and resuming
    "checkpoint_interval": "checkpoint",
    "checkpoint_dir": "checkpoint",
    "resume_from_checkpoint": "checkpoint",
    "save_base_components_path": "checkpoint",
    "keep_last_checkpoints": "checkpoint",
    # validation: components/training/validation.py (the val split and the generated samples)
    "validation_interval": "validation",
    "validation_max_bytes": "validation",
    "generation_interval": "validation",
    "sample_prompt_for_generation": "validation",
    "generation_max_len_override": "validation",
    # logging: run names and metric records (components/infrastructure/tracking.py, train_metrics.py)
    "run_name": "logging",
    "project_name": "logging",
    "mlflow_batch_interval": "logging",
    "log_interval": "logging",
}

SECTIONS = tuple(dict.fromkeys(FLAT_KEY_SECTIONS.values()))


def _explicit_fields(section: Any) -> Any:
    """A section given as a model, as the mapping of the fields its author set (defaults are not 'given')."""
    fields_set = getattr(section, "model_fields_set", None)
    if fields_set is None:
        return section
    return {name: getattr(section, name) for name in fields_set}


def sectioned(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each flat key moved into its section; keys the table does not know stay where they are (the
    schema then drops a seed key or refuses an unknown one by name). A key given both flat and in its section
    is refused (ValueError, one line): neither spelling may silently win."""
    flat = [key for key in data if key in FLAT_KEY_SECTIONS]
    if not flat:
        return data
    result = {key: value for key, value in data.items() if key not in FLAT_KEY_SECTIONS}
    for key in flat:
        section = FLAT_KEY_SECTIONS[key]
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


def sectioned_path(path: list[str]) -> list[str]:
    """A `--set` key path with a flat first name rewritten to its section: ['max_steps'] -> ['optim', 'max_steps']."""
    if path and path[0] in FLAT_KEY_SECTIONS:
        return [FLAT_KEY_SECTIONS[path[0]], *path]
    return path
