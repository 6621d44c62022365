"""The paired gate through the pipeline's own steps (pipelines/step_*.py), in process on a local store: the evaluate
step scores the new model and the registry's champion on the same bytes and signs the attestation, the promote
step registers the attested weights and the gate decides from the paired interval; the skip-retrain check reads
the champion's signed attestation, not its tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from components.registry import promote as registry
from components.registry.gate_evidence import EvidenceError, attestation_of, sha256_of
from components.registry.gate_rules import GateRules
from components.registry.verified_loading import load_verified_model
from pipelines import run_spec, step_evaluate, step_prepare, step_promote, step_train
from pipelines.registry_view import eval_table
from tests.conftest import write_corpus
from tests.registry_helpers import evaluation_key  # noqa: F401

pytestmark = [pytest.mark.torch_single_thread, pytest.mark.slow, pytest.mark.timeout(1800)]
MODEL = "paired-gate"
RULES = GateRules(min_improvement=0.01, max_bits_per_byte=None)


def run_pipeline(root: Path, source: Path, stage_steps: int, tag: str):
    """prepare -> stage1 -> stage2 -> evaluate -> promote, as a pipeline run does (the skip check off)."""
    spec = run_spec.RunSpec(
        config="ci", stage1_steps=stage_steps, stage2_steps=stage_steps, artifact_root=str(root / "a")
    )
    prepared = step_prepare.prepare_step(spec, str(source), MODEL, False, False, root / f"prepared-{tag}").result
    stage1 = step_train.train_stage_step(spec, "stage1", prepared)
    stage2 = step_train.train_stage_step(spec, "stage2", prepared, stage1.base_components_uri)
    evaluation = step_evaluate.evaluate_step(
        spec, prepared, stage2, max_eval_bytes=6000, canterbury=False, model_name=MODEL
    )
    result = step_promote.promote_step(spec, MODEL, prepared, stage1, stage2, evaluation, RULES)
    return spec, prepared, evaluation, result


def stronger_eval_run(client, version) -> str:
    return client.get_run(version.run_id).data.params["eval_run_id"]


def test_weaker_refused_and_stronger_promoted_on_the_same_bytes_of_a_changed_source(tmp_path, settings_env) -> None:
    settings_env(ABSTRACTINATOR_DATA_HOME=str(tmp_path / "home"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    source = tmp_path / "text"
    write_corpus(source, 60, seed=4)
    _, _, _, first = run_pipeline(tmp_path, source, 8, "first")
    assert first.action == "promoted", first.reasons
    for doc in sorted(source.rglob("*.txt"))[::4]:  # the changed source: a quarter of the documents dropped
        doc.unlink()
    shutil.rmtree(tmp_path / "a" / "runs")  # no resumed checkpoints: each run trains from scratch

    _, _, evaluation, weaker = run_pipeline(tmp_path, source, 2, "weaker")
    assert weaker.action == "refused", weaker.reasons
    client = registry.client_for(f"sqlite:///{tmp_path}/mlflow.db")
    attested = attestation_of(client, client.get_model_version(MODEL, weaker.version))
    paired = attested.paired
    assert paired is not None and paired.champion_version == first.version and paired.low > 0, paired
    assert attested.champion.version == first.version
    champion_attestation = attestation_of(client, client.get_model_version(MODEL, first.version))
    assert attested.champion.weights_sha256 == champion_attestation.challenger_weights_sha256
    assert attested.data_hash != champion_attestation.data_hash  # both scored on the new split, not each its own
    assert "worse than the champion" in weaker.reasons[0]

    shutil.rmtree(tmp_path / "a" / "runs")
    spec, prepared, _, stronger = run_pipeline(tmp_path, source, 30, "stronger")
    assert stronger.action == "promoted", stronger.reasons
    assert stronger.reasons[0].startswith(f"beats champion v{first.version}")
    report_md = Path(step_prepare.join_uri(spec.run_root(prepared.data_hash), "eval", "report.md")).read_text()
    assert (
        "## Champion versus challenger on the same bytes" in report_md and f"| champion v{first.version} |" in report_md
    )
    version = client.get_model_version(MODEL, stronger.version)
    shown = eval_table(version, attestation_of(client, version))
    assert "champion versus challenger on the same bytes (test split: " in shown and "95% interval [-" in shown
    eval_run = client.get_run(stronger_eval_run(client, version))
    assert eval_run.data.metrics["paired/high"] < -0.01

    # the skip-retrain check reads the champion's signed attestation: an edited tag changes nothing
    client.set_model_version_tag(MODEL, stronger.version, "data_hash", "edited")
    unchanged, reason = step_prepare._champion_unchanged(
        MODEL, spec, prepared.data_hash, spec.stages(prepared.data_hash).config_hash, spec.code_identity
    )
    assert unchanged, reason
    weights = Path(step_prepare.join_uri(spec.run_root(prepared.data_hash), "eval", "model.pt"))
    assert attestation_of(client, client.get_model_version(MODEL, stronger.version)).challenger_weights_sha256 == (
        sha256_of(weights)
    )

    # loading checks the registered files against the attestation before MLflow runs the model's code
    assert load_verified_model(client, MODEL, stronger.version).predict(["hello"])[0]["bytes"] == 5
    marker = tmp_path / "code-ran"
    edit = tmp_path / "edit"
    for path in ("pyfunc_model.py", "code/model/__init__.py"):  # what anyone with the MLflow credential can do
        original = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{stronger.version}/{path}"))
        (edit / path).parent.mkdir(parents=True, exist_ok=True)
        (edit / path).write_text(original.read_text() + f"\nopen({str(marker)!r}, 'w').close()\n")
    model_id = client.get_model_version(MODEL, stronger.version).source.removeprefix("models:/")
    client.log_model_artifacts(model_id, str(edit))
    edited = "code is not the code its evaluation ran: code/model/__init__.py, pyfunc_model.py$"
    with pytest.raises(EvidenceError, match=edited):
        load_verified_model(client, MODEL, stronger.version)
    assert not marker.exists()
    unchanged, reason = step_prepare._champion_unchanged(
        MODEL, spec, prepared.data_hash, spec.stages(prepared.data_hash).config_hash, spec.code_identity
    )
    assert not unchanged and "registered code is not the code its evaluation ran" in reason
