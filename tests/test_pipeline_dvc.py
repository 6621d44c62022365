"""dvc.yaml's dependencies tell the truth: in a temporary copy of this repository, editing each kind of
dependency makes `dvc status` name exactly the stages that must re-run (fast: `dvc commit` records the stages as
done, nothing trains). The slow test runs `dvc repro` for real, then the promote step, `dvc metrics show`,
`dvc plots show`, and `dvc push` to SeaweedFS / `dvc pull` into a fresh clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.step_table import (
    DVC_STEP_NAMES,
    EVALUATE,
    PREPARE_DATA,
    PROMOTE,
    STAGE1_PRETRAIN,
    STAGE2_TOP_LM,
    curve_file,
    result_file,
)
from tests.servers import SeaweedS3Server

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")
TRAINING = {STAGE1_PRETRAIN, STAGE2_TOP_LM}


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def make_workspace(tmp_path: Path, **params: dict) -> tuple[Path, dict[str, str]]:
    """A git + dvc repository holding a copy of this checkout's files (tracked and untracked, not ignored) and
    its params.yaml updated with `params` ({section: {key: value}})."""
    repo = tmp_path / "repo"
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in params.items():
        data[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data))
    home = tmp_path / "home"
    home.mkdir()
    if (REPO / ".data" / "downloads").is_dir():  # the corpus archives, when this checkout already has them
        (home / "downloads").symlink_to(REPO / ".data" / "downloads")
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "ABSTRACTINATOR_DATA_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("PYTHONPATH", None)  # `python -m abstractinator` in the copy imports the copy's code
    run(["git", "init", "-q", "-b", "main"], repo, env)  # the copy has the repository's .dvc/ (remote `store`)
    return repo, env


def changed_stages(repo: Path, env: dict[str, str]) -> set[str]:
    return set(json.loads(run([DVC, "status", "--json"], repo, env) or "{}"))


def test_dvc_status_names_exactly_the_stages_an_edit_affects(tmp_path: Path) -> None:
    repo, env = make_workspace(tmp_path, data={"source": "data/local"})
    (repo / "data" / "local" / "a.txt").write_text("a document\n")
    # every stage's outputs, as if `dvc repro` had made them, recorded in dvc.lock without running anything
    for folder in (
        "data/prepared",
        "artifacts/runs/dvc/stage1",
        "artifacts/runs/dvc/stage2",
        "artifacts/runs/dvc/eval",
    ):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "placeholder").write_text(folder)
    (repo / "results").mkdir()
    for name in (
        *(result_file(name) for name in DVC_STEP_NAMES),
        "eval_metrics.json",
        *(curve_file(name) for name in TRAINING),
    ):
        (repo / "results" / name).write_text("{}" if name.endswith("json") else "step,loss\n")
    run([DVC, "commit", "-f", "-q"], repo, env)
    assert changed_stages(repo, env) == set()
    assert "up to date" in run([DVC, "repro"], repo, env)  # nothing re-runs (its speed is not a test's business)

    def after(edit) -> set[str]:
        """The stages dvc status names after `edit()`; the repository is restored afterwards."""
        saved = {p: p.read_bytes() for p in (repo / "params.yaml", repo / "configs" / "ci_config.py")}
        edit()
        try:
            return changed_stages(repo, env)
        finally:
            for path, content in saved.items():
                path.write_bytes(content)

    def append(relative: str) -> None:
        with (repo / relative).open("a") as handle:
            handle.write("\n# edited\n")

    def set_param(section: str, key: str, value) -> None:
        data = yaml.safe_load((repo / "params.yaml").read_text())
        data[section][key] = value
        (repo / "params.yaml").write_text(yaml.safe_dump(data))

    assert after(lambda: append("configs/ci_config.py")) == TRAINING
    assert after(lambda: set_param("run", "stage2_steps", 31)) == {STAGE2_TOP_LM}
    assert after(lambda: set_param("run", "stage1_steps", 31)) == {STAGE1_PRETRAIN}
    assert after(lambda: set_param("evaluate", "max_eval_bytes", 1024)) == {EVALUATE}
    assert after(lambda: set_param("data", "include_eval_sets", False)) == {PREPARE_DATA}
    assert after(lambda: set_param("gate", "min_improvement", 0.5)) == set()  # the gate runs after dvc repro
    assert after(lambda: (repo / "data" / "local" / "b.txt").write_text("another document\n")) == {PREPARE_DATA}
    (repo / "data" / "local" / "b.txt").unlink()
    every_stage = set(DVC_STEP_NAMES)
    for relative, stages in (
        ("model/attention.py", TRAINING | {EVALUATE}),
        ("components/training/train.py", TRAINING),
        ("components/evaluation/evaluate.py", {EVALUATE}),
        ("components/evaluation/compression_eval.py", {EVALUATE}),  # the compression numbers of the report
        ("components/data/byte_windows.py", TRAINING | {EVALUATE}),
        ("pipelines/dvc_params.py", every_stage),  # every step reads params.yaml through it
        # imported by every step (train_data prepares data it does not find; params.yaml's gate section is
        # validated by every step), so every stage depends on them (tests/test_pipeline_dvc_deps.py)
        ("components/data/data_sources.py", every_stage),
        ("components/registry/gate_rules.py", every_stage),
    ):
        original = (repo / relative).read_bytes()
        append(relative)
        try:
            assert changed_stages(repo, env) == stages, relative
        finally:
            (repo / relative).write_bytes(original)
    assert changed_stages(repo, env) == set()


@pytest.mark.integration
@pytest.mark.slow
def test_dvc_repro_then_promote_metrics_plots_push_and_pull_into_a_fresh_clone(tmp_path: Path) -> None:
    repo, env = make_workspace(
        tmp_path,
        run={"stage1_steps": 3, "stage2_steps": 3},
        evaluate={"max_eval_bytes": 4096, "canterbury": False},
        data={"include_eval_sets": False},
    )
    run([DVC, "repro"], repo, env, timeout=1500)
    promote = subprocess.run(
        [sys.executable, "-m", "abstractinator", "pipeline", "step", PROMOTE],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert promote.returncode in (0, 3), promote.stderr[-3000:]
    promoted = json.loads((repo / "results" / result_file(PROMOTE)).read_text())
    assert promoted["version"] == "1" and promoted["action"] in ("promoted", "refused")
    assert promote.returncode == (0 if promoted["promoted"] else 3)
    metrics = json.loads(run([DVC, "metrics", "show", "--json"], repo, env))
    values = metrics[""]["data"]["results/eval_metrics.json"]["data"]
    assert 0 < values["test_bits_per_byte"] < 20 and "live_code_share_L0" in values
    plots = json.loads(run([DVC, "plots", "show", "--json"], repo, env))
    curve = plots["data"][f"results/{curve_file(STAGE1_PRETRAIN)}"][0]["content"]
    assert "step" in json.dumps(curve) and "loss" in json.dumps(curve)
    assert changed_stages(repo, env) == set()  # a second repro would do nothing

    server = SeaweedS3Server("dvc-test-key", "dvc-test-secret-0123456789", ["abstractinator"]).start()
    try:
        s3_env = {**env, **server.client_env}
        run([DVC, "remote", "modify", "--local", "store", "endpointurl", server.endpoint_url], repo, s3_env)
        run([DVC, "push"], repo, s3_env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-q", "-m", "pipeline run"], repo, env)

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        assert not (clone / "data" / "prepared").exists()
        run([DVC, "remote", "modify", "--local", "store", "endpointurl", server.endpoint_url], clone, s3_env)
        run([DVC, "pull"], clone, s3_env)
        original = repo / "data" / "prepared" / "manifest.json"
        assert (clone / "data" / "prepared" / "manifest.json").read_bytes() == original.read_bytes()
        shards = sorted(p.relative_to(repo) for p in (repo / "data" / "prepared").glob("*-*"))
        assert shards and all((clone / p).read_bytes() == (repo / p).read_bytes() for p in shards)
        assert list((clone / "artifacts" / "runs" / "dvc" / "stage2" / "checkpoints").glob("checkpoint_step*.pt"))
        assert changed_stages(clone, env) == set()
    finally:
        server.stop()
