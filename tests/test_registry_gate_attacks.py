"""Attacks on the registry gate by someone holding the pipeline's MLflow credential (public MlflowClient API) but
not the evaluation's signing key (issue 21's review): each must change no decision and run no code."""

from __future__ import annotations

import json
import py_compile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from components.registry import promote as registry
from components.registry.attestation import PAIRED_BITS_FILE, Attestation, write_signed
from components.registry.decision_log import BANNED_WEIGHTS_PARAM, _experiment_id
from components.registry.gate_evidence import EvidenceError, record_evidence, sha256_of
from components.registry.gate_rules import GateRules
from components.registry.pyfunc_model import AbstractinatorPyfunc, log_pyfunc_model, model_code_files
from components.registry.verified_loading import load_verified_model
from components.training.stages import load_pipeline_config
from model import build_model
from pipelines import step_promote
from tests import registry_helpers
from tests.registry_helpers import evaluation_key, experiment_id  # noqa: F401

RULES = GateRules(min_improvement=0.05, max_bits_per_byte=7.0, min_live_code_share=0.1)


def _checkpoint(path: Path, noise: float = 0.0) -> Path:
    """A slim checkpoint of the CI model (build_model seeds itself), its float weights moved by `noise` x N(0, 1)."""
    config = load_pipeline_config("ci")
    state = build_model(config).state_dict()
    generator = torch.Generator().manual_seed(1)
    for value in state.values():
        if value.is_floating_point():
            value.add_(noise * torch.randn(value.shape, generator=generator))
    torch.save({"model_state": state, "exp_config": config.as_dict()}, path)
    return path


