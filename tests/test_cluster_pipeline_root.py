"""A pipeline root of this pipeline's own, instead of patching the kfp-launcher ConfigMap a shared standalone KFP
install uses for every team: `pipeline compile --pipeline-root` records it in the YAML, and `pipeline submit` /
`schedule` send it as each run's pipeline root (KFP 2.17's backend ignores the YAML's defaultPipelineRoot:
pipelines/submission.py `compiled_pipeline_root`), against the fake KFP API."""

from __future__ import annotations

import pytest
import yaml

from tests.test_cluster_submission import cli, server  # noqa: F401 (server: the fake KFP API fixture)

ROOT = "s3://team-bucket/abstractinator/kfp?region=eu-west-1"


def compile_to(tmp_path, *flags: str):
    out = tmp_path / "pipeline.yaml"
    return cli("compile", "--out", str(out), "--gpus", "0", *flags), out


def test_a_compiled_pipeline_root_goes_with_every_run_and_schedule(server, tmp_path, capsys):  # noqa: F811
    code, package = compile_to(tmp_path, "--pipeline-root", ROOT)
    assert code == 0, capsys.readouterr().err
    assert next(yaml.safe_load_all(package.read_text()))["defaultPipelineRoot"] == ROOT
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert cli("submit", "--host", server.url, "--package", str(package), "--pipeline-root", "s3://other/kfp") == 0
    roots = [run["runtime_config"].get("pipeline_root") for run in server.state.runs.values()]
    assert roots == [ROOT, "s3://other/kfp"]  # the flag of submit wins over the compiled one
    schedule = ("schedule", "--host", server.url, "--name", "weekly", "--cron", "@weekly")
    assert cli(*schedule) == 0
    (recurring,) = server.recurring_runs_named("weekly")
    assert recurring["runtime_config"]["pipeline_root"] == ROOT
    capsys.readouterr()
    assert cli(*schedule) == 0 and "schedule weekly: unchanged" in capsys.readouterr().out


def test_without_one_the_runs_leave_the_root_to_the_cluster(server, tmp_path, capsys):  # noqa: F811
    code, package = compile_to(tmp_path)
    assert code == 0
    assert "defaultPipelineRoot" not in next(yaml.safe_load_all(package.read_text()))
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    (run,) = server.state.runs.values()
    assert "pipeline_root" not in run.get("runtime_config", {})


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ("/local/folder", "is not an s3://, gs:// or minio:// URI"),
        ("s3://key:secret@bucket/kfp", "holds credentials"),
    ],
)
def test_a_bad_pipeline_root_is_one_line(tmp_path, capsys, root, message):
    code, package = compile_to(tmp_path, "--pipeline-root", root)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and not package.exists()
