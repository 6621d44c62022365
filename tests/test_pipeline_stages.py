"""The two stage configs of a pipeline run, derived from one config (components/training/stages.py)."""

from __future__ import annotations

import pytest

from components.infrastructure.provenance import config_hash
from components.training.stages import (
    join_uri,
    load_pipeline_config,
    resolve_config_path,
    run_key,
    stage1_key,
    stage_configs,
)
from configs import ConfigError


@pytest.fixture(scope="module")
def ci():
    return load_pipeline_config("ci")


def test_stage1_drops_the_top_lm_and_writes_the_base_that_stage2_loads(ci) -> None:
    stages = stage_configs(ci, 7, 9, "s3://bucket/prefix", "run-1")
    assert stages.stage1.model.top_transformer_config is None
    assert stages.stage1.model.top_lm_loss_weight == 0.0
    assert (
        stages.stage1.checkpoint.save_base_components_path == "s3://bucket/prefix/runs/run-1/stage1/base_components.pt"
    )
    assert stages.base_components_uri == stages.stage1.checkpoint.save_base_components_path
    assert stages.stage2.model.top_transformer_config == ci.model.top_transformer_config
    assert stages.stage2.checkpoint.save_base_components_path is None
    assert (stages.stage1.optim.max_steps, stages.stage2.optim.max_steps) == (7, 9)
    assert stages.stage1.checkpoint.checkpoint_dir == "s3://bucket/prefix/runs/run-1/stage1/checkpoints"
    assert stages.stage2.checkpoint.checkpoint_dir == "s3://bucket/prefix/runs/run-1/stage2/checkpoints"
    # everything else is the base config's
    assert stages.stage1.model.compressor_level_configs == ci.model.compressor_level_configs
    assert stages.stage2.optim.learning_rate == ci.optim.learning_rate


def test_stage1_has_a_folder_of_its_own_that_only_what_stage1_trains_changes(ci) -> None:
    """Runs that differ only in stage 2 (its steps, the top LM's settings) share stage 1's folder and so find it
    trained; what stage 1 trains (its steps, its model, the data, the code) gives another folder."""
    key = stage1_key(ci, 5, "data1", "commit1")
    top = ci.model.top_transformer_config
    bigger_top = ci.updated(top_transformer_config=top.model_copy(update={"num_layers": top.num_layers + 1}))
    assert stage1_key(bigger_top, 5, "data1", "commit1") == key
    assert run_key(bigger_top, 5, 5, "data1", "commit1") != run_key(ci, 5, 5, "data1", "commit1")
    wider = ci.model.compressor_level_configs[0].model_copy(
        update={"dim": 2 * ci.model.compressor_level_configs[0].dim}
    )
    others = {
        stage1_key(ci, 6, "data1", "commit1"),
        stage1_key(ci, 5, "data2", "commit1"),
        stage1_key(ci, 5, "data1", "commit2"),
        stage1_key(ci.updated(compressor_level_configs=[wider]), 5, "data1", "commit1"),
    }
    assert key not in others and len(others) == 4
    short, long = (stage_configs(ci, 5, steps, "s3://b/p", f"run-{steps}", key) for steps in (5, 9))
    assert short.stage1 == long.stage1 and short.base_components_uri == long.base_components_uri
    assert short.stage1.checkpoint.checkpoint_dir == f"s3://b/p/runs/{key}/stage1/checkpoints"
    assert (
        short.stage2.checkpoint.checkpoint_dir
        == "s3://b/p/runs/run-5/stage2/checkpoints"
        != long.stage2.checkpoint.checkpoint_dir
    )


def test_intervals_fit_short_stages(ci) -> None:
    stages = stage_configs(ci, 3, 4, "artifacts", "k")
    assert stages.stage1.checkpoint.checkpoint_interval == 3 and stages.stage1.validation.validation_interval == 3
    assert stages.stage2.optim.warmup_steps <= 1


def test_config_hash_names_what_is_trained_not_where(ci) -> None:
    here = stage_configs(ci, 5, 5, "artifacts", "a")
    there = stage_configs(ci, 5, 5, "s3://b/p", "b")
    longer = stage_configs(ci, 5, 6, "artifacts", "a")
    assert here.config_hash == there.config_hash
    assert here.config_hash != longer.config_hash


def test_overrides_and_names(ci) -> None:
    assert resolve_config_path("ci") == resolve_config_path("ci_config") == resolve_config_path("configs/ci_config.py")
    changed = load_pipeline_config("ci", ["learning_rate=0.5", ""])
    assert changed.optim.learning_rate == 0.5 and config_hash(changed) != config_hash(ci)
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
    others = {
        run_key(ci, 6, 5, "data1", "commit1"),
        run_key(ci, 5, 5, "data2", "commit1"),
        run_key(ci, 5, 5, "data1", "commit2"),
    }
    assert key not in others and len(others) == 3


def test_join_uri() -> None:
    assert join_uri("s3://b/p/", "runs", "/k/", "stage1") == "s3://b/p/runs/k/stage1"
    assert join_uri("artifacts", "data", "") == "artifacts/data"


# -- code identity ---------------------------------------------------------------------------------------------------
def make_checkout(root, git: bool = True):
    """A tiny repository with files in and out of CODE_PATHS (and ignored ones), committed."""
    import subprocess

    files = {
        "model/net.py": "W = 1\n",
        "configs/ci_config.py": "STEPS = 3\n",
        "pyproject.toml": "[project]\n",
        "pipelines/run_spec.py": "x = 1\n",
        "docs/notes.md": "prose\n",
        ".gitignore": "__pycache__/\n*.pyc\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    if git:
        run = dict(cwd=root, check=True, capture_output=True)
        subprocess.run(["git", "init", "-q"], **run)
        subprocess.run(["git", "add", "-A"], **run)
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], **run)
    return root


