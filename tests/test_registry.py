"""The MLflow registry gate against a real MLflow store (sqlite here; a server in test_registry_race.py and
test_registry_faults.py): register, promote or refuse from checked evidence, record, roll back, force, history,
the lease lock, completing a decision a crash left pending, and the CLI over them with its exit codes."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from abstractinator.cli import main
from components.infrastructure import signing
from components.registry import promote as registry
from components.registry.gate_rules import GateRules
from components.registry.registry_lock import LockError, RegistryLock
from tests import registry_helpers
from tests.registry_helpers import evaluation_key  # noqa: F401
from tests.servers import free_port

RULES = GateRules(min_improvement=0.05, max_bits_per_byte=7.0, min_live_code_share=0.1)
MODEL = "gate-test"


ARTIFACTS: Path | None = None


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One store for the module (creating its tables takes seconds); each test has its own model name."""
    global ARTIFACTS
    root = tmp_path_factory.mktemp("registry")
    ARTIFACTS = root / "artifacts"
    return registry.client_for(f"sqlite:///{root}/mlflow.db")


@pytest.fixture(autouse=True)
def model_name(request) -> None:
    global MODEL
    MODEL = request.node.name.removeprefix("test_")[:60]


def add_version(client: MlflowClient, bpb: float, share: float = 0.5, name: str | None = None) -> str:
    """A model version whose evaluation measured these metrics (the gate never reads the model itself)."""
    return registry_helpers.add_version(client, name or MODEL, bpb, share, artifact_root=ARTIFACTS)


def champion(client: MlflowClient) -> str | None:
    version = registry.alias_version(client, MODEL, registry.CHAMPION)
    return str(version.version) if version else None


def test_first_version_becomes_champion_and_the_decision_is_recorded(client) -> None:
    version = add_version(client, 3.0)
    assert str(registry.alias_version(client, MODEL, registry.CHALLENGER).version) == version
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "promoted" and outcome.champion_before is None
    assert champion(client) == version
    tags = client.get_model_version(MODEL, version).tags
    assert tags["gate.decision"] == "promoted" and "first champion" in tags["gate.reasons"]
    assert tags["metric.test_bits_per_byte"] == "3.0" and tags["data_hash"] == "d"
    (record,) = registry.history(client, MODEL)
    assert record["action"] == "promoted" and record["champion_after"] == version


