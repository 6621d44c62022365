"""The promote step (pipelines/step_promote.py) on the evaluation's result as one typed value, without training:
an evaluation folder as the evaluate step leaves it (model.pt, report, signed attestation), registered and gated
on a local store; the same weights a second time are found, not registered again; a report that differs from
the hash in the typed result is refused before anything is logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.registry import promote as registry
from components.registry.attestation import PAIRED_BITS_FILE, Attestation, write_signed
from components.registry.gate_evidence import sha256_of
from components.registry.gate_rules import GateRules
from components.registry.pyfunc_model import model_code_files
from pipelines import artifacts
from pipelines.run_spec import RunSpec
from pipelines.step_promote import promote_step
from pipelines.step_results import EvaluateStepResult, PrepareStepResult, TrainStepResult
from tests.registry_helpers import evaluation_key  # noqa: F401
from tests.test_registry_gate_attacks import _checkpoint

MODEL = "promote-step"
DATA_HASH = "d" * 64


def _evaluated(spec: RunSpec, folder: Path) -> EvaluateStepResult:
    """What the evaluate step leaves for a first champion: its files under `folder` and its typed result."""
    folder.mkdir(parents=True)
    weights = _checkpoint(folder / "model.pt")
    report = folder / "report.json"
    report.write_text(json.dumps({"test_bits_per_byte": 3.0}))
    (folder / PAIRED_BITS_FILE).write_text("{}")
    metrics = {"test_bits_per_byte": 3.0, "live_code_share_L0": 0.5}
    attestation = Attestation(
        model_name=MODEL,
        challenger_weights_sha256=sha256_of(weights),
        data_hash=DATA_HASH,
        golden_sha256="g",
        code_identity=spec.code_identity,
        config_hash=spec.stages(DATA_HASH).config_hash,
        metrics=metrics,
        model_files=model_code_files(),
        report_sha256=sha256_of(report),
        evaluated_at="2026-01-01T00:00:00Z",
    )
    write_signed(attestation, folder)
    return EvaluateStepResult(
        report_uri=str(report), report_hash=artifacts.file_hash(report), metrics=metrics, mlflow_run_id="eval-run"
    )


def test_promote_step_registers_and_gates_the_typed_evaluation(tmp_path, settings_env, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a sqlite store puts the experiment's artifacts under ./mlruns
    settings_env(ABSTRACTINATOR_DATA_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    spec = RunSpec(config="ci", artifact_root=str(tmp_path / "a"), run_key="k")
    evaluation = _evaluated(spec, tmp_path / "a" / "runs" / "k" / "eval")
    checkpoint = Path(evaluation.report_uri).parent / "model.pt"
    rules = GateRules(min_improvement=0.01)

    data = PrepareStepResult(data_uri=str(tmp_path / "data"), data_hash=DATA_HASH)
    stage1 = TrainStepResult(stage="stage1", checkpoint_uri="c1.pt", checkpoint_hash="h1", mlflow_run_id="train-1")
    stage2 = TrainStepResult(
        stage="stage2", checkpoint_uri=str(checkpoint), checkpoint_hash=artifacts.file_hash(checkpoint)
    )

    def promote(result: EvaluateStepResult):
        return promote_step(spec, MODEL, data, stage1, stage2, result, rules)

    first = promote(evaluation)
    assert first.action == "promoted" and first.promoted, first.reasons
    client = registry.client_for(f"sqlite:///{tmp_path}/m.db")
    version = client.get_model_version(MODEL, first.version)
    params = client.get_run(version.run_id).data.params
    assert params["eval_run_id"] == "eval-run" and params["report_sha256"] == evaluation.report_hash
    assert params["stage1_run_id"] == "train-1" and "stage2_run_id" not in params  # lineage from the results
    assert client.get_run(version.run_id).data.metrics["test_bits_per_byte"] == 3.0
    again = promote(evaluation)  # KFP's cache handed the same weights on: judged already
    assert again.action == "already_registered" and again.version == first.version
    wrong = evaluation.model_copy(update={"report_hash": "0" * 64})
    with pytest.raises(artifacts.StorageError, match="content hash differs from the one evaluation reported"):
        promote(wrong)
