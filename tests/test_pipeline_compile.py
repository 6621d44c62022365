"""The compiled kfp pipeline (IR YAML): five components, GPU and CPU/memory requests, the S3 Secret as env,
the image and the retraining condition; and `abstractinator pipeline compile`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from abstractinator.cli import main
from pipelines.training import DEFAULT_IMAGE, ClusterSettings, compile_pipeline

COMPONENTS = ("prepare-data", "stage1-pretrain", "stage2-top-lm", "evaluate", "promote")
HEAVY = ("stage1-pretrain", "stage2-top-lm", "evaluate")


def load(path: Path) -> tuple[dict, dict]:
    pipeline, platform = list(yaml.safe_load_all(path.read_text()))
    return pipeline, platform


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    compile_pipeline(str(out), ClusterSettings(gpus=2, image="registry.example/abstractinator:test",
                                               s3_endpoint_url="http://seaweedfs:8333"))
    return load(out)


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
    assert tasks["promote"]["inputs"]["parameters"]["metrics"]["taskOutputParameter"]["producerTask"] == "evaluate"


def test_gpu_cpu_memory_and_image(compiled) -> None:
    pipeline, _ = compiled
    executors = pipeline["deploymentSpec"]["executors"]
    for name in COMPONENTS:
        container = executors[f"exec-{name}"]["container"]
        assert container["image"] == "registry.example/abstractinator:test"
        resources = container["resources"]
        if name in HEAVY:
            assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
            assert resources["accelerator"]["resourceCount"] == "2"
            assert resources["resourceCpuLimit"] == "4" and resources["resourceMemoryLimit"] == "16G"
        else:
            assert "accelerator" not in resources
        assert {"name": "AWS_ENDPOINT_URL_S3", "value": "http://seaweedfs:8333"} in container["env"]


def test_every_task_reads_the_s3_secret_as_env(compiled) -> None:
    _, platform = compiled
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in COMPONENTS:
        (secret,) = executors[f"exec-{name}"]["secretAsEnv"]
        assert secret["secretName"] == "abstractinator-s3"
        assert {item["envVar"] for item in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name in HEAVY:
        assert executors[f"exec-{name}"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_pipeline_parameters(compiled) -> None:
    pipeline, _ = compiled
    parameters = pipeline["root"]["inputDefinitions"]["parameters"]
    for name in ("config", "overrides", "data_source", "stage1_steps", "stage2_steps", "artifact_root",
                 "model_name", "min_improvement", "max_bits_per_byte", "min_live_code_share", "gate_metric"):
        assert name in parameters
    assert parameters["stage1_steps"]["defaultValue"] == 20


def test_cli_compile_with_no_gpu(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cpu.yaml"
    assert main(["pipeline", "compile", "--out", str(out), "--gpus", "0", "--s3-secret", ""]) == 0
    assert "0 GPU" in capsys.readouterr().out
    pipeline, *rest = list(yaml.safe_load_all(out.read_text()))
    for executor in pipeline["deploymentSpec"]["executors"].values():
        assert "accelerator" not in executor["container"].get("resources", {})
        assert executor["container"]["image"] == DEFAULT_IMAGE
    platform_executors = rest[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if rest else {}
    assert not any("secretAsEnv" in e for e in platform_executors.values())
    assert main(["pipeline", "compile", "--out", str(out), "--gpus", "-1"]) == 2
