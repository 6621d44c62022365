"""`abstractinator pipeline submit` / `schedule` against a fake KFP v2beta1 server on loopback.

The package submitted is a small pipeline compiled with kfp (tests/small_pipeline.py, typed parameters), so these
tests do not depend on the real training pipeline; the fake server checks the upload is a pipeline spec and that
run parameters are inputs of the uploaded version with the right types.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types

import itertools
import json
from pathlib import Path

import pytest
import yaml

from tests.fake_kfp_server import FakeKfpHttpServer

REPO = Path(__file__).resolve().parents[1]
TOKEN = "test-token-not-a-secret"


@pytest.fixture
def server(monkeypatch, tmp_path):
    from kfp import Client

    # kfp.Client reads and may write ~/.config/kfp/context.json: keep the test's own
    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("ABSTRACTINATOR_KFP_TOKEN", "ABSTRACTINATOR_KFP_TOKEN_FILE", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABSTRACTINATOR_KFP_TOKEN", TOKEN)
    # one second per object made: "latest version" is unambiguous here (the race test keeps the real clock)
    fake = FakeKfpHttpServer(required_token=TOKEN, clock=itertools.count(1_800_000_000).__next__).start()
    yield fake
    fake.stop()


def cli(*argv: str) -> int:
    """`abstractinator pipeline ARGV...` in this process (the CLI's own error handling included)."""
    from abstractinator.cli import main

    return main(["pipeline", *argv])


def test_submit_uploads_the_spec_and_runs_it_with_typed_parameters(server, package, capsys):
    code = cli(
        "submit",
        "--host",
        server.url,
        "--package",
        str(package),
        "--experiment",
        "nightly",
        "--param",
        "steps=25",
        "--param",
        "learning_rate=3e-4",
        "--param",
        "use_gpu=true",
    )
    out, err = capsys.readouterr()
    assert code == 0, err

    upload = server.requests_to("POST", "/pipelines/upload")
    assert len(upload) == 1 and upload[0].query["name"] == "small-training"
    spec = yaml.safe_load(upload[0].body["file"])
    assert spec["pipelineInfo"]["name"] == "small-training"
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"steps", "learning_rate", "config", "use_gpu"}

    (run_request,) = server.requests_to("POST", "/runs")
    run = run_request.body
    assert run_request.headers["authorization"] == f"Bearer {TOKEN}"
    assert run["runtime_config"]["parameters"] == {"steps": 25, "learning_rate": 0.0003, "use_gpu": True}
    version = server.state.versions[run["pipeline_version_reference"]["pipeline_version_id"]]
    assert yaml.safe_load(version["manifest"]) == spec  # the run is of exactly the uploaded version
    assert server.state.experiments[run["experiment_id"]]["display_name"] == "nightly"

    (run_id,) = server.state.runs
    assert f"run id: {run_id}" in out
    assert f"run: {server.url}/#/runs/details/{run_id}" in out
    assert TOKEN not in out


def test_second_submit_adds_a_version_to_the_same_pipeline(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert cli("submit", "--host", server.url, "--package", str(package), "--experiment", "abstractinator") == 0
    assert len(server.state.pipelines) == 1
    assert len(server.state.versions) == 2
    assert len(server.requests_to("POST", "/pipelines/upload_version")) == 1
    assert len(server.state.experiments) == 1  # found, not created twice
    run_versions = [r["pipeline_version_reference"]["pipeline_version_id"] for r in server.state.runs.values()]
    assert len(set(run_versions)) == 2  # each run is of the version its submit uploaded


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("stepz=3", "'stepz' is not an input of the pipeline"),
        ("steps=ten", "'ten' is not a integer"),
        ("use_gpu=maybe", "is not a boolean"),
        ("noequals", "is not key=value"),
        ("learning_rate=nan", "'nan' is not a double"),
        ("learning_rate=-inf", "'-inf' is not a double"),
        ("learning_rate=1e999", "'1e999' is not a double"),
    ],
)
def test_bad_parameters_fail_before_anything_is_uploaded(server, package, capsys, param, message):
    code = cli("submit", "--host", server.url, "--package", str(package), "--param", param)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not server.requests_to("POST", "/pipelines/upload")


