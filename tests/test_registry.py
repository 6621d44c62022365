"""The MLflow registry gate against a real MLflow store (sqlite here; a server in test_registry_race.py):
register, promote or refuse, record, roll back, force, history, the lock, and the CLI over them."""

from __future__ import annotations

import threading
import time

import pytest
from mlflow import MlflowClient

from abstractinator.cli import main
from components import promote as registry
from components.gate_rules import GateRules

RULES = GateRules(min_improvement=0.05, max_bits_per_byte=7.0, min_live_code_share=0.1)
MODEL = "gate-test"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> MlflowClient:
    """One store for the module (creating its tables takes seconds); each test has its own model name."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry')}/mlflow.db"
    return registry.client_for(uri)


@pytest.fixture(autouse=True)
def model_name(request) -> None:
    global MODEL
    MODEL = request.node.name.removeprefix("test_")[:60]


def add_version(client: MlflowClient, bpb: float, share: float = 0.5, name: str | None = None) -> str:
    """A model version with these eval metrics (its source is an empty run artifact folder: the gate never
    reads the model itself)."""
    experiment = client.get_experiment_by_name("candidates") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("candidates")
    run = client.create_run(experiment_id)
    tags = registry.version_tags({"test_bits_per_byte": bpb, "live_code_share_L0": share},
                                 {"data_hash": "d", "git_commit": "c", "config_hash": "h"})
    return registry.register_version(client, name or MODEL, f"runs:/{run.info.run_id}/model", tags)


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
    assert tags["gate.decision"] == "refused" and "does not beat the champion's 3.0000" in tags["gate.reasons"]
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
    assert [r["action"] for r in registry.history(client, MODEL)] == ["promoted", "promoted", "rolled_back"]


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


def test_registry_lock_is_exclusive_and_a_stale_lock_is_broken(client) -> None:
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
    # a gate that died holding the lock: broken once it is older than stale_after_s
    client.create_registered_model(f"{MODEL}.gate-lock", tags={"token": "dead", "since": str(time.time() - 3600)})
    with registry.registry_lock(client, MODEL, timeout_s=5, stale_after_s=60):
        pass
    client.create_registered_model(f"{MODEL}.gate-lock", tags={"token": "alive", "since": str(time.time())})
    with pytest.raises(registry.RegistryError, match="held by another gate"):
        with registry.registry_lock(client, MODEL, timeout_s=0.5):
            pass


def test_cli_status_history_promote_rollback(client, capsys) -> None:
    uri = client.tracking_uri
    first = add_version(client, 3.0)
    common = ["--tracking-uri", uri, "--model-name", MODEL]
    assert main(["registry", "promote", *common, "--min-live-code-share", "0.1"]) == 0
    assert f"promoted: v{first}" in capsys.readouterr().out
    add_version(client, 3.5)
    assert main(["registry", "promote", *common]) == 0  # a refusal is a normal outcome of the gate
    assert "refused" in capsys.readouterr().out
    assert main(["registry", "status", *common]) == 0
    out = capsys.readouterr().out
    assert "champion -> v1" in out and "challenger -> v2" in out and "refused" in out
    assert main(["registry", "history", *common]) == 0
    assert capsys.readouterr().out.count("\n") == 3  # header + two decisions
    assert main(["registry", "rollback", *common]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