def _registered_pyfunc(tmp_path: Path, name: str):
    """A registered pyfunc model of `model.pt` , attested as an evaluation would."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = registry.client_for(uri)
    experiment = experiment_id(client, artifact_root=tmp_path / "artifacts")
    weights = _checkpoint(tmp_path / "model.pt")
    with mlflow.start_run(experiment_id=experiment) as run:
        info = log_pyfunc_model(weights, slim=False)
        report = tmp_path / "report.json"
        report.write_text("{}")
        attestation = Attestation(
            model_name=name,
            challenger_weights_sha256=sha256_of(weights),
            data_hash="d",
            golden_sha256="",
            code_identity="c",
            config_hash="h",
            metrics={"test_bits_per_byte": 3.0},
            model_files=model_code_files(),
            report_sha256=sha256_of(report),
            evaluated_at="2026-01-01T00:00:00Z",
        )
        record_evidence(client, run.info.run_id, [report, *write_signed(attestation, tmp_path)], {})
    return client, registry.register_version(client, name, info.model_uri, {}, run_id=run.info.run_id)


def _rewrite_mlmodel(client, name: str, version: str, edit: Path, change) -> None:
    mlmodel_file = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}/MLmodel")
    mlmodel = yaml.safe_load(Path(mlmodel_file).read_text())
    change(mlmodel)
    (edit / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    client.log_model_artifacts(client.get_model_version(name, version).source.removeprefix("models:/"), str(edit))


def test_a_rewritten_mlmodel_runs_no_unattested_code(tmp_path) -> None:
    name = "attack-mlmodel-code"
    client, version = _registered_pyfunc(tmp_path, name)
    marker, edit = tmp_path / "attacker-code-ran", tmp_path / "edit"
    edit.mkdir()
    source = tmp_path / "evil.py"
    source.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import mlflow.models, mlflow.pyfunc\n"
        "class M(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None): return ['owned']\n"
        "mlflow.models.set_model(M())\n"
    )
    py_compile.compile(str(source), cfile=str(edit / "evil.pyc"))  # sourceless bytecode: not a *.py file

    def point_at_evil(mlmodel):
        mlmodel["flavors"]["python_function"]["model_code_path"] = "evil.pyc"

    _rewrite_mlmodel(client, name, version, edit, point_at_evil)
    prediction = load_verified_model(client, name, version).predict(["hello"])
    assert not marker.exists() and prediction[0]["bytes"] == 5


def test_a_rewritten_mlmodel_loads_no_unattested_weights(tmp_path) -> None:
    name = "attack-mlmodel-weights"
    client, version = _registered_pyfunc(tmp_path, name)
    edit = tmp_path / "edit"
    (edit / "artifacts").mkdir(parents=True)
    _checkpoint(edit / "artifacts" / "other.pt", noise=0.5)

    def point_at_other(mlmodel):
        mlmodel["flavors"]["python_function"]["artifacts"]["checkpoint"]["path"] = "artifacts/other.pt"

    _rewrite_mlmodel(client, name, version, edit, point_at_other)
    attested = AbstractinatorPyfunc()
    attested.load_checkpoint(tmp_path / "model.pt")
    expected = attested.predict(None, ["hello world"])[0]["bits_per_byte"]
    assert load_verified_model(client, name, version).predict(["hello world"])[0]["bits_per_byte"] == expected


def test_loading_a_verified_model_leaves_no_copy_of_its_weights_behind(tmp_path, monkeypatch) -> None:
    """The weights are downloaded into a temporary folder and loaded into memory: the folder goes afterwards, also
    when the check refuses them (each champion scored in the gate left a model's weights in /tmp before)."""
    import tempfile

    name = "verified-no-leftovers"
    client, version = _registered_pyfunc(tmp_path, name)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # what TMPDIR sets: every temporary folder lands here
    assert load_verified_model(client, name, version).predict(["hello"])[0]["bytes"] == 5
    assert list(scratch.iterdir()) == []
    location = client.get_model_version_download_uri(name, version).removeprefix("file://")
    _checkpoint(Path(location) / "artifacts" / "model.pt", noise=0.5)  # other weights in the artifact store
    with pytest.raises(EvidenceError, match="not the weights its evaluation scored"):
        load_verified_model(client, name, version)
    assert list(scratch.iterdir()) == []


@pytest.fixture
def gate_client(tmp_path):
    return registry.client_for(f"sqlite:///{tmp_path}/mlflow.db"), tmp_path / "artifacts"


def _rolled_back(client, root: Path, name: str) -> tuple[str, str]:
    """v1 champion, v2 promoted over it, then rolled back by a person: v2 must not serve again without --force."""
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    assert registry.promote(client, name, first, RULES).action == "promoted"
    bad = registry_helpers.add_version(client, name, 2.5, artifact_root=root)
    assert registry.promote(client, name, bad, RULES).action == "promoted"
    registry.rollback(client, name)
    return first, bad


def test_the_rollback_ban_survives_its_tag_and_its_audit_run_being_deleted(gate_client) -> None:
    client, root = gate_client
    first, bad = _rolled_back(client, root, "rb-tag")
    client.delete_model_version_tag("rb-tag", bad, "gate.rolled_back")
    (rollback,) = [record for record in registry.history(client, "rb-tag") if record["action"] == "rolled_back"]
    client.delete_run(rollback["run_id"])
    outcome = registry.promote(client, "rb-tag", bad, RULES)
    assert outcome.action == "refused" and "rolled back earlier" in outcome.reasons[0], outcome
    assert str(registry.alias_version(client, "rb-tag", registry.CHAMPION).version) == first


def test_the_rollback_ban_follows_the_weights_into_a_new_version(gate_client) -> None:
    client, root = gate_client
    first, bad = _rolled_back(client, root, "rb-copy")
    original = client.get_model_version("rb-copy", bad)
    copy = str(client.create_model_version("rb-copy", source=original.source, run_id=original.run_id).version)
    outcome = registry.promote(client, "rb-copy", copy, RULES)
    assert outcome.action == "refused" and "rolled back earlier" in outcome.reasons[0], outcome


def test_a_forged_pending_decision_is_not_carried_out(gate_client) -> None:
    client, root = gate_client
    name = "forged-pending"
    good = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, good, RULES)
    worse = registry_helpers.add_version(client, name, 6.5, artifact_root=root)
    assert registry.promote(client, name, worse, RULES).action == "refused"
    forged = {worse: {"gate.decision": "promoted", "gate.reasons": "beats champion", "gate.promoted_over": good}}
    client.create_run(  # the attacker: one create_run with tags
        _experiment_id(client),
        tags={
            "model": name, "version": worse, "action": "promoted", "reasons": "beats champion v1",
            "champion_before": good, "champion_after": worse, "version_tags": json.dumps(forged), "state": "pending",
        },
    )  # fmt: skip
    nothing = registry_helpers.add_version(client, name, 6.9, artifact_root=root)
    assert registry.promote(client, name, nothing, RULES).action == "refused"  # a gate run recovers first
    assert str(registry.alias_version(client, name, registry.CHAMPION).version) == good
    assert [r["state"] for r in registry.history(client, name) if r["version"] == worse] == ["applied", "unverified"]
    assert client.get_model_version(name, worse).tags["gate.decision"] == "refused"


def test_a_stricter_confidence_is_recomputed_from_the_signed_bits(gate_client) -> None:
    client, root = gate_client
    name = "confidence"
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, first, RULES)
    rng = np.random.default_rng(0)
    sizes = [1000] * 40
    champion_bits = list(8000 + rng.normal(0, 50, 40))
    better = [bits - 200 + rng.normal(0, 50) for bits in champion_bits]  # 0.2 bits per byte fewer
    version = registry_helpers.add_version(
        client, name, 2.8, artifact_root=root, block_bits=(better, champion_bits, sizes)
    )
    strict = RULES.model_copy(update={"confidence": 0.99})
    outcome = registry.promote(client, name, version, strict)
    assert outcome.action == "promoted" and "99% interval" in outcome.reasons[0], outcome