def test_missing_pipeline_file_is_one_line(server, tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert cli("submit", "--host", server.url, "--package", str(missing)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: pipeline file {missing} not found: compile it first "
        f"(abstractinator pipeline compile --out {missing})\n"
    )
    assert server.state.requests == []


def test_unreachable_host_is_one_line(package, capsys):
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert cli("submit", "--host", url, "--package", str(package)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach Kubeflow Pipelines at {url}:") and err.count("\n") == 1


def test_wrong_token_is_refused_with_a_hint(server, package, capsys, monkeypatch, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("wrong\n")
    assert cli("submit", "--host", server.url, "--package", str(package), "--token-file", str(token_file)) == 2
    err = capsys.readouterr().err
    assert "refused the request (HTTP 401)" in err and "wrong" not in err


def test_token_file_from_the_environment(server, package, monkeypatch, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    monkeypatch.delenv("ABSTRACTINATOR_KFP_TOKEN")
    monkeypatch.setenv("ABSTRACTINATOR_KFP_TOKEN_FILE", str(token_file))
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in server.state.requests)


# -- schedule ---------------------------------------------------------------------------------------------------
def schedule(server, *extra: str) -> int:
    return cli(
        "schedule", "--host", server.url, "--name", "weekly-retrain", "--pipeline-name", "small-training", *extra
    )


def test_schedule_twice_leaves_one_recurring_run(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "0 0 3 * * 0", "--param", "steps=100") == 0
    (first,) = server.recurring_runs_named("weekly-retrain")
    assert first["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert first["max_concurrency"] == "1" and first["no_catchup"] is True and first["mode"] == "ENABLE"
    assert first["runtime_config"]["parameters"] == {"steps": 100}
    latest = server.latest_version(first["pipeline_version_reference"]["pipeline_id"])
    assert first["pipeline_version_reference"] == {
        "pipeline_id": latest["pipeline_id"],
        "pipeline_version_id": latest["pipeline_version_id"],
    }

    capsys.readouterr()
    assert schedule(server, "--cron", "0 0 3 * * 0", "--param", "steps=100") == 0
    assert "schedule weekly-retrain: unchanged" in capsys.readouterr().out
    assert server.recurring_runs_named("weekly-retrain") == [first]
    assert len(server.requests_to("POST", "/recurringruns")) == 1

    assert schedule(server, "--cron", "0 30 4 * * 1-5", "--param", "steps=100") == 0
    assert "schedule weekly-retrain: replaced" in capsys.readouterr().out
    (replaced,) = server.recurring_runs_named("weekly-retrain")
    assert replaced["recurring_run_id"] != first["recurring_run_id"]
    assert replaced["trigger"]["cron_schedule"]["cron"] == "0 30 4 * * 1-5"
    assert len(server.requests_to("DELETE", f"/recurringruns/{first['recurring_run_id']}")) == 1


def test_schedule_repoints_to_a_newer_version_and_heals_duplicates(server, package):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "0 0 3 * * 0") == 0
    # someone made a second one by hand in the UI: the next schedule call converges to one
    duplicate = dict(next(iter(server.state.jobs.values())), recurring_run_id="by-hand")
    server.state.jobs["by-hand"] = duplicate
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "0 0 3 * * 0") == 0
    (only,) = server.recurring_runs_named("weekly-retrain")
    newest = server.latest_version(only["pipeline_version_reference"]["pipeline_id"])
    assert only["pipeline_version_reference"]["pipeline_version_id"] == newest["pipeline_version_id"]


def test_follow_latest_sends_no_version_id_and_is_idempotent(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "@weekly", "--follow-latest", "--param", "steps=7") == 0
    (run,) = server.recurring_runs_named("weekly-retrain")
    (sent,) = server.requests_to("POST", "/recurringruns")
    assert "pipeline_version_id" not in sent.body["pipeline_version_reference"]
    assert "pipeline_version_id" not in run["pipeline_version_reference"]
    assert "service_account" not in run  # kept as sent; a pinned run gets the server's default (next test)
    assert run["pipeline_version_reference"]["pipeline_id"] in server.state.pipelines
    capsys.readouterr()
    assert schedule(server, "--cron", "@weekly", "--follow-latest", "--param", "steps=7") == 0
    assert "schedule weekly-retrain: unchanged" in capsys.readouterr().out
    assert server.recurring_runs_named("weekly-retrain") == [run]


def test_the_server_default_service_account_does_not_count_as_a_change(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "@weekly") == 0
    (run,) = server.recurring_runs_named("weekly-retrain")
    assert run["service_account"] == "pipeline-runner"  # filled in by the server, not sent
    capsys.readouterr()
    assert schedule(server, "--cron", "@weekly") == 0
    assert "unchanged" in capsys.readouterr().out
    assert schedule(server, "--cron", "@weekly", "--service-account", "abstractinator-runner") == 0
    (replaced,) = server.recurring_runs_named("weekly-retrain")
    assert replaced["service_account"] == "abstractinator-runner"


def test_a_disabled_schedule_stays_disabled_unless_enabled(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "0 0 3 * * 0") == 0
    assert schedule(server, "--disable") == 0
    capsys.readouterr()
    assert schedule(server, "--cron", "0 0 3 * * 0") == 0
    assert "unchanged" in capsys.readouterr().out
    (run,) = server.recurring_runs_named("weekly-retrain")
    assert run["status"] == "DISABLED"
    assert schedule(server, "--cron", "0 0 4 * * 0") == 0  # replaced, still disabled
    (run,) = server.recurring_runs_named("weekly-retrain")
    assert run["status"] == "DISABLED" and run["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 0"
    capsys.readouterr()
    assert schedule(server, "--cron", "0 0 4 * * 0", "--enable") == 0
    assert "schedule weekly-retrain: enabled" in capsys.readouterr().out
    (run,) = server.recurring_runs_named("weekly-retrain")
    assert run["status"] == "ENABLED"


def test_deleting_a_recurring_run_that_is_already_gone_counts_as_done(server, package):
    from pipelines.kfp_connection import ClusterError, connect
    from pipelines.schedules import _delete_if_present

    client = connect(server.url, token=TOKEN)
    _delete_if_present(client, "already-gone")  # 404: no error
    (request,) = server.requests_to("DELETE", "/recurringruns/already-gone")
    server.required_token = "another"  # any other failure is still one line
    with pytest.raises(ClusterError, match="HTTP 401"):
        _delete_if_present(client, "already-gone")


def test_disable_enable_delete(server, package, capsys):
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    assert schedule(server, "--cron", "0 0 3 * * 0") == 0
    (run_id,) = server.state.jobs
    assert schedule(server, "--disable") == 0
    assert server.state.jobs[run_id]["enabled"] is False
    assert schedule(server, "--enable") == 0
    assert server.state.jobs[run_id]["enabled"] is True
    assert schedule(server, "--delete") == 0
    assert server.state.jobs == {}
    capsys.readouterr()
    assert schedule(server, "--delete") == 0  # already gone: the state asked for holds
    assert "schedule weekly-retrain: absent" in capsys.readouterr().out
    assert schedule(server, "--disable") == 2
    assert "no recurring run named 'weekly-retrain' to disable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 3 * * 0", "has 5 fields; Kubeflow recurring runs take 6, seconds first"),
        ("0 0 25 * * 0", "hour 25 is outside 0-23"),
        ("0 0 3 * * MOO", "day of week 'MOO' is not a number"),
    ],
)
def test_bad_cron_fails_before_any_request(server, cron, message, capsys):
    assert schedule(server, "--cron", cron) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert server.state.requests == []


