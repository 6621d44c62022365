"""Submitting the compiled pipeline to a Kubeflow Pipelines cluster (the schedule: pipelines/schedules.py).

`submit` uploads the compiled IR YAML as a new version of a named pipeline (creating the pipeline the first
time), finds or creates the experiment and starts a run of exactly that version with typed parameters. The
pipeline-file, parameter and lookup helpers here serve `schedule` too.

The API's shapes this module relies on (kubeflow/pipelines 2.17.0, backend/src/apiserver/server/): a version's
`pipeline_spec` is wrapped with its platform spec when the package has one (api_util.go). The gate rules
(`gate_rules`, one dict) are checked against GateRules before anything is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from components.registry.gate_rules import GATE_RULES_PARAMETER, rules_from_parameter
from pipelines.kfp_connection import ClusterError, api_errors


@dataclass(frozen=True)
class SubmitResult:
    run_id: str
    run_url: str
    pipeline_id: str
    pipeline_version_id: str
    experiment_id: str


# -- the compiled pipeline -----------------------------------------------------------------------------------------
def load_pipeline_spec(package: Path) -> dict:
    """The PipelineSpec document of a compiled pipeline file (the first YAML document)."""
    package = Path(package)
    if not package.is_file():
        raise ClusterError(
            f"pipeline file {package} not found: compile it first (abstractinator pipeline compile --out {package})"
        )
    try:
        documents = [d for d in yaml.safe_load_all(package.read_text()) if d is not None]
    except yaml.YAMLError as error:
        raise ClusterError(f"pipeline file {package} is not YAML: {' '.join(str(error).split())}") from None
    if not documents or not isinstance(documents[0], dict) or "pipelineInfo" not in documents[0]:
        raise ClusterError(f"pipeline file {package} is not a compiled kfp pipeline (no pipelineInfo)")
    return documents[0]


def unwrap_pipeline_spec(spec: dict) -> dict:
    """The PipelineSpec of a version as the API returns it: for a package with a platform (kfp-kubernetes)
    document the server wraps it as {"pipeline_spec": ..., "platform_spec": ...} (kubeflow/pipelines
    backend/src/apiserver/server/api_util.go, YamlStringToPipelineSpecStruct); otherwise it is the spec itself."""
    if "root" not in spec and isinstance(spec.get("pipeline_spec"), dict):
        return spec["pipeline_spec"]
    return spec


def compiled_pipeline_root(spec: dict) -> str | None:
    """The pipeline root compiled into the spec (`pipeline compile --pipeline-root`), if any. KFP 2.17's backend
    never reads the spec's defaultPipelineRoot (the root DAG driver takes the run's runtime pipeline root, else
    the kfp-launcher ConfigMap's: kubeflow/pipelines 2.17.0 backend/src/v2/driver/root_dag.go), so `submit` and
    `schedule` send it as the run's pipeline root unless one is given."""
    return unwrap_pipeline_spec(spec).get("defaultPipelineRoot") or None


def pipeline_inputs(spec: dict) -> dict[str, dict]:
    """{name: definition} of the pipeline's top-level parameters (parameterType, defaultValue, isOptional)."""
    return unwrap_pipeline_spec(spec).get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {}


def _no_constant(name: str):
    raise ValueError(name)  # NaN, Infinity: Python's json reads them, JSON itself (and the KFP API) does not


def _finite(text: str) -> float:
    if not math.isfinite(value := float(text)):  # 1e999 reads as infinity
        raise ValueError(text)
    return value


def _convert(name: str, text: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return _finite(text)  # JSON, the API's encoding, has no NaN or infinity
        if kind == "BOOLEAN":
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return lowered in ("true", "1", "yes")
        if kind in ("LIST", "STRUCT"):
            value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
            if not isinstance(value, list if kind == "LIST" else dict):
                raise ValueError(text)
            return value
    except ValueError:
        raise ClusterError(f"parameter {name}: {text!r} is not a {kind.lower().replace('number_', '')}") from None
    return text


def parse_parameters(pairs: list[str], spec: dict | None) -> dict[str, Any]:
    """`key=value` strings as a dict typed by the pipeline's declared inputs (strings where no spec is known)."""
    declared = pipeline_inputs(spec) if spec else None
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ClusterError(f"parameter {pair!r} is not key=value")
        if declared is not None and key not in declared:
            raise ClusterError(f"parameter {key!r} is not an input of the pipeline (inputs: {', '.join(declared)})")
        kind = declared[key].get("parameterType", "STRING") if declared is not None else "STRING"
        parameters[key] = _convert(key, value, kind)
        if key == GATE_RULES_PARAMETER and declared is not None:  # a bad rule fails here, with nothing sent
            rules_from_parameter(parameters[key])
    return parameters


def version_name(package: Path, now: datetime | None = None) -> str:
    """A unique, readable version name: UTC time plus the file's content hash."""
    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:12]
    return f"{(now or datetime.now(UTC)).strftime('%Y%m%d-%H%M%S')}-{digest}"


