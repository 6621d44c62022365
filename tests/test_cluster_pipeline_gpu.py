"""The compiled training pipeline for a GPU cluster: training and evaluation tasks request GPUs (and carry the GPU
node toleration), the data and promote tasks request none; a CPU compile requests none anywhere; every task runs
the image given at compile time and reads the S3 keys from the Secret the manifests define."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
GPU_TASKS = ("stage1", "stage2", "evaluate")
CPU_TASKS = ("prepare", "promote")
IMAGE = "registry.example.com/abstractinator:test-1"

pytestmark = pytest.mark.skipif(
    not (REPO / "pipelines/training.py").is_file(),
    reason="pipelines/training.py (the training pipeline) is not there yet",
)


def compile_for(tmp_path: Path, gpus: int) -> tuple[dict, dict]:
    from pipelines.training import ClusterSettings, compile_pipeline

    out = tmp_path / f"pipeline-{gpus}.yaml"
    compile_pipeline(str(out), ClusterSettings(image=IMAGE, gpus=gpus))
    documents = list(yaml.safe_load_all(out.read_text()))
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(documents) > 1 else {}
    return documents[0], platform


def executors_by_task(spec: dict) -> dict[str, str]:
    """{task name: executor label} over the root DAG and every nested DAG (dsl.If makes sub-DAGs)."""
    found = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task, task_spec in dag["tasks"].items():
            component = spec["components"][task_spec["componentRef"]["name"]]
            if "executorLabel" in component:
                found[task] = component["executorLabel"]
    return found


def kind_of(task: str) -> str:
    matches = [k for k in GPU_TASKS + CPU_TASKS if k in task]
    assert len(matches) == 1, f"task {task!r} is neither a training/eval nor a data/promote task"
    return matches[0]


@pytest.mark.parametrize("gpus", [1, 4])
def test_gpu_compile_requests_gpus_on_training_and_evaluation_only(tmp_path, gpus):
    spec, platform = compile_for(tmp_path, gpus)
    tasks = executors_by_task(spec)
    assert {kind_of(t) for t in tasks} == set(GPU_TASKS + CPU_TASKS)
    for task, executor in tasks.items():
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        accelerator = container.get("resources", {}).get("accelerator")
        tolerations = platform.get(executor, {}).get("tolerations", [])
        if kind_of(task) in GPU_TASKS:
            assert accelerator is not None, f"{task} requests no GPU"
            assert accelerator.get("resourceType", accelerator.get("type")) == "nvidia.com/gpu"
            assert int(accelerator.get("resourceCount", accelerator.get("count"))) == gpus
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
            assert "cpuLimit" in container["resources"] and "memoryLimit" in container["resources"]
        else:
            assert accelerator is None, f"{task} requests a GPU"
            assert not tolerations
        assert container["image"] == IMAGE


def test_cpu_compile_requests_no_gpu_anywhere(tmp_path):
    spec, platform = compile_for(tmp_path, 0)
    assert "accelerator" not in yaml.safe_dump(spec["deploymentSpec"])
    assert "nvidia.com/gpu" not in yaml.safe_dump(platform)


def test_tasks_read_s3_keys_from_the_secret_the_manifests_template(tmp_path):
    spec, platform = compile_for(tmp_path, 1)
    template = yaml.safe_load((REPO / "manifests/secrets/s3.template.yaml").read_text())
    for executor in spec["deploymentSpec"]["executors"]:
        (secret,) = [s for s in platform[executor]["secretAsEnv"] if s["secretName"] == template["metadata"]["name"]]
        assert not secret.get("optional")
        assert {item["secretKey"] for item in secret["keyToEnv"]} <= set(template["stringData"])


def test_tasks_read_the_settings_and_mlflow_auth_the_manifests_create(tmp_path):
    """The contract with manifests/: the ConfigMap the tasks read holds every key they map, and the MLflow auth
    Secret's template has every key they read from it."""
    spec, platform = compile_for(tmp_path, 1)
    settings = yaml.safe_load((REPO / "manifests/kfp/base/settings.yaml").read_text())
    auth = yaml.safe_load((REPO / "manifests/secrets/mlflow-auth.template.yaml").read_text())
    for executor in spec["deploymentSpec"]["executors"]:
        config_maps = platform[executor]["configMapAsEnv"]  # the required keys, and the optional public key
        assert {config_map["configMapName"] for config_map in config_maps} == {settings["metadata"]["name"]}
        mapped = {item["configMapKey"] for config_map in config_maps for item in config_map["keyToEnv"]}
        assert mapped == set(settings["data"])
        (secret,) = [s for s in platform[executor]["secretAsEnv"] if s["secretName"] == auth["metadata"]["name"]]
        assert {item["secretKey"] for item in secret["keyToEnv"]} <= set(auth["stringData"])