def test_schedule_of_an_unknown_pipeline_says_so(server, capsys):
    assert schedule(server, "--cron", "0 0 3 * * 0") == 2
    assert "no pipeline named 'small-training': upload it first" in capsys.readouterr().err


def test_fake_server_rejects_a_run_with_undeclared_parameters(server, package):
    """The fake is strict: the tests above would fail if submit sent parameters the pipeline lacks."""
    from pipelines.kfp_connection import ClusterError, connect
    from pipelines.submission import upload_version

    client = connect(server.url, token=TOKEN)
    version = upload_version(client, package, "small-training")
    with pytest.raises(ClusterError, match="HTTP 400 parameters \\['epochs'\\] are not inputs"):
        from pipelines.kfp_connection import api_errors

        with api_errors("run"):
            client.run_pipeline(
                experiment_id=None,
                job_name="x",
                params={"epochs": 1},
                pipeline_id=version.pipeline_id,
                version_id=version.pipeline_version_id,
            )
    assert json.loads(json.dumps(server.requests_to("POST", "/runs")[0].body))["runtime_config"]["parameters"] == {
        "epochs": 1
    }


@pytest.mark.skipif(not (REPO / "pipelines/training.py").is_file(), reason="the training pipeline is not there yet")
def test_submit_the_real_training_pipeline_with_typed_parameters(server, tmp_path, capsys):
    from pipelines.training import ClusterSettings, compile_pipeline

    package = tmp_path / "training.yaml"
    compile_pipeline(str(package), ClusterSettings(gpus=2))
    code = cli(
        "submit",
        "--host",
        server.url,
        "--package",
        str(package),
        "--param",
        "stage1_steps=500",
        "--param",
        'overrides=["max_steps=3"]',
        "--param",
        "skip_if_unchanged=false",
        "--param",
        'gate_rules={"min_improvement": 0.02, "min_exact_match": 0.5}',
    )
    assert code == 0, capsys.readouterr().err
    (run,) = server.state.runs.values()
    assert run["runtime_config"]["parameters"] == {
        "stage1_steps": 500,
        "overrides": ["max_steps=3"],
        "skip_if_unchanged": False,
        "gate_rules": {"min_improvement": 0.02, "min_exact_match": 0.5},
    }
    (pipeline,) = server.state.pipelines.values()
    assert pipeline["display_name"] == "abstractinator-training"
    # the CLI's default --pipeline-name is this pipeline
    assert cli("schedule", "--host", server.url, "--name", "weekly", "--cron", "0 0 3 * * 0") == 0
    (recurring,) = server.recurring_runs_named("weekly")
    assert recurring["pipeline_version_reference"]["pipeline_id"] == pipeline["pipeline_id"]


