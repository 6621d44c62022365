"""The gate's decision log: how a decision is applied and recorded, crash-consistently, and read back.

Every decision is a run in the `promotions` experiment (the audit record). A decision is made and applied under
the registry lock (components/registry/registry_lock.py: a lease with a heartbeat, broken safely when its holder dies),
and applied crash-consistently, in this order:

1. the audit run is created with `state=pending` and everything the decision writes (one create call);
2. the decision tags are written on the version(s);
3. the alias moves (for promotions and rollbacks), right after checking the lock is still held;
4. the audit run becomes `state=applied`.

Step 1 also logs the decision (model, action, version, champion before and after) as the audit run's params,
which MLflow lets nobody change once logged (for people and `registry history`; a rollback takes its target
from the champion's signed attestation instead, since anyone with the credential can create a run here).

A crash (or a dead tracking server) anywhere leaves at most one pending audit run; the next gate run (promote or
rollback), before deciding anything, makes that decision again from the version's verified evidence (a pending
run is only a record, and anyone with the MLflow credential can create one) and, when it comes out the same,
completes it: writes its tags, moves the alias if it still points at the champion the decision was made
against, and marks it applied. A pending forced promotion or rollback, and any pending decision that does not
come out the same, is marked `unverified` and changes nothing (see `recover`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from pydantic import BaseModel

from components.infrastructure.logs import get_logger
from components.registry.gate_rules import GateRules
from components.registry.registry_client import CHAMPION, alias_version
from components.registry.registry_lock import RegistryLock, already_exists

log = get_logger(__name__)

PROMOTIONS_EXPERIMENT = "promotions"
MOVES_CHAMPION = ("promoted", "forced", "rolled_back")
PENDING, APPLIED = "pending", "applied"
BANNED_WEIGHTS_PARAM = "demoted_weights_sha256"  # a rollback's audit run: the weights it took the alias from
_already_exists = already_exists


class GateOutcome(BaseModel):
    model: str
    action: str  # promoted | forced | refused | already_champion | rolled_back
    version: str | None
    champion_before: str | None
    champion_after: str | None
    reasons: list[str]

    @property
    def promoted(self) -> bool:
        return self.action in ("promoted", "forced", "already_champion", "rolled_back")


# -- applying a decision (crash-consistently: see the module docstring) -----------------------------------------
def _experiment_id(client) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(PROMOTIONS_EXPERIMENT)
    except MlflowException as error:  # another gate created it first
        if not _already_exists(error):
            raise
        return client.get_experiment_by_name(PROMOTIONS_EXPERIMENT).experiment_id


def _decision_tags(outcome: GateOutcome, audit_run: str = "") -> dict[str, dict[str, str]]:
    """{version: {tag: value}} that a decision writes."""
    reasons = "; ".join(outcome.reasons)[:5000]
    tags = {
        str(outcome.version): {
            "gate.decision": outcome.action,
            "gate.reasons": reasons,
            "gate.champion_before": str(outcome.champion_before),
            "gate.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    }
    if outcome.action in ("promoted", "forced") and outcome.champion_before is not None:
        tags[str(outcome.version)]["gate.promoted_over"] = outcome.champion_before
    if outcome.action == "rolled_back":
        tags.setdefault(str(outcome.champion_before), {})["gate.rolled_back"] = "true"
    return tags


def _apply(
    client,
    lock: RegistryLock,
    outcome: GateOutcome,
    rules: GateRules | None,
    metrics: dict[str, float],
    record: dict[str, str] | None = None,
) -> None:
    """Steps 1-4 of the module docstring. `record`: params of the audit run (immutable once logged: MLflow refuses
    to change a logged param), e.g. the weights a rollback bans."""
    from mlflow.entities import Metric, Param

    version_tags_ = _decision_tags(outcome)
    lock.verify()  # a gate that lost its lock decides nothing (it may have decided against a stale champion)
    run = client.create_run(  # 1. the audit record, pending, in one call
        _experiment_id(client),
        run_name=f"{outcome.model}-v{outcome.version}-{outcome.action}",
        tags={
            "model": outcome.model,
            "version": str(outcome.version),
            "action": outcome.action,
            "reasons": "; ".join(outcome.reasons)[:5000],
            "champion_before": str(outcome.champion_before),
            "champion_after": str(outcome.champion_after),
            "rules": rules.model_dump_json() if rules else "",
            "version_tags": json.dumps(version_tags_),
            "state": PENDING,
        },
    )
    params = {**decision_record(outcome), **(record or {})}  # immutable once logged
    client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in sorted(params.items())])
    try:
        _complete(
            client,
            lock,
            run.info.run_id,
            outcome.model,
            version_tags_,
            outcome.action,
            outcome.champion_before,
            outcome.champion_after,
        )
    except Exception as error:  # the decision is recorded (pending): say so wherever the failure is reported
        error.pending_decision = (  # type: ignore[attr-defined]
            f"the decision ({outcome.action} v{outcome.version}, audit run {run.info.run_id}) was recorded at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC and "
            + (
                "will be completed by the next gate run"
                if outcome.action in RECHECKED_ACTIONS
                else "is not re-checked by the next gate run: run the command again"
            )
        )
        raise
    if metrics:
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])


def _version_or_none(value: str | None) -> str | None:
    return None if value in (None, "", "None") else str(value)


def _complete(
    client,
    lock: RegistryLock,
    run_id: str,
    name: str,
    version_tags_: dict[str, dict[str, str]],
    action: str,
    before: str | None,
    after: str | None,
) -> str:
    """Steps 2-4 for the audit run `run_id` (a fresh one, or a pending one left by a crash); returns its end
    state: `applied`, or `superseded` when the champion was moved by hand meanwhile."""
    for version, tags in version_tags_.items():  # 2. the decision tags
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        if "gate.decision" in tags:  # the version decided about (a rollback also marks the one it demotes)
            client.set_model_version_tag(name, version, "gate.audit_run", run_id)
    state = APPLIED
    if action in MOVES_CHAMPION:  # 3. the alias, compared right before it is set
        current = alias_version(client, name, CHAMPION)
        current = str(current.version) if current else None
        if current == _version_or_none(before):
            lock.verify()
            client.set_registered_model_alias(name, CHAMPION, str(after))
        elif current != _version_or_none(after):
            state = "superseded"
    client.set_tag(run_id, "state", state)  # 4.
    client.set_terminated(run_id)
    return state


RECHECKED_ACTIONS = ("promoted", "refused")  # what decide() made and can make again from the signed evidence
UNVERIFIED = "unverified"  # a pending decision recovery could not re-check: recorded, alias untouched


def recover(client, name: str, lock: RegistryLock, redecide: Callable[[str, str | None], GateOutcome]) -> int:
    """Complete every pending decision about `name` (oldest first) that the gate can re-check; returns how many
    pending ones there were. Anyone with the MLflow credential can create a `state=pending` run, so nothing in it
    is trusted but the version and the champion it names: `redecide(version, champion_before)` makes the decision
    again from that version's verified evidence, and only that outcome (its tags, its alias move) is applied. A
    forced promotion or a rollback (a person's act, not decide()'s) cannot be re-checked: it is marked
    `unverified`, reported, and the alias left alone; the person runs it again."""
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return 0
    pending = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.model = '{name}' and tags.state = '{PENDING}'",
        order_by=["attributes.start_time ASC"],
    )
    for run in pending:
        tags = run.data.tags
        before = _version_or_none(tags.get("champion_before"))
        outcome = redecide(tags.get("version", ""), before) if tags.get("action") in RECHECKED_ACTIONS else None
        if outcome is None or outcome.action != tags.get("action"):
            client.set_tag(run.info.run_id, "state", UNVERIFIED)
            client.set_terminated(run.info.run_id, "FAILED")
            log.warning(
                "gate_pending_decision_not_verified",
                model=name,
                version=tags.get("version"),
                action=tags.get("action"),
                redecided=outcome.action if outcome else None,
            )
            continue
        state = _complete(
            client,
            lock,
            run.info.run_id,
            name,
            _decision_tags(outcome),
            outcome.action,
            outcome.champion_before,
            outcome.champion_after,
        )
        client.set_tag(run.info.run_id, "recovered", "true")
        if not run.data.params.get("version"):  # a crash before step 1's params: record the decision applied
            from mlflow.entities import Param

            params = decision_record(outcome)
            client.log_batch(run.info.run_id, params=[Param(key, value) for key, value in sorted(params.items())])
        log.warning(
            "gate_pending_decision_completed",
            model=name,
            version=tags.get("version"),
            action=tags.get("action"),
            state=state,
        )
    return len(pending)


def decision_record(outcome: GateOutcome) -> dict[str, str]:
    """The params every audit run gets at step 1: the decision itself, immutable once logged."""
    return {
        "model": outcome.model,
        "action": outcome.action,
        "version": str(outcome.version),
        "champion_before": str(outcome.champion_before),
        "champion_after": str(outcome.champion_after),
    }


def rollback_record(name: str, demoted_weights_sha256: str) -> dict[str, str]:
    """The params of a rollback's audit run that ban the demoted weights (read by rolled_back_weights)."""
    return {"model": name, "action": "rolled_back", BANNED_WEIGHTS_PARAM: demoted_weights_sha256}


