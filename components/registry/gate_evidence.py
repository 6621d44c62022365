"""What the gate decides from: the evaluation as it was measured, re-read and checked at promotion time.

Version tags are editable by anyone with write access, so they never feed a decision (they mirror the metrics
for display). The evidence is anchored in what MLflow does not let anyone change:

- a model version's `run_id` (set when the version is created; there is no API to change it) names the
  candidate run that logged the model;
- that run's params (MLflow refuses to change a logged param: "Changing param values is not allowed",
  mlflow/store/tracking/sqlalchemy_store.py `log_param`) hold `report_sha256`, `eval_run_id` and the lineage;
- the evaluation report (`evaluation/report.json`, an artifact of the candidate run) must hash to
  `report_sha256`; the gate's metrics are the report's `metrics`;
- the evaluation run's logged metrics (`eval/<key>`) must agree with the report: a metric logged again later
  (metrics can be appended to) makes the evidence disagree, and the version is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from pathlib import Path

from pydantic import BaseModel

from configs.errors import UserError

REPORT_ARTIFACT_DIR = "evaluation"
REPORT_ARTIFACT = f"{REPORT_ARTIFACT_DIR}/report.json"
EVAL_METRIC_PREFIX = "eval/"
# The candidate run's params (immutable) that say where the version came from; `registry status` shows them.
LINEAGE_KEYS = (
    "stage1_run_id",
    "stage2_run_id",
    "eval_run_id",
    "data_hash",
    "code_identity",
    "config_hash",
    "image",
    "kfp_run_id",
    "report_sha256",
)


class EvidenceError(UserError):
    """The version's evidence is missing or was altered; str() is one line (it becomes a refusal reason)."""


class Evidence(BaseModel):
    metrics: dict[str, float]
    report_sha256: str
    lineage: dict[str, str]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record_evidence(client, run_id: str, report: Path, lineage: dict[str, str]) -> str:
    """Attach an evaluation report and the lineage params to the candidate run `run_id`; returns the report's
    sha256. Call it before the run's model is registered."""
    from mlflow.entities import Param

    if Path(report).name != "report.json":
        raise ValueError(f"{report}: the evaluation report must be named report.json")
    digest = sha256_of(report)
    client.log_artifact(run_id, str(report), REPORT_ARTIFACT_DIR)
    params = {key: str(value) for key, value in lineage.items() if value not in (None, "")}
    params["report_sha256"] = digest
    client.log_batch(run_id, params=[Param(key, value) for key, value in sorted(params.items())])
    return digest


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def read_evidence(client, version, gate_metric: str) -> Evidence:
    """The metrics `version` was measured with, checked as the module docstring says; EvidenceError if not."""
    from mlflow.exceptions import MlflowException

    label = f"v{version.version}"
    if not version.run_id:
        raise EvidenceError(f"{label} has no candidate run: no evidence")
    params = client.get_run(version.run_id).data.params
    expected = params.get("report_sha256")
    if not expected:
        raise EvidenceError(f"{label}: its run records no report_sha256: no evidence")
    with tempfile.TemporaryDirectory(prefix="abstractinator-evidence-") as tmp:
        try:
            local = Path(client.download_artifacts(version.run_id, REPORT_ARTIFACT, tmp))
        except MlflowException as error:
            if "not found" in str(error).lower() or "does not exist" in str(error).lower():
                raise EvidenceError(f"{label}: evaluation report missing from its run") from None
            raise
        except OSError as error:
            raise EvidenceError(f"{label}: evaluation report unreadable ({error.strerror})") from None
        if sha256_of(local) != expected:
            raise EvidenceError(f"{label}: evaluation report altered (sha256 differs from the one recorded)")
        metrics = {key: float(value) for key, value in json.loads(local.read_text())["metrics"].items()}
    eval_run_id = params.get("eval_run_id")
    if eval_run_id:
        logged = client.get_run(eval_run_id).data.metrics
        if EVAL_METRIC_PREFIX + gate_metric not in logged:
            raise EvidenceError(f"{label}: evaluation run {eval_run_id} logged no {EVAL_METRIC_PREFIX}{gate_metric}")
        differ = sorted(
            key
            for key, value in metrics.items()
            if EVAL_METRIC_PREFIX + key in logged and not _same(logged[EVAL_METRIC_PREFIX + key], value)
        )
        if differ:
            raise EvidenceError(
                f"{label}: evaluation run {eval_run_id} and its report disagree on {', '.join(differ[:5])}"
            )
    lineage = {key: params[key] for key in LINEAGE_KEYS if params.get(key)}
    return Evidence(metrics=metrics, report_sha256=expected, lineage=lineage)
