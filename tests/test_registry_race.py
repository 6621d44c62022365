"""Gates racing against a real MLflow server on loopback must leave a consistent champion: every decision is
made under the registry lock against the champion of the moment, and a dead gate's lock is broken exactly once
(components/registry/registry_lock.py, components/registry/promote.py)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from components.registry import promote as registry
from components.registry.gate_rules import GateRules
from tests.registry_helpers import add_version, assert_consistent, evaluation_key, gate_env, promote_argv  # noqa: F401
from tests.servers import MlflowServer

pytestmark = pytest.mark.integration
RULES = GateRules(min_improvement=0.01, max_bits_per_byte=8.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("race-mlflow")
    server = MlflowServer(f"sqlite:///{root}/mlflow.db", str(root / "artifacts"), log_dir=root / "log").start()
    yield server
    server.stop()


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

    order = (good, better) if round_number % 2 else (better, good)
    threads = [threading.Thread(target=gate, args=(v,)) for v in order]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    # both were scored beside `first`: whichever gate went first promotes its version, and the other is refused
    # (it was never compared with the new champion on the same bytes), so exactly one decision moved the champion
    winner = str(registry.alias_version(client, name, registry.CHAMPION).version)
    loser = good if winner == better else better
    assert outcomes[winner].action == "promoted" and outcomes[loser].action == "refused", outcomes
    assert f"evaluated against champion v{first} but the champion is v{winner}" in outcomes[loser].reasons[0]
    assert assert_consistent(client, name)[-1]["champion_after"] == winner


@pytest.mark.slow
def test_eight_processes_promoting_at_once_from_a_stale_lock(server, tmp_path: Path) -> None:
    client = registry.client_for(server.uri)
    name = "race-eight"
    bits = [3.0, 2.9, 2.7, 2.8, 2.6, 2.95, 2.65, 2.2]
    versions = [add_version(client, name, bits[0])]
    registry.promote(client, name, versions[0], RULES)
    versions += [add_version(client, name, b) for b in bits[1:]]  # each scored beside versions[0]
    dead = add_version(client, name, 1.0, share=0.0)  # the best number, but a dead codebook: must not pass
    rules = ["--min-improvement", "0.01", "--min-live-code-share", "0.1"]
    # a gate that died holding the lock: no heartbeat will ever come
    client.create_registered_model(f"{name}.gate-lock", tags={"token": "dead-gate", "holder": "gone:1"})
    env = gate_env(server.uri)
    processes = [
        subprocess.Popen(
            promote_argv(name, version, *rules),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in [*versions[1:], dead]
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in processes]
    assert all(code in (0, 3) for code, _, _ in results), [r for r in results if r[0] not in (0, 3)]
    # each was scored beside versions[0]: the first gate to decide promotes its version, every later one is refused
    # (its evidence compares it with a champion that is no longer serving), so exactly one moved the champion
    assert sum(code == 0 for code, _, _ in results) == 1, results
    champion = str(registry.alias_version(client, name, registry.CHAMPION).version)
    assert champion in versions[1:]
    records = assert_consistent(client, name)
    assert sorted(r["version"] for r in records) == sorted([*versions, dead])  # every decision audited
    assert [r["action"] for r in records if r["version"] == dead] == ["refused"]
    assert (
        sum(
            r.startswith(f"{name}.gate-lock.ended-dead-gate")
            for r in (m.name for m in client.search_registered_models(f"name LIKE '{name}.gate-lock.ended-%'"))
        )
        == 1
    )