def test_code_identity_changes_with_any_edit_to_code_committed_or_not(tmp_path) -> None:
    from components.infrastructure.provenance import code_identity

    repo = make_checkout(tmp_path)
    clean = code_identity(repo)
    (repo / "docs" / "notes.md").write_text("other prose\n")  # not code
    (repo / "model" / "__pycache__").mkdir()
    (repo / "model" / "__pycache__" / "net.cpython-311.pyc").write_bytes(b"\0")  # ignored
    assert code_identity(repo) == clean
    (repo / "model" / "net.py").write_text("W = 2\n")  # uncommitted edit: a change ("-dirty" could not tell)
    edited = code_identity(repo)
    assert edited != clean
    (repo / "model" / "net.py").write_text("W = 1\n")
    assert code_identity(repo) == clean
    (repo / "pipelines" / "new_step.py").write_text("y = 2\n")  # untracked, not ignored
    assert code_identity(repo) not in (clean, edited)


def test_an_image_without_git_agrees_with_the_checkout_it_was_built_from(tmp_path) -> None:
    """The image copies the source tree without .git (docker/Dockerfile); installing may leave egg-info and
    __pycache__ behind. Its identity is the clean checkout's."""
    import shutil

    from components.infrastructure.provenance import code_identity

    repo = make_checkout(tmp_path / "repo")
    image = tmp_path / "image"
    shutil.copytree(repo, image, ignore=shutil.ignore_patterns(".git", "docs", ".gitignore"))
    (image / "abstractinator.egg-info").mkdir()
    (image / "abstractinator.egg-info" / "PKG-INFO").write_text("Name: abstractinator\n")
    (image / "pipelines" / "__pycache__").mkdir()
    (image / "pipelines" / "__pycache__" / "steps.cpython-311.pyc").write_bytes(b"\0")
    assert code_identity(image) == code_identity(repo)
    (image / "configs" / "ci_config.py").write_text("STEPS = 4\n")
    assert code_identity(image) != code_identity(repo)


def test_code_identity_of_an_installed_wheel_is_the_recorded_one(tmp_path, monkeypatch) -> None:
    from components.infrastructure.provenance import code_identity

    site = tmp_path / "site-packages"
    (site / "components").mkdir(parents=True)
    monkeypatch.delenv("ABSTRACTINATOR_CODE_IDENTITY", raising=False)
    assert code_identity(site) == "unknown"
    monkeypatch.setenv("ABSTRACTINATOR_CODE_IDENTITY", "abc123")
    assert code_identity(site) == "abc123"


def test_this_checkout_has_an_identity_and_the_run_key_follows_it(ci) -> None:
    from components.infrastructure.provenance import code_identity

    identity = code_identity()
    assert len(identity) == 64 and identity == code_identity()
    assert run_key(ci, 5, 5, "d", identity) != run_key(ci, 5, 5, "d", identity[::-1])


def test_a_run_spec_derives_its_values_once(ci, monkeypatch) -> None:
    """The config file runs, and git is asked, once per spec, however many steps ask for stages or the run
    folder; the run folder is the stages' own, for a derived and a given run key alike."""
    from pipelines import run_spec as steps

    calls = {"config": 0, "code": 0}

    def load(name, overrides):
        calls["config"] += 1
        return ci

    def code():
        calls["code"] += 1
        return "c0de"

    monkeypatch.setattr(steps, "load_pipeline_config", load)
    monkeypatch.setattr(steps, "code_identity", code)
    spec = steps.RunSpec(artifact_root="s3://bucket/prefix/")
    for _ in range(3):
        stages = spec.stages("d1")
        assert spec.run_root("d1") == stages.run_root == f"s3://bucket/prefix/runs/{run_key(ci, 20, 20, 'd1', 'c0de')}"
        stage1_root = f"s3://bucket/prefix/runs/{stage1_key(ci, 20, 'd1', 'c0de')}"
        assert stages.base_components_uri == join_uri(stage1_root, "stage1", "base_components.pt")
        assert spec.stage_folder("d1", "stage1") == join_uri(stage1_root, "stage1")
        assert spec.stage_folder("d1", "stage2") == join_uri(stages.run_root, "stage2")
    assert spec.stages("d1") is stages and spec.run_root("d2") != spec.run_root("d1")  # another data hash, another run
    assert calls == {"config": 1, "code": 1}
    given = steps.RunSpec(artifact_root="artifacts", run_key="nightly")
    assert given.run_root("d1") == "artifacts/runs/nightly" and calls["code"] == 1  # a given key needs no code
    assert given.stages("d1").base_components_uri == "artifacts/runs/nightly/stage1/base_components.pt"


def test_the_stage1_task_spec_knows_stage1_alone(ci, monkeypatch) -> None:
    """The stage-1 task is not given stage2_steps (KFP's cache key); its spec gives stage 1's config, the one a
    full spec gives, and refuses to guess stage 2's."""
    from pipelines import run_spec as steps

    monkeypatch.setattr(steps, "load_pipeline_config", lambda name, overrides: ci)
    monkeypatch.setattr(steps, "code_identity", lambda: "c0de")
    alone = steps.RunSpec(artifact_root="artifacts", stage1_steps=7, stage2_steps=None)
    assert alone.stage1_config("d1") == steps.RunSpec(artifact_root="artifacts", stage1_steps=7).stages("d1").stage1
    with pytest.raises(ValueError, match="not given stage2_steps"):
        alone.stages("d1")
