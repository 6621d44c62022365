"""A promotion survives a tracking server killed at a random point of it: the CLI fails in one line (exit 2),
and after the server restarts the next gate run completes what was pending, breaks the dead gate's lock within
seconds, and leaves the champion, the audit history and the version tags in agreement (components/registry/promote.py,
components/registry/registry_lock.py)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from components.registry import promote as registry
from components.registry.gate_rules import GateRules
from tests.registry_helpers import add_version, assert_consistent, evaluation_key, gate_env, promote_argv  # noqa: F401
from tests.servers import MlflowServer

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
TRIALS = 8  # each trial restarts the server and a gate process (~10 s); 8 kills inside promotions suffice
RULES = GateRules(min_improvement=0.01, max_bits_per_byte=8.0)


def kill(server: MlflowServer) -> None:
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.process.wait(timeout=30)


def lock_held(client, name: str) -> bool:
    try:
        client.get_registered_model(f"{name}.gate-lock")
        return True
    except Exception:
        return False


def test_killing_the_tracking_server_mid_promotion_leaves_a_consistent_registry(tmp_path: Path) -> None:
    rng = random.Random(15)
    server = MlflowServer(f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path / "artifacts"), log_dir=tmp_path).start()
    name = "faults"
    env = gate_env(server.uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    failures, kills_inside = [], 0
    try:
        for trial in range(TRIALS):
            client = registry.client_for(server.uri)
            version = add_version(client, name, round(rng.uniform(2.0, 4.0), 3))
            gate = subprocess.Popen(
                promote_argv(name, version, "--min-improvement", "0.01", "--lock-timeout", "60"),
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while gate.poll() is None and not lock_held(client, name) and time.monotonic() < deadline:
                time.sleep(0.02)
            delay = rng.uniform(0.0, 0.6)
            time.sleep(delay)  # somewhere inside the promotion
            kills_inside += gate.poll() is None
            kill(server)
            out, err = gate.communicate(timeout=300)
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            print(
                f"trial {trial}: v{version} killed {delay:.2f} s after the lock was seen, gate exit "
                f"{gate.returncode} {errors}"
            )
            assert gate.returncode in (0, 2, 3), (trial, out, err)
            if gate.returncode == 2:
                failures.append(trial)
                assert len(errors) == 1 and "Traceback" not in err, (trial, err)

            server.start()
            client = registry.client_for(server.uri)
            started = time.monotonic()
            outcome = registry.promote(client, name, version, RULES)  # the pipeline step, run again
            waited = time.monotonic() - started
            print(f"  next promotion: {outcome.action} after {waited:.1f} s")
            assert waited < 30, f"trial {trial}: the next promotion waited too long"
            assert outcome.action in ("promoted", "refused", "already_champion")
            assert_consistent(client, name)
    finally:
        server.stop()
    assert failures and kills_inside >= TRIALS // 2  # the kills did land inside promotions
