"""Two gates racing against a real MLflow server on loopback must leave a consistent champion: every
decision is made against the champion of the moment (the lock + compare-and-set in components/promote.py)."""

from __future__ import annotations

import threading

import pytest

from components import promote as registry
from components.gate_rules import GateRules
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration
RULES = GateRules(min_improvement=0.01, max_bits_per_byte=8.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("race-mlflow")
    server = MlflowServer(f"sqlite:///{root}/mlflow.db", str(root / "artifacts"), log_dir=root / "log").start()
    yield server
    server.stop()


def add_version(client, name: str, bpb: float) -> str:
    experiment = client.get_experiment_by_name("race") or None
    experiment_id = experiment.experiment_id if experiment else client.create_experiment("race")
    run = client.create_run(experiment_id)
    tags = registry.version_tags({"test_bits_per_byte": bpb}, {"data_hash": "d", "git_commit": "c", "config_hash": "h"})
    return registry.register_version(client, name, f"runs:/{run.info.run_id}/model", tags)


@pytest.mark.parametrize("round_number", range(3))
def test_two_gates_racing_leave_the_best_version_as_champion(server, round_number: int) -> None:
    client = registry.client_for(server.uri)
    name = f"race-{round_number}"
    first = add_version(client, name, 3.0)
    registry.promote(client, name, first, RULES)
    good, better = add_version(client, name, 2.5), add_version(client, name, 2.0)

    barrier, outcomes, errors = threading.Barrier(2), {}, []

    def gate(version: str) -> None:
        try:
            own = registry.client_for(server.uri)  # one client per gate, as two pipeline pods would have
            barrier.wait()
            outcomes[version] = registry.promote(own, name, version, RULES)
        except Exception as error:  # surfaced below with the test's assertion
            errors.append(error)

    threads = [threading.Thread(target=gate, args=(v,)) for v in (good, better)] if round_number % 2 else \
        [threading.Thread(target=gate, args=(v,)) for v in (better, good)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    # whichever gate went first, `better` ends as champion and `good` never displaced it
    assert str(registry.alias_version(client, name, registry.CHAMPION).version) == better
    assert outcomes[better].action == "promoted"
    records = registry.history(client, name)
    # the decisions form one chain: each one was made against the champion left by the one before
    champion = None
    for record in records:
        assert record["champion_before"] == str(champion)
        champion = record["champion_after"] if record["champion_after"] != "None" else None
    assert champion == better
    assert client.get_registered_model(name).name == name
    with pytest.raises(Exception, match="(?i)not found|does not exist"):
        client.get_registered_model(f"{name}.gate-lock")  # released
