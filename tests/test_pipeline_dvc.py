"""`dvc repro` runs the five steps end to end on the CI config; `dvc metrics show` and `dvc plots show` give the
eval numbers and training curves; `dvc push` to SeaweedFS and `dvc pull` into a fresh clone restore the data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.servers import SeaweedS3Server

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git + dvc repository holding this project's dvc.yaml and a params.yaml sized for a test."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["run"].update(stage1_steps=3, stage2_steps=3)
    params["evaluate"].update(max_eval_bytes=4096, canterbury=False)
    params["data"]["include_eval_sets"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    home = tmp_path / "home"
    home.mkdir()
    if (REPO / ".data" / "downloads").is_dir():  # the corpus archives, when this checkout already has them
        (home / "downloads").symlink_to(REPO / ".data" / "downloads")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ABSTRACTINATOR_DATA_HOME": str(home),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    run(["git", "init", "-q", "-b", "main"], repo, env)
    run([str(BIN / "dvc"), "init", "-q"], repo, env)
    run([str(BIN / "dvc"), "config", "core.analytics", "false"], repo, env)
    return repo, env


def test_dvc_repro_metrics_plots_push_and_pull_into_a_fresh_clone(workspace, tmp_path: Path) -> None:
    repo, env = workspace
    dvc = str(BIN / "dvc")
    run([dvc, "repro"], repo, env, timeout=1500)

    promoted = json.loads((repo / "results" / "promote.json").read_text())
    assert promoted["version"] == "1" and promoted["action"] in ("promoted", "refused")
    metrics = json.loads(run([dvc, "metrics", "show", "--json"], repo, env))
    values = metrics[""]["data"]["results/eval_metrics.json"]["data"]
    assert 0 < values["test_bits_per_byte"] < 20 and "live_code_share_L0" in values
    plots = json.loads(run([dvc, "plots", "show", "--json"], repo, env))
    curve = plots["data"]["results/stage1_curve.csv"][0]["content"]
    assert "step" in json.dumps(curve) and "loss" in json.dumps(curve)
    status = run([dvc, "status"], repo, env)
    assert "changed" not in status  # a second repro would do nothing

    server = SeaweedS3Server("dvc-test-key", "dvc-test-secret-0123456789", ["abstractinator"]).start()
    try:
        s3_env = {**env, **server.client_env}
        run([dvc, "remote", "add", "-d", "store", "s3://abstractinator/dvc"], repo, s3_env)
        run([dvc, "remote", "modify", "store", "region", "us-east-1"], repo, s3_env)
        run([dvc, "remote", "modify", "--local", "store", "endpointurl", server.endpoint_url], repo, s3_env)
        run([dvc, "push"], repo, s3_env)
        run(["git", "add", "-A"], repo, env)
        run(["git", "commit", "-q", "-m", "pipeline run"], repo, env)

        clone = tmp_path / "clone"
        run(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
        assert not (clone / "data" / "prepared").exists()
        run([dvc, "remote", "modify", "--local", "store", "endpointurl", server.endpoint_url], clone, s3_env)
        run([dvc, "pull"], clone, s3_env)
        original = repo / "data" / "prepared" / "manifest.json"
        assert (clone / "data" / "prepared" / "manifest.json").read_bytes() == original.read_bytes()
        shards = sorted(p.relative_to(repo) for p in (repo / "data" / "prepared").glob("*-*"))
        assert shards and all((clone / p).read_bytes() == (repo / p).read_bytes() for p in shards)
        assert list((clone / "artifacts" / "runs" / "dvc" / "stage2" / "checkpoints").glob("checkpoint_step*.pt"))
        assert "changed" not in run([dvc, "status"], clone, env)
    finally:
        server.stop()