# -- lookups --------------------------------------------------------------------------------------------------------
def name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def find_pipeline_id(client, name: str, namespace: str | None = None) -> str | None:
    kwargs = {"namespace": namespace} if namespace else {}
    with api_errors(f"looking up pipeline {name!r}"):
        response = client.pipelines.pipeline_service_list_pipelines(filter=name_filter(name), **kwargs)
    pipelines = response.pipelines or []
    if len(pipelines) > 1:
        raise ClusterError(f"{len(pipelines)} pipelines are named {name!r}; names must be unique")
    return pipelines[0].pipeline_id if pipelines else None


def latest_version(client, pipeline_id: str):
    with api_errors(f"listing the versions of pipeline {pipeline_id}"):
        response = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
    if not response.pipeline_versions:
        raise ClusterError(f"pipeline {pipeline_id} has no versions")
    return response.pipeline_versions[0]


def experiment_id(client, name: str, namespace: str | None) -> str:
    """Find or create the experiment. kfp looks it up and creates it when missing; a concurrent call may create
    it in between (HTTP 409 AlreadyExists), and then the second lookup finds it."""
    import kfp_server_api

    with contextlib.redirect_stdout(sys.stderr), api_errors(f"finding or creating experiment {name!r}"):
        try:
            return client.create_experiment(name=name, namespace=namespace).experiment_id
        except kfp_server_api.ApiException as error:
            if error.status != 409:
                raise
        return client.create_experiment(name=name, namespace=namespace).experiment_id


# -- submit ---------------------------------------------------------------------------------------------------------
def upload_version(client, package: Path, pipeline_name: str, namespace: str | None = None):
    """Upload `package` as a new version of `pipeline_name` (creating the pipeline the first time)."""
    pipeline_id = find_pipeline_id(client, pipeline_name, namespace)
    with contextlib.redirect_stdout(sys.stderr):
        if pipeline_id is None:
            with api_errors(f"uploading pipeline {pipeline_name!r}"):
                pipeline = client.upload_pipeline(str(package), pipeline_name=pipeline_name, namespace=namespace)
            return latest_version(client, pipeline.pipeline_id)
        with api_errors(f"uploading a new version of pipeline {pipeline_name!r}"):
            return client.upload_pipeline_version(
                str(package),
                version_name(package),
                pipeline_id=pipeline_id,
                description=f"sha256:{hashlib.sha256(Path(package).read_bytes()).hexdigest()}",
            )


def submit(
    client,
    package: Path,
    *,
    parameters: list[str] | None = None,
    pipeline_name: str | None = None,
    experiment: str = "abstractinator",
    namespace: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    ui_url: str | None = None,
) -> SubmitResult:
    spec = load_pipeline_spec(package)
    typed = parse_parameters(parameters or [], spec)  # before any upload: a typo fails with nothing sent
    name = pipeline_name or spec["pipelineInfo"]["name"]
    pipeline_root = pipeline_root or compiled_pipeline_root(spec)
    version = upload_version(client, Path(package), name, namespace)
    exp_id = experiment_id(client, experiment, namespace)
    display = run_name or f"{name} {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')}"
    with contextlib.redirect_stdout(sys.stderr), api_errors(f"starting a run of {name!r}"):
        run = client.run_pipeline(
            experiment_id=exp_id,
            job_name=display,
            params=typed,
            pipeline_id=version.pipeline_id,
            version_id=version.pipeline_version_id,
            pipeline_root=pipeline_root,
            service_account=service_account,
        )
    base = (ui_url or client._existing_config.host).rstrip("/")
    return SubmitResult(
        run.run_id, f"{base}/#/runs/details/{run.run_id}", version.pipeline_id, version.pipeline_version_id, exp_id
    )