def test_a_forged_paired_bits_file_is_refused_at_another_confidence(gate_client) -> None:
    client, root = gate_client
    name = "forged-bits"
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, first, RULES)
    equal = [8000.0 + i for i in range(40)]
    version = registry_helpers.add_version(
        client, name, 3.0, artifact_root=root, block_bits=(equal, equal, [1000] * 40)
    )
    run_id = client.get_model_version(name, version).run_id
    forged = root.parent / PAIRED_BITS_FILE
    better = [[1000, bits - 500] for bits in equal]
    forged.write_text(json.dumps({"blocks": {"test": {"bytes_bits": better, "champion": [[1000, b] for b in equal]}}}))
    client.log_artifact(run_id, str(forged), "evaluation")  # overwrites the signed file's copy
    outcome = registry.promote(client, name, version, RULES.model_copy(update={"confidence": 0.99}))
    assert outcome.action == "refused" and "not the one its evaluation signed" in "; ".join(outcome.reasons), outcome


def test_deleting_the_alias_does_not_make_a_loser_the_first_champion(gate_client) -> None:
    client, root = gate_client
    name = "no-champion"
    good = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, good, RULES)
    worse = registry_helpers.add_version(client, name, 6.5, artifact_root=root)  # scored beside v1: worse
    assert registry.promote(client, name, worse, RULES).action == "refused"
    client.delete_registered_model_alias(name, registry.CHAMPION)
    outcome = registry.promote(client, name, worse, RULES)
    assert outcome.action == "refused" and "there is no champion now" in outcome.reasons[-1], outcome


def test_a_re_created_model_does_not_pass_evidence_scored_against_another_v1(gate_client) -> None:
    client, root = gate_client
    name = "re-created"
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, first, RULES)
    better = client.get_model_version(name, registry_helpers.add_version(client, name, 2.0, artifact_root=root))
    client.delete_registered_model(name)  # numbering restarts: a new v1 with other weights
    new_first = registry_helpers.add_version(client, name, 4.0, artifact_root=root)
    assert registry.promote(client, name, new_first, RULES).action == "promoted"
    copy = str(client.create_model_version(name, source=better.source, run_id=better.run_id).version)
    outcome = registry.promote(client, name, copy, RULES)
    assert outcome.action == "refused" and "other weights than champion v1's" in outcome.reasons[-1], outcome


def test_the_promote_step_finds_registered_weights_by_signed_evidence_not_tags(gate_client) -> None:
    client, root = gate_client
    name = "registered-weights"
    genuine = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    weights = client.get_run(client.get_model_version(name, genuine).run_id).data.params["challenger_weights_sha256"]
    found = step_promote._registered_result(client, name, weights, "candidates", client.tracking_uri)
    assert found is not None and found.version == genuine and found.action == "already_registered"
    # the attacker: a hand-made run claiming the next candidate's weights, registered first, and tags
    upcoming = "f" * 64
    forged = client.create_run(experiment_id(client), run_name="candidate").info.run_id
    client.log_param(forged, "challenger_weights_sha256", upcoming)
    fake = registry.register_version(
        client, name, f"runs:/{forged}/model", {"checkpoint_hash": upcoming}, run_id=forged
    )
    client.set_model_version_tag(name, genuine, "checkpoint_hash", upcoming)
    assert step_promote._registered_result(client, name, upcoming, "candidates", client.tracking_uri) is None, fake


def test_a_forged_audit_run_cannot_choose_the_rollback_target(gate_client) -> None:
    """Anyone with the credential can create a run in the promotions experiment, dated in the future, whose params
    say the champion was promoted over another version (here a hand-registered one with no evidence). Rollback
    reads its target from the champion's signed attestation instead, and checks the target's weights."""
    client, root = gate_client
    name = "forged-audit"
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, first, RULES)
    second = registry_helpers.add_version(client, name, 2.5, artifact_root=root)
    assert registry.promote(client, name, second, RULES).action == "promoted"
    planted = client.create_model_version(name, source=client.get_model_version(name, first).source)
    forged = client.create_run(_experiment_id(client), start_time=4_102_444_800_000)  # the year 2100
    params = {"model": name, "action": "promoted", "version": second, "champion_after": second}
    for key, value in {**params, "champion_before": str(planted.version)}.items():
        client.log_param(forged.info.run_id, key, value)
    assert registry.rollback(client, name).champion_after == first
    assert str(registry.alias_version(client, name, registry.CHAMPION).version) == first


def test_rollback_refuses_a_target_whose_weights_a_rollback_banned(gate_client) -> None:
    client, root = gate_client
    name = "banned-target"
    first = registry_helpers.add_version(client, name, 3.0, artifact_root=root)
    registry.promote(client, name, first, RULES)
    second = registry_helpers.add_version(client, name, 2.5, artifact_root=root)
    registry.promote(client, name, second, RULES)
    banned = registry.attestation_of(client, client.get_model_version(name, first)).challenger_weights_sha256
    ban = client.create_run(_experiment_id(client)).info.run_id  # a ban fails closed, whoever writes it
    for key, value in {"model": name, "action": "rolled_back", BANNED_WEIGHTS_PARAM: banned}.items():
        client.log_param(ban, key, value)
    with pytest.raises(registry.RegistryError, match="whose weights a rollback banned"):
        registry.rollback(client, name)
