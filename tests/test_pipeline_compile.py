"""The compiled kfp pipeline (IR YAML): five components, GPU and CPU/memory requests, settings from the ConfigMap
and keys from Secrets (never values), KFP artifacts, caching, retries, timeouts, volumes; and
`abstractinator pipeline compile`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main
from components.infrastructure.provenance import code_identity
from components.registry.gate_rules import GateRules
from pipelines.step_results import PrepareStepResult
from pipelines.step_table import (
    EVALUATE,
    PREPARE_DATA,
    PROMOTE,
    RESULT_OUTPUT,
    STAGE1_PRETRAIN,
    STAGE2_TOP_LM,
    STEP_NAMES,
    STEPS,
    kfp_task_name,
)
from pipelines.task_runtime import SETTINGS_CONFIG_MAP, SETTINGS_KEYS
from pipelines.training import DEFAULT_IMAGE, ClusterSettings, compile_pipeline

COMPONENTS = tuple(kfp_task_name(step.name) for step in STEPS)  # the tasks as kfp names them
TRAINING = tuple(kfp_task_name(step.name) for step in STEPS if step.training_stage)
HEAVY = (*TRAINING, kfp_task_name(EVALUATE))


def load(path: Path) -> tuple[dict, dict]:
    pipeline, platform = list(yaml.safe_load_all(path.read_text()))
    return pipeline, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    """The default compile (what `make compile-pipeline` does), with 2 GPUs."""
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    assert (
        main(
            ["pipeline", "compile", "--out", str(out), "--gpus", "2", "--image", "registry.example/abstractinator:test"]
        )
        == 0
    )
    return load(out)


def tasks_of(pipeline: dict) -> dict:
    (condition,) = [name for name in pipeline["root"]["dag"]["tasks"] if name.startswith("condition")]
    return {**pipeline["root"]["dag"]["tasks"], **pipeline["components"][f"comp-{condition}"]["dag"]["tasks"]}


def platform_executors(platform: dict) -> dict:
    return platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_five_components_wired_in_order(compiled) -> None:
    pipeline, _ = compiled
    steps = {name for name in pipeline["components"] if not name.startswith("comp-condition")}
    assert steps == {f"comp-{name}" for name in COMPONENTS}
    (condition_name,) = [name for name in pipeline["root"]["dag"]["tasks"] if name.startswith("condition")]
    condition = pipeline["root"]["dag"]["tasks"][condition_name]
    assert "'retrain'" in condition["triggerPolicy"]["condition"]  # scheduled runs with nothing new stop here
    tasks = pipeline["components"][f"comp-{condition_name}"]["dag"]["tasks"]
    assert set(tasks) == set(COMPONENTS[1:])
    assert tasks["stage2-top-lm"]["dependentTasks"] == ["stage1-pretrain"]
    assert tasks["promote"]["inputs"]["parameters"]["evaluate"]["taskOutputParameter"] == {
        "producerTask": "evaluate",
        "outputParameterKey": "result",
    }
    base = tasks["stage2-top-lm"]["inputs"]["artifacts"]["base_components"]["taskOutputArtifact"]
    assert base == {"outputArtifactKey": "base_components", "producerTask": "stage1-pretrain"}
    assert (
        tasks["evaluate"]["inputs"]["artifacts"]["checkpoint"]["taskOutputArtifact"]["producerTask"] == "stage2-top-lm"
    )


def test_each_step_hands_on_one_result_taken_by_the_steps_name(compiled) -> None:
    """Every task has one dict output, `result` (its step's model in pipelines/step_results.py); a task takes
    another step's result as the parameter named by that step and no loose value of it (URI, hash, run id). The
    promote task gets the data, both trainings and the evaluation so (its evidence and lineage), and the image
    that made the model."""
    pipeline, _ = compiled
    tasks = tasks_of(pipeline)
    for step in STEPS:
        outputs = pipeline["components"][f"comp-{kfp_task_name(step.name)}"]["outputDefinitions"]["parameters"]
        assert outputs[RESULT_OUTPUT] == {"parameterType": "STRUCT"}
        control = {"Output", "reason"} if step.name == PREPARE_DATA else set()  # the champion check: dsl.If
        assert set(outputs) == {RESULT_OUTPUT} | control, step.name
    read = {STAGE1_PRETRAIN: {PREPARE_DATA}, STAGE2_TOP_LM: {PREPARE_DATA, STAGE1_PRETRAIN}}
    read |= {EVALUATE: {PREPARE_DATA, STAGE2_TOP_LM}, PROMOTE: {PREPARE_DATA, STAGE1_PRETRAIN, STAGE2_TOP_LM, EVALUATE}}
    for reader, producers in read.items():
        inputs = tasks[kfp_task_name(reader)]["inputs"]["parameters"]
        assert {name for name in inputs if name in STEP_NAMES} == producers, reader
        for producer in producers:
            if producer == PREPARE_DATA:  # produced outside the condition: a channel into it
                assert inputs[producer] == {"componentInputParameter": "pipelinechannel--prepare-data-result"}
            else:
                wired = inputs[producer]["taskOutputParameter"]
                assert wired == {"producerTask": kfp_task_name(producer), "outputParameterKey": RESULT_OUTPUT}
        loose = {"data_uri", "data_hash", "checkpoint_uri", "checkpoint_hash", "base_components_hash", "report_uri"}
        assert not loose & set(inputs) and not {n for n in inputs if n.endswith("_run_id")}, reader
    promote = tasks[kfp_task_name(PROMOTE)]["inputs"]["parameters"]
    assert promote["image"]["runtimeValue"]["constant"] == "registry.example/abstractinator:test"


def test_outputs_are_kfp_artifacts(compiled) -> None:
    pipeline, _ = compiled

    def artifact_types(component: str) -> dict[str, str]:
        outputs = pipeline["components"][f"comp-{component}"]["outputDefinitions"].get("artifacts", {})
        return {name: spec["artifactType"]["schemaTitle"] for name, spec in outputs.items()}

    assert artifact_types("prepare-data") == {"dataset": "system.Dataset"}
    assert artifact_types("stage1-pretrain") == {"checkpoint": "system.Model", "base_components": "system.Model"}
    assert artifact_types("stage2-top-lm") == {"checkpoint": "system.Model"}
    assert artifact_types("evaluate") == {"scores": "system.Metrics", "report": "system.Markdown"}


def test_tasks_read_settings_from_the_config_map_and_keys_from_secrets(compiled) -> None:
    pipeline, platform = compiled
    executors = platform_executors(platform)
    for name in COMPONENTS:
        executor = executors[f"exec-{name}"]
        config_map, public_key = executor["configMapAsEnv"]
        assert config_map["configMapName"] == public_key["configMapName"] == SETTINGS_CONFIG_MAP
        # every task may verify evidence; a cluster without the key verifies none (optional: the pod still starts)
        assert public_key["keyToEnv"] == [
            {"configMapKey": "ABSTRACTINATOR_EVAL_PUBLIC_KEY", "envVar": "ABSTRACTINATOR_EVAL_PUBLIC_KEY"}
        ]
        assert public_key["optional"] is True
        # the signing key is mounted into the evaluate task alone
        mounted = [secret["secretName"] for secret in executor.get("secretAsVolume", [])]
        assert mounted == (["abstractinator-eval-signing-key"] if name == "evaluate" else []), (name, mounted)
        assert (
            {item["envVar"] for item in config_map["keyToEnv"]}
            == set(SETTINGS_KEYS)
            >= {"MLFLOW_TRACKING_URI", "ABSTRACTINATOR_ARTIFACT_ROOT"}
        )
        secrets = {secret["secretName"]: secret for secret in executor["secretAsEnv"]}
        assert {i["envVar"] for i in secrets["abstractinator-s3"]["keyToEnv"]} == {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        }
        assert {i["envVar"] for i in secrets["abstractinator-mlflow-auth"]["keyToEnv"]} == {
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
        }
        assert executor["fieldPathAsEnv"] == [{"name": "KFP_RUN_ID", "fieldPath": "metadata.labels['pipeline/runid']"}]
        env = {
            e["name"]: e["value"] for e in pipeline["deploymentSpec"]["executors"][f"exec-{name}"]["container"]["env"]
        }
        # nothing baked in: no endpoint, no tracking server; every writable place is the scratch volume
        assert "MLFLOW_TRACKING_URI" not in env and "ABSTRACTINATOR_S3_ENDPOINT_URL" not in env
        assert env["ABSTRACTINATOR_REQUIRE_TRACKING_SERVER"] == "1"
        signing_key = env.get("ABSTRACTINATOR_EVAL_SIGNING_KEY_FILE")
        assert signing_key == ("/var/run/secrets/abstractinator-eval/ed25519.pem" if name == "evaluate" else None)
        assert all(
            env[key].startswith("/scratch")
            for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "ABSTRACTINATOR_DATA_HOME", "MPLCONFIGDIR")
        )
        assert {"volumeName": "scratch", "mountPath": "/scratch", "sizeLimit": "50Gi"} in executor["emptyDirMounts"]


def test_gpu_tasks_get_gpus_shm_timeout_and_training_a_retry_policy(compiled) -> None:
    pipeline, platform = compiled
    executors, tasks = platform_executors(platform), tasks_of(pipeline)
    for name in COMPONENTS:
        container = pipeline["deploymentSpec"]["executors"][f"exec-{name}"]["container"]
        assert container["image"] == "registry.example/abstractinator:test"
        resources, executor = container["resources"], executors[f"exec-{name}"]
        if name in HEAVY:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "2"
            assert resources["resourceCpuLimit"] == "4" and resources["resourceMemoryLimit"] == "16G"
            assert executor["tolerations"][0]["key"] == "nvidia.com/gpu"
            assert {"volumeName": "dshm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "8Gi"} in executor[
                "emptyDirMounts"
            ]
            assert int(executor["activeDeadlineSeconds"]) > 0
        else:
            assert "accelerator" not in resources and "activeDeadlineSeconds" not in executor
        if name in TRAINING:
            assert tasks[name]["retryPolicy"]["maxRetryCount"] == 3
        else:
            assert "retryPolicy" not in tasks[name]


def test_caching_is_on_exactly_for_the_deterministic_tasks(compiled) -> None:
    pipeline, _ = compiled
    tasks = tasks_of(pipeline)
    cached = {name for name in COMPONENTS if tasks[name].get("cachingOptions", {}).get("enableCache")}
    # not the data step (asks the registry), evaluation (scores the registry's champion) nor promote (writes it)
    assert cached == {"stage1-pretrain", "stage2-top-lm"} and cached < set(HEAVY)
    for name in HEAVY:  # the cache key holds the code identity of the compiled checkout and the data hash
        inputs = tasks[name]["inputs"]["parameters"]
        assert inputs["code_identity"]["runtimeValue"]["constant"] == code_identity()
        # the data hash through prepare_data's result, which holds the data alone (so equal whenever the data is)
        assert inputs[PREPARE_DATA] == {"componentInputParameter": "pipelinechannel--prepare-data-result"}
        assert set(PrepareStepResult.model_fields) == {"data_uri", "data_hash"}
    # stage 1's key holds its own step count, not stage 2's: a run that changes only stage 2 reuses stage 1
    assert "stage2_steps" not in tasks["stage1-pretrain"]["inputs"]["parameters"]
    assert "stage1_steps" in tasks["stage1-pretrain"]["inputs"]["parameters"]
    assert "stage2_steps" in tasks["stage2-top-lm"]["inputs"]["parameters"]


def test_pipeline_parameters(compiled) -> None:
    pipeline, _ = compiled
    parameters = pipeline["root"]["inputDefinitions"]["parameters"]
    for name in (
        "config",
        "overrides",
        "data_source",
        "stage1_steps",
        "stage2_steps",
        "artifact_root",
        "model_name",
        "gate_rules",
    ):
        assert name in parameters
    # every gate rule is in the one dict parameter (none unreachable), none as a loose parameter
    assert GateRules.model_validate(parameters["gate_rules"]["defaultValue"]) == GateRules()
    assert set(parameters["gate_rules"]["defaultValue"]) == set(GateRules.model_fields)
    assert not set(parameters) & set(GateRules.model_fields)
    promote = tasks_of(pipeline)["promote"]["inputs"]["parameters"]
    assert promote["gate_rules"] == {"componentInputParameter": "pipelinechannel--gate_rules"}
    assert parameters["stage1_steps"]["defaultValue"] == 20
    assert parameters["artifact_root"]["defaultValue"] == ""  # the cluster's ABSTRACTINATOR_ARTIFACT_ROOT


def test_cli_compile_with_no_gpu_and_no_cluster_objects(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cpu.yaml"
    assert (
        main(["pipeline", "compile", "--out", str(out), "--gpus", "0", "--s3-secret", "", "--mlflow-auth-secret", ""])
        == 0
    )
    assert "0 GPU" in capsys.readouterr().out
    pipeline, *rest = list(yaml.safe_load_all(out.read_text()))
    for executor in pipeline["deploymentSpec"]["executors"].values():
        assert "accelerator" not in executor["container"].get("resources", {})
        assert executor["container"]["image"] == DEFAULT_IMAGE
    executors = rest[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if rest else {}
    assert not any("secretAsEnv" in e for e in executors.values())
    assert main(["pipeline", "compile", "--out", str(out), "--gpus", "-1"]) == 2


def test_literal_overrides_are_env_values_and_credentials_are_refused(tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.yaml"
    assert (
        main(
            [
                "pipeline",
                "compile",
                "--out",
                str(out),
                "--mlflow-tracking-uri",
                "http://mlflow:5000",
                "--s3-endpoint-url",
                "http://seaweedfs:8333",
            ]
        )
        == 0
    )
    pipeline, _ = load(out)
    env = pipeline["deploymentSpec"]["executors"]["exec-promote"]["container"]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in env
    assert {"name": "ABSTRACTINATOR_S3_ENDPOINT_URL", "value": "http://seaweedfs:8333"} in env
    capsys.readouterr()
    refused = tmp_path / "refused.yaml"
    assert (
        main(
            ["pipeline", "compile", "--out", str(refused), "--mlflow-tracking-uri", "http://admin:hunter2@mlflow:5000"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "holds credentials" in err and "hunter2" not in err and err.count("\n") == 1
    assert not refused.exists()
    with pytest.raises(ValueError, match="must not hold credentials"):
        ClusterSettings(mlflow_tracking_uri="https://u:p@mlflow.example")


def test_compile_pipeline_function_defaults(tmp_path: Path) -> None:
    out = compile_pipeline(str(tmp_path / "p.yaml"))
    pipeline, platform = load(Path(out))
    assert pipeline["pipelineInfo"]["name"] == "abstractinator-training"
    assert (
        platform_executors(platform)["exec-prepare-data"]["configMapAsEnv"][0]["configMapName"] == SETTINGS_CONFIG_MAP
    )
