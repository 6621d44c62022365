"""The two stage configs of a pipeline run, derived from one config (components/stages.py)."""

from __future__ import annotations

import pytest

from components.provenance import config_hash
from components.stages import join_uri, load_pipeline_config, resolve_config_path, run_key, stage_configs
from configs import ConfigError


@pytest.fixture(scope="module")
def ci():
    return load_pipeline_config("ci")


def test_stage1_drops_the_top_lm_and_writes_the_base_that_stage2_loads(ci) -> None:
    stages = stage_configs(ci, 7, 9, "s3://bucket/prefix", "run-1")
    assert stages.stage1.top_transformer_config is None
    assert stages.stage1.top_lm_loss_weight == 0.0
    assert stages.stage1.save_base_components_path == "s3://bucket/prefix/runs/run-1/stage1/base_components.pt"
    assert stages.base_components_uri == stages.stage1.save_base_components_path
    assert stages.stage2.top_transformer_config == ci.top_transformer_config
    assert stages.stage2.save_base_components_path is None
    assert (stages.stage1.max_steps, stages.stage2.max_steps) == (7, 9)
    assert stages.stage1.checkpoint_dir == "s3://bucket/prefix/runs/run-1/stage1/checkpoints"
    assert stages.stage2.checkpoint_dir == "s3://bucket/prefix/runs/run-1/stage2/checkpoints"
    # everything else is the base config's
    assert stages.stage1.compressor_level_configs == ci.compressor_level_configs
    assert stages.stage2.learning_rate == ci.learning_rate


def test_intervals_fit_short_stages(ci) -> None:
    stages = stage_configs(ci, 3, 4, "artifacts", "k")
    assert stages.stage1.checkpoint_interval == 3 and stages.stage1.validation_interval == 3
    assert stages.stage2.warmup_steps <= 1


def test_config_hash_names_what_is_trained_not_where(ci) -> None:
    here = stage_configs(ci, 5, 5, "artifacts", "a")
    there = stage_configs(ci, 5, 5, "s3://b/p", "b")
    longer = stage_configs(ci, 5, 6, "artifacts", "a")
    assert here.config_hash == there.config_hash
    assert here.config_hash != longer.config_hash


def test_overrides_and_names(ci) -> None:
    assert resolve_config_path("ci") == resolve_config_path("ci_config") == resolve_config_path("configs/ci_config.py")
    changed = load_pipeline_config("ci", ["learning_rate=0.5", ""])
    assert changed.learning_rate == 0.5 and config_hash(changed) != config_hash(ci)
    with pytest.raises(ConfigError, match="no configs/nope_config.py"):
        load_pipeline_config("nope")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_pipeline_config("ci", ["learning_rate=-1"])


def test_bad_stage_requests_fail_in_one_line(ci) -> None:
    with pytest.raises(ConfigError, match="stage 2 needs a top LM"):
        stage_configs(ci.updated(top_transformer_config=None, top_lm_loss_weight=0.0), 5, 5, "a", "k")
    with pytest.raises(ConfigError, match=">= 1"):
        stage_configs(ci, 0, 5, "a", "k")


def test_run_key_is_deterministic_and_changes_with_each_input(ci) -> None:
    key = run_key(ci, 5, 5, "data1", "commit1")
    assert key == run_key(ci, 5, 5, "data1", "commit1")
    assert key.startswith("ci-")
    others = {run_key(ci, 6, 5, "data1", "commit1"), run_key(ci, 5, 5, "data2", "commit1"),
              run_key(ci, 5, 5, "data1", "commit2")}
    assert key not in others and len(others) == 3


def test_join_uri() -> None:
    assert join_uri("s3://b/p/", "runs", "/k/", "stage1") == "s3://b/p/runs/k/stage1"
    assert join_uri("artifacts", "data", "") == "artifacts/data"
