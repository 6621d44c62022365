"""The MLflow registry gate: register a challenger, move `champion` (or refuse, saying why), roll back, history.

One registered model holds every version a pipeline run produced. Aliases: `challenger` (the newest candidate),
`champion` (the serving one). The gate decides from the version's evidence (components/registry/gate_evidence.py: the
evaluation report and run, checked at promotion time), never from tags; version tags mirror provenance, metrics
(`metric.<name>`) and each decision (`gate.decision`, `gate.reasons`, ...) for people to read.

Every decision is a run in the `promotions` experiment (the audit record). A decision is made and applied under
the registry lock (components/registry/registry_lock.py: a lease with a heartbeat, broken safely when its holder dies),
and applied crash-consistently, in this order:

1. the audit run is created with `state=pending` and everything the decision writes (one create call);
2. the decision tags are written on the version(s);
3. the alias moves (for promotions and rollbacks), right after checking the lock is still held;
4. the audit run becomes `state=applied`.

A crash (or a dead tracking server) anywhere leaves at most one pending audit run; the next gate run (promote or
rollback), before deciding anything, completes it: rewrites its tags, moves the alias if it still points at the
champion the decision was made against, and marks it applied. So the champion, the audit history and the tags
agree after every gate run.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from pydantic import BaseModel

from components.infrastructure.logs import get_logger
from components.registry.gate_evidence import LINEAGE_KEYS, EvidenceError, read_evidence
from components.registry.gate_rules import GateInput, GateRules, decide
from components.registry.registry_lock import LockError, RegistryError, RegistryLock, already_exists, not_found

log = get_logger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTIONS_EXPERIMENT = "promotions"
METRIC_TAG_PREFIX = "metric."
PROVENANCE_TAGS = ("data_hash", "code_identity", "git_commit", "config_hash")
MOVES_CHAMPION = ("promoted", "forced", "rolled_back")
PENDING, APPLIED = "pending", "applied"


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


def client_for(tracking_uri: str | None = None):
    import os

    from mlflow import MlflowClient

    from components.infrastructure.tracking import _CLIENT_ENV_DEFAULTS

    for key, value in {**_CLIENT_ENV_DEFAULTS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


_not_found, _already_exists = not_found, already_exists


def metrics_of(version) -> dict[str, float]:
    """The eval metrics mirrored as `metric.<name>` tags on a model version (for display only)."""
    metrics = {}
    for key, value in (version.tags or {}).items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError:
                pass
    return metrics


def alias_version(client, name: str, alias: str):
    """The version `alias` points at, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # MLflow says "Registered model alias NAME not found." (INVALID_PARAMETER_VALUE) or RESOURCE_DOES_NOT_EXIST;
        # anything else (an unreachable or failing server: INTERNAL_ERROR) is not an answer, so it is raised.
        if _not_found(error):
            return None
        raise


def registry_lock(client, name: str, timeout_s: float = 120.0, lease_s: float = 6.0) -> RegistryLock:
    """The gate's lock for `name` (a context manager)."""
    return RegistryLock(client, name, lease_s=lease_s, timeout_s=timeout_s)


