"""The paired gate through the pipeline's own steps (pipelines/steps.py), in process on a local store: the evaluate
step scores the new model and the registry's champion on the same bytes and signs the attestation, the promote
step registers the attested weights and the gate decides from the paired interval; the skip-retrain check reads
the champion's signed attestation, not its tags."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.registry import promote as registry
from components.registry.gate_evidence import attestation_of, sha256_of
from components.registry.gate_rules import GateRules
from pipelines import steps
from tests.conftest import write_corpus
from tests.model_helpers import torch_single_thread  # noqa: F401
from tests.registry_helpers import evaluation_key  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
MODEL = "paired-gate"
RULES = GateRules(min_improvement=0.01, max_bits_per_byte=None)


def run_pipeline(root: Path, source: Path, stage_steps: int, tag: str):
    """prepare -> stage1 -> stage2 -> evaluate -> promote, as a pipeline run does (the skip check off)."""
    spec = steps.RunSpec(config="ci", stage1_steps=stage_steps, stage2_steps=stage_steps, artifact_root=str(root / "a"))
    prepared = steps.prepare_step(spec, str(source), MODEL, False, False, root / f"prepared-{tag}")
    data = (prepared.data_uri, prepared.data_hash)
    stage1 = steps.train_stage_step(spec, "stage1", *data)
    stage2 = steps.train_stage_step(spec, "stage2", *data, stage1.base_components_uri)
    evaluation = steps.evaluate_step(
        spec, stage2.checkpoint_uri, *data, max_eval_bytes=6000, canterbury=False, model_name=MODEL
    )
    result = steps.promote_step(
        spec,
        MODEL,
        stage2.checkpoint_uri,
        stage2.checkpoint_hash,
        evaluation.metrics,
        prepared.data_hash,
        evaluation.report_uri,
        RULES,
        report_hash=evaluation.report_hash,
        eval_run_id=evaluation.mlflow_run_id,
        data_uri=prepared.data_uri,
    )
    return spec, prepared, evaluation, result


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

    # the skip-retrain check reads the champion's signed attestation: an edited tag changes nothing
    client.set_model_version_tag(MODEL, stronger.version, "data_hash", "edited")
    unchanged, reason = steps._champion_unchanged(
        MODEL, spec, prepared.data_hash, spec.stages(prepared.data_hash).config_hash, spec.code_identity
    )
    assert unchanged, reason
    weights = Path(steps.join_uri(spec.run_root(prepared.data_hash), "eval", "model.pt"))
    assert attestation_of(client, client.get_model_version(MODEL, stronger.version)).challenger_weights_sha256 == (
        sha256_of(weights)
    )