@pytest.mark.skipif(not (REPO / "pipelines/training.py").is_file(), reason="the training pipeline is not there yet")
@pytest.mark.parametrize(
    "rules, message",
    [
        ('{"min_improvment": 0.02}', "gate_rules: min_improvment: unknown key"),
        ('{"confidence": 1.5}', "gate_rules: confidence: Input should be less than 1"),
    ],
)
def test_a_bad_gate_rule_fails_before_anything_is_uploaded(server, tmp_path, capsys, rules, message):
    """The rules travel as one dict, validated by GateRules: a misspelt rule is never silently its default."""
    from pipelines.training import ClusterSettings, compile_pipeline

    package = tmp_path / "training.yaml"
    compile_pipeline(str(package), ClusterSettings(gpus=0))
    assert cli("submit", "--host", server.url, "--package", str(package), "--param", f"gate_rules={rules}") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not server.requests_to("POST", "/pipelines/upload") and not server.state.runs


def test_schedule_without_cron_or_action_is_one_line(server, capsys):
    assert schedule(server) == 2
    assert capsys.readouterr().err == "error: schedule needs --cron (or one of --disable, --enable, --delete)\n"
    assert server.state.requests == []


def test_disable_and_delete_together_are_refused(server):
    with pytest.raises(SystemExit):
        schedule(server, "--disable", "--delete")


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("{url}/not-kfp", "answered HTTP 404 on /apis/v2beta1/healthz: is it the Kubeflow Pipelines API"),
        ("localhost:8888", "host 'localhost:8888' must start with http:// or https://"),
    ],
)
def test_a_host_that_is_not_the_kfp_api_is_named(server, package, capsys, host, message):
    assert cli("submit", "--host", host.format(url=server.url), "--package", str(package)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow  # ~9 s: four interpreters importing kfp
def test_racing_schedule_calls_leave_one_recurring_run(monkeypatch, tmp_path, package):
    """4 processes run the same `schedule` at once; every one of them lists before any creates (a barrier in the
    fake), so all 4 create. They must converge on exactly one recurring run with the requested settings."""
    import os
    import subprocess
    import sys

    fake = FakeKfpHttpServer(required_token=TOKEN, latency_s=0.05, list_barrier=4).start()
    try:
        monkeypatch.setenv("ABSTRACTINATOR_KFP_TOKEN", TOKEN)
        monkeypatch.setattr("kfp.Client._LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
        assert cli("submit", "--host", fake.url, "--package", str(package)) == 0
        env = {**os.environ, "ABSTRACTINATOR_KFP_TOKEN": TOKEN, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
        command = [
            sys.executable,
            "-m",
            "abstractinator",
            "pipeline",
            "schedule",
            "--host",
            fake.url,
            "--name",
            "weekly-retrain",
            "--pipeline-name",
            "small-training",
            "--cron",
            "0 0 3 * * 0",
            "--param",
            "steps=42",
        ]
        racers = [
            subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        outputs = [racer.communicate(timeout=120) for racer in racers]
        assert [racer.returncode for racer in racers] == [0] * 4, [err for _, err in outputs]
        assert len(fake.requests_to("POST", "/recurringruns")) == 4  # the barrier made every racer create
        (only,) = fake.recurring_runs_named("weekly-retrain")
        assert only["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
        assert only["runtime_config"]["parameters"] == {"steps": 42}
        assert (
            only["pipeline_version_reference"]["pipeline_version_id"]
            == fake.latest_version(only["pipeline_version_reference"]["pipeline_id"])["pipeline_version_id"]
        )
    finally:
        fake.stop()


def documented_commands() -> list[list[str]]:
    """Every `abstractinator pipeline ...` command in the bash blocks of docs/cluster.md, as argv (line
    continuations joined, comments dropped)."""
    import re
    import shlex

    text = (REPO / "docs" / "cluster.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("abstractinator pipeline "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_the_documented_cluster_commands_run_verbatim(server, tmp_path, monkeypatch, capsys):
    """docs/cluster.md steps 4b, 5, 7 and 8 as written (the default compile: GPU requests, the S3 Secret, the settings
    ConfigMap; so the uploaded package has a platform document and the API wraps its spec), with only the host
    pointed at the fake; then `schedule` again is `unchanged`."""
    from abstractinator.cli import main

    commands = documented_commands()
    # step 4b's compile with a pipeline root of its own, step 5's (which the later steps use), submit, schedule
    assert [c[1] for c in commands] == ["compile", "compile", "submit", "schedule"], commands
    monkeypatch.chdir(tmp_path)
    for argv in commands:
        argv = [server.url if arg == "http://localhost:8888" else arg for arg in argv]
        assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "schedule weekly-retrain: created" in out
    (version,) = server.api_versions()
    assert set(version["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}  # as the real API returns it
    (run,) = server.state.runs.values()
    assert run["runtime_config"]["parameters"]["stage1_steps"] == 2000
    (recurring,) = server.recurring_runs_named("weekly-retrain")
    assert recurring["runtime_config"]["parameters"] == {
        "config": "demo",
        "artifact_root": "s3://my-bucket/abstractinator/pipeline",
    }
    schedule_argv = [server.url if arg == "http://localhost:8888" else arg for arg in commands[3]]
    assert main(schedule_argv) == 0
    assert "schedule weekly-retrain: unchanged" in capsys.readouterr().out
    assert server.recurring_runs_named("weekly-retrain") == [recurring]


def test_the_fake_answers_in_the_upstream_shapes(server, package):
    """What the imitation promises in its docstring, checked on the wire: healthz fields, gRPC-style errors with
    the gRPC code, upload errors as error_message, proto names with unpopulated fields left out."""
    import urllib.error
    import urllib.request

    def get(path: str) -> tuple[int, dict]:
        request = urllib.request.Request(
            server.url + "/apis/v2beta1" + path, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    assert get("/healthz") == (
        200,
        {"commit_sha": "unknown", "tag_name": "2.17.0", "multi_user": False, "pipeline_store": "database"},
    )
    status, body = get("/pipelines/nope/versions")
    assert status == 404 and body["code"] == 5 and set(body) == {"code", "message", "details"}
    assert cli("submit", "--host", server.url, "--package", str(package)) == 0
    status, listed = get("/recurringruns")
    assert (status, listed) == (200, {})  # nothing: not even total_size 0 (EmitUnpopulated false)
    (pipeline,) = get("/pipelines")[1]["pipelines"]
    assert set(pipeline) == {"pipeline_id", "display_name", "name", "created_at"}
    assert pipeline["created_at"].endswith("Z") and "." not in pipeline["created_at"]  # whole seconds


@pytest.mark.parametrize(
    ("text", "finite"), [("[1, NaN]", "[1, 2]"), ('{"a": Infinity}', '{"a": 3}'), ("[1e999]", "[1e99]")]
)
def test_a_json_parameter_with_a_non_finite_number_is_refused(text, finite):
    from pipelines.submission import ClusterError, parse_parameters

    kind = "LIST" if text.startswith("[") else "STRUCT"
    spec = {"root": {"inputDefinitions": {"parameters": {"value": {"parameterType": kind}}}}}
    assert parse_parameters([f"value={finite}"], spec)
    with pytest.raises(ClusterError, match=f"is not a {kind.lower()}"):
        parse_parameters([f"value={text}"], spec)
