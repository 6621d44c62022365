"""The two training stages of one pipeline run, derived from one experiment config.

Stage 1 pretrains compressors + expanders: the config with its top LM removed (`top_transformer_config: None`,
`top_lm_loss_weight: 0`) and `save_base_components_path` set. Stage 2 trains the top LM on that frozen base
(`--load_base_from`). Each stage gets its own step count and checkpoint folder; everything else is the base
config's. Stage 1's folder can have a key of its own (`stage1_key`: its config, steps, data and code, not stage
2's), so that a run that changes only stage 2 finds stage 1 done. `StageConfigs.config_hash` names what a
pipeline run trains (both stage configs, locations excluded), so a scheduled run can tell, with the data and
code, that it would only repeat the current champion.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from components.infrastructure.provenance import config_hash
from configs import ConfigError, ExpConfig, load_config
from configs.schema import TOP_STATE_NEEDS_JOINT

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class StageConfigs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage1: ExpConfig
    stage2: ExpConfig
    run_root: str = Field(description="<artifact_root>/runs/<run_key>: stage 2 and the evaluation write under it.")
    base_components_uri: str = Field(description="Where stage 1 writes (and stage 2 reads) the base components.")

    @property
    def config_hash(self) -> str:
        """One hash for the pair: what this pipeline run trains (locations excluded)."""
        joined = f"{config_hash(self.stage1)}:{config_hash(self.stage2)}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def resolve_config_path(name: str) -> Path:
    """'ci' -> configs/ci_config.py; 'demo_config' -> configs/demo_config.py; anything else is a path."""
    if Path(name).suffix:
        path = Path(name)
        if not path.is_file() and (CONFIG_DIR.parent / name).is_file():
            path = CONFIG_DIR.parent / name  # a repo-relative path used from another working directory
        return path.resolve()
    stem = name if name.endswith("_config") else f"{name}_config"
    path = CONFIG_DIR / f"{stem}.py"
    if not path.is_file():
        known = sorted(p.stem.removesuffix("_config") for p in CONFIG_DIR.glob("*_config.py"))
        raise ConfigError(f"config {name!r}: no configs/{stem}.py (known: {', '.join(known)})")
    return path


def load_pipeline_config(name: str, overrides: list[str] | None = None) -> ExpConfig:
    """The validated config named by `name` (see resolve_config_path) with `key=value` overrides applied."""
    return load_config(resolve_config_path(name), [o for o in overrides or [] if o.strip()])


def join_uri(root: str, *parts: str) -> str:
    """root + '/'-joined parts, for local folders and s3:// prefixes alike."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


def stage1_config(config: ExpConfig, stage1_steps: int, stage1_root: str) -> ExpConfig:
    """Stage 1's config of `config`: compressors + expanders, writing under `<stage1_root>/stage1/`."""
    _check_stages(config, stage1_steps, 1)
    return config.updated(
        top_transformer_config=None,
        top_lm_loss_weight=0.0,
        save_base_components_path=join_uri(stage1_root, "stage1", "base_components.pt"),
        checkpoint_dir=join_uri(stage1_root, "stage1", "checkpoints"),
        run_name=f"{config.logging.run_name}-stage1",
        resume_from_checkpoint=None,
        **_intervals(config, stage1_steps),
    )


def stage_configs(
    config: ExpConfig,
    stage1_steps: int,
    stage2_steps: int,
    artifact_root: str,
    run_key: str,
    stage1_key: str | None = None,
) -> StageConfigs:
    """The stage-1 and stage-2 configs of `config`, writing under `<artifact_root>/runs/<run_key>/` (stage 1 under
    `runs/<stage1_key>/` when given)."""
    _check_stages(config, stage1_steps, stage2_steps)
    run_root = join_uri(artifact_root, "runs", run_key)
    stage1 = stage1_config(config, stage1_steps, join_uri(artifact_root, "runs", stage1_key or run_key))
    stage2 = config.updated(
        top_lm_loss_weight=config.model.top_lm_loss_weight or 1.0,
        save_base_components_path=None,
        checkpoint_dir=join_uri(run_root, "stage2", "checkpoints"),
        run_name=f"{config.logging.run_name}-stage2",
        resume_from_checkpoint=None,
        **_intervals(config, stage2_steps),
    )
    base_uri = stage1.checkpoint.save_base_components_path
    return StageConfigs(stage1=stage1, stage2=stage2, run_root=run_root, base_components_uri=base_uri)


def _check_stages(config: ExpConfig, stage1_steps: int, stage2_steps: int) -> None:
    if config.model.top_transformer_config is None:
        raise ConfigError(f"config {config.logging.run_name!r} has no top_transformer_config: stage 2 needs a top LM")
    if config.model.expander_reads_top_state:  # the schema would refuse stage 1's config anyway; say why first
        raise ConfigError(f"config {config.logging.run_name!r}: {TOP_STATE_NEEDS_JOINT}")
    if stage1_steps < 1 or stage2_steps < 1:
        raise ConfigError(f"stage step counts must be >= 1 (got stage1={stage1_steps}, stage2={stage2_steps})")


def _intervals(config: ExpConfig, steps: int) -> dict[str, int]:
    return {
        "max_steps": steps,
        "warmup_steps": min(config.optim.warmup_steps, max(steps // 10, 1)),
        "checkpoint_interval": min(config.checkpoint.checkpoint_interval, steps),
        "validation_interval": min(config.validation.validation_interval, steps),
    }


def run_key(config: ExpConfig, stage1_steps: int, stage2_steps: int, data_hash: str, commit: str) -> str:
    """A deterministic folder name for one (config, steps, data, code): reruns reuse (and resume) it."""
    text = f"{config_hash(config)}:{stage1_steps}:{stage2_steps}:{data_hash}:{commit}"
    return f"{config.logging.run_name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def stage1_key(config: ExpConfig, stage1_steps: int, data_hash: str, commit: str) -> str:
    """Stage 1's folder name: what stage 1 trains (its own config, locations excluded, so not the top LM's
    settings), its steps, data and code. Runs that differ only in stage 2 share it, and the second finds stage 1
    done (it resumes at its last step)."""
    trained = config_hash(stage1_config(config, stage1_steps, ""))
    text = f"{trained}:{stage1_steps}:{data_hash}:{commit}"
    return f"{config.logging.run_name}-stage1-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