def rolled_back_weights(client, name: str) -> set[str]:
    """The sha256 of every weights file a rollback of `name` demoted: read from the rollbacks' audit runs' params
    (which MLflow lets nobody change), deleted runs included (a deleted run stays searchable until `mlflow gc`),
    so neither a version tag nor re-registering the same weights as a new version lifts the ban."""
    from mlflow.entities import ViewType

    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return set()
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"params.model = '{name}' and params.action = 'rolled_back'",
        run_view_type=ViewType.ALL,
        max_results=50000,
    )
    return {run.data.params[BANNED_WEIGHTS_PARAM] for run in runs if run.data.params.get(BANNED_WEIGHTS_PARAM)}


class RecordedDecision(BaseModel):
    """The gate's latest recorded decision about one version (`latest_decision`)."""

    action: str  # promoted | forced | refused | rolled_back (the version it gave champion back to)
    state: str  # applied | superseded | pending
    reasons: str
    time: str
    run_id: str

    @property
    def made_champion(self) -> bool:
        """The gate (or a person through it: forced, rolled back) made this version champion."""
        return self.action in MOVES_CHAMPION and self.state in (APPLIED, "superseded")

    def describe(self) -> str:
        state = "" if self.state == APPLIED else f", {self.state}"
        reasons = f": {self.reasons}" if self.reasons else ""
        return f"{self.action} ({self.time} UTC, audit run {self.run_id}{state}){reasons}"