def test_worse_challenger_is_refused_and_the_champion_stays(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    worse = add_version(client, 3.2)
    outcome = registry.promote(client, MODEL, worse, RULES)
    assert outcome.action == "refused" and not outcome.promoted
    assert champion(client) == first
    tags = client.get_model_version(MODEL, worse).tags
    assert tags["gate.decision"] == "refused" and "worse than the champion" in tags["gate.reasons"]
    assert "interval [+0.1950, +0.2050]" in tags["gate.reasons"]
    assert [r["action"] for r in registry.history(client, MODEL)] == ["promoted", "refused"]


def test_first_version_failing_the_absolute_checks_is_not_promoted(client) -> None:
    version = add_version(client, 7.5, share=0.01)
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "refused" and len(outcome.reasons) == 2
    assert champion(client) is None


def test_better_challenger_then_rollback(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    better = add_version(client, 2.5)
    assert registry.promote(client, MODEL, better, RULES).action == "promoted"
    assert champion(client) == better
    assert registry.promote(client, MODEL, better, RULES).action == "already_champion"
    outcome = registry.rollback(client, MODEL)
    assert outcome.action == "rolled_back" and champion(client) == first
    assert client.get_model_version(MODEL, better).tags["gate.rolled_back"] == "true"
    with pytest.raises(registry.RegistryError, match="was the first; nothing to roll back to"):
        registry.rollback(client, MODEL)
    records = registry.history(client, MODEL)
    assert [r["action"] for r in records] == ["promoted", "promoted", "rolled_back"]
    demoted = client.get_model_version(MODEL, better).tags  # keeps its own decision, marked rolled back
    assert demoted["gate.decision"] == "promoted" and demoted["gate.audit_run"] == records[1]["run_id"]
    assert client.get_model_version(MODEL, first).tags["gate.audit_run"] == records[2]["run_id"]


def test_rollback_follows_the_decision_log_not_an_edited_tag(client) -> None:
    """The rollback target comes from the audit runs' immutable params: editing the champion's
    `gate.promoted_over` tag (and the audit run's own tags) cannot send the alias elsewhere."""
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    second = add_version(client, 2.5)
    assert registry.promote(client, MODEL, second, RULES).action == "promoted"
    third = add_version(client, 2.0)
    assert registry.promote(client, MODEL, third, RULES).action == "promoted"
    client.set_model_version_tag(MODEL, third, "gate.promoted_over", first)  # skip the second, say the tags
    audit_run = client.get_model_version(MODEL, third).tags["gate.audit_run"]
    client.set_tag(audit_run, "champion_before", first)
    assert registry.rollback(client, MODEL).champion_after == second and champion(client) == second
    client.set_model_version_tag(MODEL, second, "gate.promoted_over", third)
    assert registry.rollback(client, MODEL).champion_after == first and champion(client) == first


def test_forced_promotion_is_recorded_and_can_be_rolled_back(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    worse = add_version(client, 4.0)
    outcome = registry.promote(client, MODEL, worse, RULES, force=True, forced_by="incident 42")
    assert outcome.action == "forced" and champion(client) == worse
    assert "forced: incident 42" in client.get_model_version(MODEL, worse).tags["gate.reasons"]
    registry.rollback(client, MODEL)
    assert champion(client) == first


def test_unknown_model_or_version_fails_in_one_line(client) -> None:
    with pytest.raises(registry.RegistryError, match="model 'nope' version 3: not in the registry"):
        registry.promote(client, "nope", "3", RULES)
    with pytest.raises(registry.RegistryError, match="has no champion"):
        registry.rollback(client, "nope")
    with pytest.raises(registry.RegistryError, match="not in the registry"):
        registry.status(client, "nope")


def test_registry_lock_is_exclusive(client) -> None:
    inside, overlaps = [], []

    def hold() -> None:
        with registry.registry_lock(client, MODEL, timeout_s=30):
            inside.append(1)
            if len(inside) > 1:
                overlaps.append(1)
            time.sleep(0.3)
            inside.pop()

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not overlaps
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_registered_model(f"{MODEL}.gate-lock")  # released


def test_a_dead_holders_lock_is_broken_within_the_lease_and_a_live_one_is_not(client) -> None:
    client.create_registered_model(f"{MODEL}.gate-lock", tags={"token": "dead"})  # no heartbeat will come
    started = time.monotonic()
    with RegistryLock(client, MODEL, lease_s=1.0, timeout_s=10):
        waited = time.monotonic() - started
    assert 1.0 <= waited < 4.0
    with RegistryLock(client, MODEL, lease_s=1.0):  # a live holder: its heartbeat keeps the lease
        with pytest.raises(LockError, match="held by a live gate"):
            with RegistryLock(client, MODEL, lease_s=1.0, timeout_s=3):
                pass


def test_only_one_of_two_waiters_breaks_a_stale_lock(client) -> None:
    """The break is an atomic create: both waiters judged generation 'dead' stale; one ends it, and the other
    cannot delete the lock the first one takes next."""
    client.create_registered_model(f"{MODEL}.gate-lock", tags={"token": "dead"})
    first, second = RegistryLock(client, MODEL), RegistryLock(client, MODEL)
    assert first._end("dead") is True
    assert first._create_lock() is True
    assert second._end("dead") is False
    assert client.get_registered_model(f"{MODEL}.gate-lock").tags["token"] == first.token
    first.release()


def test_a_holder_whose_lock_was_broken_does_not_move_the_champion(client) -> None:
    version = add_version(client, 3.0)
    lock = RegistryLock(client, MODEL, lease_s=1.0).acquire()
    lock._stop.set()  # a holder frozen past its lease: no heartbeat
    lock._beat.join()
    with RegistryLock(client, MODEL, lease_s=1.0, timeout_s=10):
        with pytest.raises(LockError, match="was broken while this gate held it"):
            lock.verify()
    outcome = registry.GateOutcome(
        model=MODEL, action="promoted", version=version, champion_before=None, champion_after=version, reasons=["x"]
    )
    with pytest.raises(LockError):
        registry._apply(client, lock, outcome, RULES, {})
    assert champion(client) is None


def test_an_edited_tag_or_an_appended_metric_changes_nothing(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    worse = add_version(client, 3.5)
    client.set_model_version_tag(MODEL, worse, "metric.test_bits_per_byte", "0.5")  # anyone with write access
    run_id = client.get_model_version(MODEL, worse).run_id
    client.log_batch(run_id, metrics=[Metric("eval/test_bits_per_byte", 0.5, 0, 1)])  # appended, better
    outcome = registry.promote(client, MODEL, worse, RULES)
    assert outcome.action == "refused" and "worse than the champion" in outcome.reasons[0]
    # the champion's evaluation run with an appended metric does not stall the next candidate (it stalled before)
    champion_run = client.get_model_version(MODEL, first).run_id
    client.log_batch(champion_run, metrics=[Metric("eval/test_bits_per_byte", 9.0, 0, 1)])
    better = add_version(client, 2.5)
    assert registry.promote(client, MODEL, better, RULES).action == "promoted"


def _overwrite(client, version: str, artifact_dir: str, name: str, data: bytes) -> None:
    """What anyone holding the MLflow credential can do: log a file over one of the candidate run's artifacts."""
    folder = ARTIFACTS.parent / "attacker" / version
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    client.log_artifact(client.get_model_version(MODEL, version).run_id, str(folder / name), artifact_dir)


def _attestation_bytes(client, version: str) -> bytes:
    run_id = client.get_model_version(MODEL, version).run_id
    return Path(client.download_artifacts(run_id, "evaluation/attestation.json", str(ARTIFACTS.parent))).read_bytes()


def test_a_tampered_attestation_is_refused(client) -> None:
    version = add_version(client, 7.5)  # above the ceiling: the attacker raises its numbers
    data = _attestation_bytes(client, version).replace(b'"test_bits_per_byte":7.5', b'"test_bits_per_byte":0.5')
    assert b"0.5" in data
    _overwrite(client, version, "evaluation", "attestation.json", data)
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "refused" and "signature does not verify" in outcome.reasons[0]
    assert champion(client) is None


def test_swapped_weights_are_refused(client) -> None:
    version = add_version(client, 3.0)  # genuine evidence, but the registered weights are replaced afterwards
    _overwrite(client, version, "model/artifacts", "model.pt", b"other weights")
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "refused" and "registered weights are not the weights" in outcome.reasons[0]
    assert champion(client) is None


def test_evidence_signed_with_a_key_that_is_not_the_evaluations_is_refused(client, monkeypatch) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = ARTIFACTS.parent / "other-key.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv(signing.PRIVATE_KEY_ENV, str(other))  # signed by some task's key, checked with the real one
    version = add_version(client, 3.0)
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "refused" and "signature does not verify" in outcome.reasons[0]


def test_a_version_registered_by_hand_with_made_up_evidence_is_refused(client, capsys) -> None:
    """The attack of issue 21, with the public client API only: a new run holding a hand-written report.json, a
    matching report_sha256, weights and an attestation of its own that nobody could sign."""
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    run = client.create_run(registry_helpers.experiment_id(client, artifact_root=ARTIFACTS)).info.run_id
    folder = ARTIFACTS.parent / "forged" / run
    folder.mkdir(parents=True)
    report = folder / "report.json"
    report.write_text(json.dumps({"metrics": {"test_bits_per_byte": 0.5, "live_code_share_L0": 0.5}}))
    (folder / "model.pt").write_bytes(b"forged weights")
    forged = _attestation_bytes(client, first).replace(b'"test_bits_per_byte":3.0', b'"test_bits_per_byte":0.5')
    (folder / "attestation.json").write_bytes(forged)
    (folder / "attestation.sig").write_text("AAAA\n")
    for name in ("report.json", "attestation.json", "attestation.sig"):
        client.log_artifact(run, str(folder / name), "evaluation")
    client.log_artifact(run, str(folder / "model.pt"), "model/artifacts")
    client.log_param(run, "report_sha256", hashlib.sha256(report.read_bytes()).hexdigest())
    version = client.create_model_version(MODEL, source=f"runs:/{run}/model", run_id=run).version
    uri = client.tracking_uri
    assert main(["registry", "promote", "--tracking-uri", uri, "--model-name", MODEL, "--version", str(version)]) == 3
    out = capsys.readouterr().out
    assert f"refused: v{version}" in out and "signature does not verify" in out, out
    assert champion(client) == first


def test_a_version_without_evidence_is_refused(client) -> None:
    run = client.create_run(registry_helpers.experiment_id(client, artifact_root=ARTIFACTS))
    tags = registry.version_tags({"test_bits_per_byte": 1.0}, {"data_hash": "d"})
    version = registry.register_version(client, MODEL, f"runs:/{run.info.run_id}/model", tags)
    outcome = registry.promote(client, MODEL, version, RULES)
    assert outcome.action == "refused" and "no signed evaluation attestation" in outcome.reasons[0]


def test_a_challenger_scored_against_an_earlier_champion_is_not_compared_with_the_new_one(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    good, better = add_version(client, 2.5), add_version(client, 2.0)  # both scored beside v{first}
    assert registry.promote(client, MODEL, good, RULES).action == "promoted"
    outcome = registry.promote(client, MODEL, better, RULES)
    assert outcome.action == "refused", outcome
    assert f"evaluated against champion v{first} but the champion is v{good}" in outcome.reasons[0]


def test_a_rolled_back_version_is_only_promoted_again_by_force(client) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    better = add_version(client, 2.5)
    registry.promote(client, MODEL, better, RULES)
    registry.rollback(client, MODEL)
    outcome = registry.promote(client, MODEL, better, RULES)  # e.g. the pipeline's promote step run again
    assert outcome.action == "refused" and "rolled back earlier" in outcome.reasons[0]
    assert registry.promote(client, MODEL, better, RULES, force=True, forced_by="fixed").action == "forced"


def test_a_decision_left_pending_by_a_crash_is_completed_by_the_next_gate_run(client, monkeypatch, capsys) -> None:
    first = add_version(client, 3.0)
    registry.promote(client, MODEL, first, RULES)
    better = add_version(client, 2.0)
    real_move = client.set_registered_model_alias

    def crash(name, alias, version):
        if alias == registry.CHAMPION:
            raise ConnectionError("the tracking server went away")
        return real_move(name, alias, version)

    monkeypatch.setattr(client, "set_registered_model_alias", crash)
    monkeypatch.setattr(registry, "client_for", lambda uri: client)  # the CLI's client: this one, failing
    common = ["--tracking-uri", client.tracking_uri, "--model-name", MODEL]
    assert main(["registry", "promote", *common, "--version", better]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert "ConnectionError: the tracking server went away; the decision (promoted v" in error, error
    assert error.endswith("UTC and will be completed by the next gate run"), error
    monkeypatch.setattr(client, "set_registered_model_alias", real_move)
    # the audit record and the tags were written first; the move is pending, and status says so
    assert champion(client) == first
    assert [r["state"] for r in registry.history(client, MODEL)] == ["applied", "pending"]
    assert client.get_model_version(MODEL, better).tags["gate.decision"] == "promoted"
    (pending,) = registry.status(client, MODEL)["pending"]
    assert pending["version"] == better and pending["action"] == "promoted"
    assert main(["registry", "status", *common]) == 0
    assert (
        f"promoted v{better} (audit run {pending['run_id']}), completed by the next gate run" in capsys.readouterr().out
    )

    worse = add_version(client, 2.5)
    outcome = registry.promote(client, MODEL, worse, RULES)
    assert outcome.champion_before == better and outcome.action == "refused"  # decided after completing it
    assert champion(client) == better
    records = registry.history(client, MODEL)
    assert [(r["action"], r["state"]) for r in records] == [
        ("promoted", "applied"),
        ("promoted", "applied"),
        ("refused", "applied"),
    ]


def test_cli_status_history_promote_rollback(client, capsys) -> None:
    uri = client.tracking_uri
    first = add_version(client, 3.0)
    common = ["--tracking-uri", uri, "--model-name", MODEL]
    assert main(["registry", "promote", *common, "--min-live-code-share", "0.1"]) == 0
    assert f"promoted: v{first}" in capsys.readouterr().out
    assert main(["registry", "promote", *common]) == 0  # already champion
    assert "already_champion" in capsys.readouterr().out
    add_version(client, 3.5)
    assert main(["registry", "promote", *common]) == 3  # refused: a script can gate on it
    assert "refused" in capsys.readouterr().out
    assert main(["registry", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "champion -> v1" in out and "challenger -> v2" in out and "refused" in out
    assert "lineage: stage2_run_id=s2" in out and "eval_run_id=" in out and "code_identity=c" in out
    assert main(["registry", "history", *common]) == 0
    assert capsys.readouterr().out.count("\n") == 3  # header + two decisions
    assert main(["registry", "rollback", *common]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["registry", "promote", *common, "--version", "99"]) == 2
    assert capsys.readouterr().err.strip() == f"error: model '{MODEL}' version 99: not in the registry"


def test_an_unreachable_server_is_one_line_and_exit_2(capsys, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"http://user:hunter2@127.0.0.1:{free_port()}"
    for command in (["promote", "--version", "1"], ["status"], ["rollback"], ["history"]):
        assert main(["registry", *command, "--tracking-uri", uri, "--model-name", MODEL]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: MLflow at http://user:***@127.0.0.1:") and "\n" not in err, err
        assert "hunter2" not in err and "Traceback" not in err