# -- registering ---------------------------------------------------------------------------------------------------
def version_tags(metrics: dict[str, float], provenance: dict[str, str], extra: dict[str, str] | None = None):
    """Display tags of a version: provenance, the metrics as `metric.<name>` (never read by the gate), extras."""
    tags = {k: str(v) for k, v in provenance.items()}
    tags.update({f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
    tags.update(extra or {})
    return tags


def register_version(client, name: str, model_uri: str, tags: dict[str, str], run_id: str | None = None) -> str:
    """A new version of `name` (created if needed) from a logged model, tagged, aliased `challenger`. `run_id`
    (the candidate run holding the evidence) is fixed on the version for good."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Abstractinator byte-level autoencoder (pyfunc)")
    except MlflowException as error:
        if not _already_exists(error):
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    if run_id is None and model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/")[0]
    version = client.create_model_version(name, source=model_uri, tags=tags, model_id=model_id, run_id=run_id)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("model_version_registered", model=name, version=version.version)
    return str(version.version)


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
    client, lock: RegistryLock, outcome: GateOutcome, rules: GateRules | None, metrics: dict[str, float]
) -> None:
    """Steps 1-4 of the module docstring."""
    from mlflow.entities import Metric

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
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC and will be completed by the next gate run"
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


def recover(client, name: str, lock: RegistryLock) -> int:
    """Complete every pending decision about `name` (oldest first); returns how many there were."""
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
        state = _complete(
            client,
            lock,
            run.info.run_id,
            name,
            json.loads(tags.get("version_tags") or "{}"),
            tags.get("action", ""),
            tags.get("champion_before"),
            tags.get("champion_after"),
        )
        client.set_tag(run.info.run_id, "recovered", "true")
        log.warning(
            "gate_pending_decision_completed",
            model=name,
            version=tags.get("version"),
            action=tags.get("action"),
            state=state,
        )
    return len(pending)


# -- deciding --------------------------------------------------------------------------------------------------------
def gate_input(client, name: str, challenger, champion, forced_by: str | None = None) -> GateInput:
    """What decide() needs about `challenger`, read from its verified evidence and the champion alias."""
    base = dict(
        version=str(challenger.version),
        champion=str(champion.version) if champion else None,
        rolled_back=(challenger.tags or {}).get("gate.rolled_back") == "true",
        forced_by=forced_by,
    )
    try:
        attestation = read_evidence(client, name, challenger).attestation
    except EvidenceError as error:
        return GateInput(**base, metrics=None, evidence_problem=str(error))
    return GateInput(
        **base,
        metrics=attestation.metrics,
        scored_champion=attestation.champion.version if attestation.champion else None,
        champion_problem=attestation.champion_problem,
        paired=attestation.paired,
    )


def promote(
    client,
    name: str,
    version: str,
    rules: GateRules,
    force: bool = False,
    forced_by: str = "",
    lock_timeout_s: float = 120.0,
    lease_s: float = 6.0,
) -> GateOutcome:
    """Run the gate for `version`: move `champion` to it or refuse, record the decision either way.
    `force` (a person overriding the gate, `forced_by` saying who/why) moves it whatever the evidence says."""
    from mlflow.exceptions import MlflowException

    try:
        challenger = client.get_model_version(name, str(version))
    except MlflowException as error:
        if not _not_found(error):
            raise
        raise RegistryError(f"model {name!r} version {version}: not in the registry") from None
    with registry_lock(client, name, lock_timeout_s, lease_s) as lock:
        recover(client, name, lock)
        champion = alias_version(client, name, CHAMPION)
        before = str(champion.version) if champion else None
        gate = gate_input(client, name, challenger, champion, (forced_by or "") if force else None)
        decision = decide(gate, rules)
        outcome = GateOutcome(
            model=name,
            action=decision.action,
            version=str(version),
            champion_before=before,
            champion_after=str(version) if decision.promote else before,
            reasons=decision.reasons,
        )
        if decision.action != "already_champion":
            paired = gate.paired.model_dump() if gate.paired else {}
            numbers = {f"paired.{k}": v for k, v in paired.items() if isinstance(v, int | float) and math.isfinite(v)}
            _apply(client, lock, outcome, rules, {**(gate.metrics or {}), **numbers})
    log.info("gate_decision", model=name, version=version, action=outcome.action, reasons=outcome.reasons)
    return outcome


def rollback(client, name: str, lock_timeout_s: float = 120.0, lease_s: float = 6.0) -> GateOutcome:
    """Give `champion` back to the version the current champion was promoted over."""
    with registry_lock(client, name, lock_timeout_s, lease_s) as lock:
        recover(client, name, lock)
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = (champion.tags or {}).get("gate.promoted_over")
        if not previous:
            raise RegistryError(f"model {name!r}: champion v{champion.version} was the first; nothing to roll back to")
        outcome = GateOutcome(
            model=name,
            action="rolled_back",
            version=previous,
            champion_before=str(champion.version),
            champion_after=previous,
            reasons=[f"rollback from v{champion.version} to v{previous}"],
        )
        _apply(client, lock, outcome, None, {})
    log.info("gate_rollback", model=name, champion=previous, was=champion.version)
    return outcome


# -- reading -----------------------------------------------------------------------------------------------------------
def lineage_of(client, version) -> dict[str, str]:
    """The candidate run's lineage params (immutable), or {} when the version has no candidate run."""
    from mlflow.exceptions import MlflowException

    if not version.run_id:
        return {}
    try:
        params = client.get_run(version.run_id).data.params
    except MlflowException as error:
        if _not_found(error):
            return {}
        raise
    return {key: params[key] for key in LINEAGE_KEYS if params.get(key)}


def require_model(client, name: str):
    """The registered model `name`; RegistryError (one line) when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if not _not_found(error):
            raise
        raise RegistryError(f"model {name!r}: not in the registry") from None


def status(client, name: str, lineage: bool = True) -> dict[str, Any]:
    """Aliases, every version with its provenance, metrics, lineage and gate decision, and pending decisions."""
    model = require_model(client, name)
    aliases = dict(model.aliases or {})
    versions = []
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        tags = version.tags or {}
        versions.append(
            {
                "version": str(version.version),
                "aliases": sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
                "metrics": metrics_of(version),
                "decision": tags.get("gate.decision"),
                "reasons": tags.get("gate.reasons"),
                "run_id": version.run_id,
                "lineage": lineage_of(client, version) if lineage else {},
                **{key: tags.get(key) for key in PROVENANCE_TAGS},
            }
        )
    return {
        "model": name,
        "aliases": {k: str(v) for k, v in aliases.items()},
        "versions": versions,
        "pending": pending_decisions(client, name),
    }


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


def champion_provenance(client, name: str) -> dict[str, str] | None:
    """The champion's data_hash / git_commit / config_hash tags, or None when there is no champion."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    return {key: (champion.tags or {}).get(key, "") for key in PROVENANCE_TAGS}


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "GateOutcome",
    "LockError",
    "RegistryError",
    "alias_version",
    "client_for",
    "history",
    "promote",
    "recover",
    "register_version",
    "rollback",
    "status",
    "version_tags",
]
