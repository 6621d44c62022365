"""Model versions with real evidence (an evaluation run, a report artifact, the candidate run's params), made
without training: what the registry tests promote; the gate as a separate process; the registry's consistency."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.entities import Metric

from components.registry import promote as registry
from components.registry.gate_evidence import record_evidence


def experiment_id(client, name: str = "candidates", artifact_root: Path | None = None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:  # a sqlite store would otherwise put artifacts in ./mlruns of the working directory
        return client.create_experiment(name, artifact_location=artifact_root.as_uri() if artifact_root else None)
    except MlflowException:  # another process made it first
        return client.get_experiment_by_name(name).experiment_id


def add_version(client, name: str, bpb: float, share: float = 0.5, artifact_root: Path | None = None) -> str:
    """A version whose evaluation measured `bpb` test bits per byte and live code share `share`."""
    metrics = {"test_bits_per_byte": bpb, "live_code_share_L0": share}
    experiment = experiment_id(client, artifact_root=artifact_root)
    evaluation = client.create_run(experiment, run_name="evaluate").info.run_id
    client.log_batch(evaluation, metrics=[Metric(f"eval/{k}", v, 0, 0) for k, v in metrics.items()])
    client.set_terminated(evaluation)
    candidate = client.create_run(experiment, run_name="candidate").info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        report.write_text(json.dumps({"metrics": metrics, "checkpoint": "test"}))
        record_evidence(
            client,
            candidate,
            report,
            {"eval_run_id": evaluation, "data_hash": "d", "code_identity": "c", "stage2_run_id": "s2"},
        )
    client.set_terminated(candidate)
    tags = registry.version_tags(metrics, {"data_hash": "d", "git_commit": "c", "config_hash": "h"})
    return registry.register_version(client, name, f"runs:/{candidate}/model", tags, run_id=candidate)


REPO = Path(__file__).resolve().parents[1]


def promote_argv(name: str, version: str, *flags: str) -> list[str]:
    """`abstractinator registry promote` of one version, in its own process, as a pipeline's gate runs it."""
    command = ["registry", "promote", "--model-name", name, "--version", version, *flags]
    return [sys.executable, "-m", "abstractinator", *command]


def gate_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment of a gate process: this checkout's code and the given tracking server."""
    return {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": tracking_uri, **extra}


def assert_consistent(client, name: str) -> list[dict]:
    """One chain of applied decisions whose last champion is the alias, and tags that agree with it."""
    records = registry.history(client, name)
    champion, latest = None, {}
    for record in records:
        assert record["state"] == "applied", record
        assert record["champion_before"] == str(champion), records
        champion = record["champion_after"] if record["champion_after"] != "None" else None
        latest[record["version"]] = record
    for version, record in latest.items():  # each version's tags are those of its latest decision
        tags = client.get_model_version(name, version).tags
        assert tags.get("gate.audit_run") == record["run_id"] and tags["gate.decision"] == record["action"], tags
    alias = registry.alias_version(client, name, registry.CHAMPION)
    assert (str(alias.version) if alias else None) == champion
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_registered_model(f"{name}.gate-lock")  # released
    return records