def latest_decision(client, name: str, version: str) -> RecordedDecision | None:
    """The latest decision the gate recorded about `version` of `name` (None: never gated): found by the audit
    runs' params (model, version, action: immutable once logged), a decision recovery could not re-check
    (`unverified`, applied nowhere) left out; its reasons and state are the run's tags, shown as recorded."""
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"params.model = '{name}' and params.version = '{version}'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    for run in runs:
        state = run.data.tags.get("state", "")
        if state != UNVERIFIED:
            return RecordedDecision(
                action=run.data.params["action"],
                state=state,
                reasons=run.data.tags.get("reasons", ""),
                time=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.info.start_time / 1000)),
                run_id=run.info.run_id,
            )
    return None


def pending_decisions(client, name: str) -> list[dict[str, str]]:
    """Decisions about `name` a crash left pending (the next gate run completes them), oldest first."""
    return [record for record in history(client, name) if record["state"] == PENDING]


def history(client, name: str) -> list[dict[str, str]]:
    """Every gate decision about `name`, oldest first (from the promotions experiment)."""
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.model = '{name}'",
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    keys = ("version", "action", "champion_before", "champion_after", "reasons", "state")
    return [
        {
            "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.info.start_time / 1000)),
            "run_id": run.info.run_id,
            **{key: run.data.tags.get(key, "") for key in keys},
        }
        for run in runs
    ]
