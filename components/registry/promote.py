"""The MLflow registry gate: register a challenger, move `champion` (or refuse, saying why), roll back, history.

One registered model holds every version a pipeline run produced. Aliases: `challenger` (the newest candidate),
`champion` (the serving one). The gate decides from the version's evidence (components/registry/gate_evidence.py: the
evaluation report and run, checked at promotion time), never from tags; version tags mirror provenance, metrics
(`metric.<name>`) and each decision (`gate.decision`, `gate.reasons`, ...) for people to read.

The decision is made by the pure `gate_rules.decide` from the version's verified evidence; recording and applying
it is components/registry/decision_log.py's job (an audit run in the `promotions` experiment, pending until the
tags and the alias are written; the next gate run completes one a crash left pending), talking to MLflow
components/registry/registry_client.py's.
"""

from __future__ import annotations

import json
import math
from typing import Any

from components.infrastructure.logs import get_logger
from components.registry.decision_log import (
    GateOutcome,
    _apply,
    history,
    pending_decisions,
    recover,
    rollback_record,
    rolled_back_weights,
)
from components.registry.gate_evidence import LINEAGE_KEYS, EvidenceError, attestation_of, paired_at, read_evidence
from components.registry.gate_rules import GateInput, GateRules, decide
from components.registry.registry_client import (
    CHALLENGER,
    CHAMPION,
    PROVENANCE_TAGS,
    _not_found,
    alias_version,
    client_for,
    metrics_of,
    register_version,
    registry_lock,
    require_model,
    version_tags,
)
from components.registry.registry_lock import LockError, RegistryError

log = get_logger(__name__)


def _rollback_target(client, name: str, champion) -> str:
    """The champion the current one was scored beside by its own evaluation (a promotion needs that to be the
    champion it replaced: gate_rules.decide), from its signed attestation, checked: the target's registered weights
    verify against its own attestation and are the very weights the champion was scored beside, and no rollback
    banned them. RegistryError (one line) when there is none or it fails a check; `promote --force` remains."""
    from mlflow.exceptions import MlflowException

    label = f"model {name!r}: champion v{champion.version}"
    try:
        scored = attestation_of(client, champion).champion
    except EvidenceError as error:
        raise RegistryError(f"{label} has no verified evaluation naming the version it replaced ({error})") from None
    if scored is None:
        raise RegistryError(f"{label} was the first; nothing to roll back to")
    try:
        target = read_evidence(client, name, client.get_model_version(name, scored.version)).attestation
    except EvidenceError as error:
        raise RegistryError(f"{label} replaced v{scored.version}, whose evidence does not verify: {error}") from None
    except MlflowException as error:
        if not _not_found(error):
            raise
        raise RegistryError(f"{label} replaced v{scored.version}, which no longer exists") from None
    if target.challenger_weights_sha256 != scored.weights_sha256:
        raise RegistryError(f"{label} was scored beside other weights than v{scored.version} registers")
    if scored.weights_sha256 in rolled_back_weights(client, name):
        raise RegistryError(f"{label} replaced v{scored.version}, whose weights a rollback banned")
    return scored.version


# -- deciding --------------------------------------------------------------------------------------------------------
def gate_input(client, name: str, challenger, champion, rules: GateRules, forced_by: str | None = None) -> GateInput:
    """What decide() needs about `challenger`, read from its verified evidence and the champion alias."""
    base = dict(version=str(challenger.version), champion=str(champion.version) if champion else None)
    base["forced_by"] = forced_by
    try:
        attestation = read_evidence(client, name, challenger).attestation
        paired = paired_at(client, challenger, attestation, rules.confidence)
    except EvidenceError as error:
        return GateInput(**base, metrics=None, evidence_problem=str(error))
    champion_weights = None
    if champion is not None:  # what the champion's own (verified) evaluation says its weights are
        try:
            champion_weights = read_evidence(client, name, champion).attestation.challenger_weights_sha256
        except EvidenceError:
            champion_weights = "unverified"  # never equal to an attested sha256
    return GateInput(
        **base,
        # the ban follows the weights (any version registering them), read from the audit history, not a tag
        rolled_back=attestation.challenger_weights_sha256 in rolled_back_weights(client, name),
        metrics=attestation.metrics,
        scored_champion=attestation.champion.version if attestation.champion else None,
        scored_champion_weights=attestation.champion.weights_sha256 if attestation.champion else None,
        champion_weights=champion_weights,
        champion_problem=attestation.champion_problem,
        paired=paired,
    )


def _redecider(client, name: str, rules: GateRules):
    """recover()'s re-check: the decision about `version` against the champion `before`, made again by decide()
    from the version's verified evidence; None when the version is not in the registry."""
    from mlflow.exceptions import MlflowException

    def redecide(version: str, before: str | None) -> GateOutcome | None:
        if not str(version).isdigit() or not (before is None or str(before).isdigit()):
            return None
        try:
            challenger = client.get_model_version(name, str(version))
            champion = client.get_model_version(name, before) if before else None
        except MlflowException as error:
            if _not_found(error):
                return None
            raise
        decision = decide(gate_input(client, name, challenger, champion, rules), rules)
        after = str(version) if decision.promote else before
        return GateOutcome(
            model=name,
            action=decision.action,
            version=str(version),
            champion_before=before,
            champion_after=after,
            reasons=decision.reasons,
        )

    return redecide


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
        recover(client, name, lock, _redecider(client, name, rules))
        champion = alias_version(client, name, CHAMPION)
        before = str(champion.version) if champion else None
        gate = gate_input(client, name, challenger, champion, rules, (forced_by or "") if force else None)
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
    """Give `champion` back to the version the current champion replaced, as its own signed evaluation names it
    (`_rollback_target`), never an editable tag or an audit run anyone with the credential can create."""
    with registry_lock(client, name, lock_timeout_s, lease_s) as lock:
        recover(client, name, lock, _redecider(client, name, GateRules()))  # pending promotions: default rules
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = _rollback_target(client, name, champion)
        outcome = GateOutcome(
            model=name,
            action="rolled_back",
            version=previous,
            champion_before=str(champion.version),
            champion_after=previous,
            reasons=[f"rollback from v{champion.version} to v{previous}"],
        )
        try:  # the ban is on the demoted weights; a champion without evidence is refused by the gate anyway
            banned = attestation_of(client, champion).challenger_weights_sha256
        except EvidenceError:
            banned = ""
        _apply(client, lock, outcome, None, {}, rollback_record(name, banned) if banned else None)
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


def champion_provenance(client, name: str) -> dict[str, str] | None:
    """The champion's data_hash / git_commit / config_hash tags, or None when there is no champion."""
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return None
    return {key: (champion.tags or {}).get(key, "") for key in PROVENANCE_TAGS}


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True)


__all__ = [  # what the gate's users import from here (the registry's jobs live in the modules named above)
    "CHALLENGER",
    "CHAMPION",
    "PROVENANCE_TAGS",
    "GateOutcome",
    "_apply",
    "metrics_of",
    "pending_decisions",
    "registry_lock",
    "require_model",
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
