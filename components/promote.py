"""The MLflow registry gate: register a challenger, move `champion` (or refuse, saying why), roll back, history.

One registered model holds every version a pipeline run produced. Version tags carry where it came from
(`data_hash`, `git_commit`, `config_hash`, eval metrics as `metric.<name>`) and each gate decision
(`gate.decision`, `gate.reasons`, `gate.champion_before`); aliases: `challenger` (the newest candidate),
`champion` (the serving one). Every decision is also a run in the `promotions` experiment.

Two gates racing (two pipeline runs finishing together) must leave a consistent champion. A decision is made
and applied under a registry-wide mutex, and the alias move is a compare-and-set: the champion is re-read right
before it moves and the move only happens if it still points at the version the decision was made against
(else the decision is made again). The mutex is a registered model `<name>.gate-lock`: creating a registered
model is atomic in every MLflow backend (a unique key in the database), so exactly one gate can hold it; a lock
older than `stale_after_s` (a gate that died) is broken.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from components.gate_rules import GateDecision, GateRules, decide
from components.logs import get_logger

log = get_logger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
PROMOTIONS_EXPERIMENT = "promotions"
METRIC_TAG_PREFIX = "metric."
PROVENANCE_TAGS = ("data_hash", "git_commit", "config_hash")


class RegistryError(RuntimeError):
    """The registry was unreachable, or lacks the model/version asked for; str() is one line."""


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

    from components.tracking import _CLIENT_ENV_DEFAULTS

    for key, value in _CLIENT_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _not_found(error: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(error, "error_code", "")) or "not found" in str(error).lower()


def _already_exists(error: Exception) -> bool:
    return "RESOURCE_ALREADY_EXISTS" in str(getattr(error, "error_code", "")) or "already exists" in str(error)


def metrics_of(version) -> dict[str, float]:
    """The eval metrics stored as `metric.<name>` tags on a model version."""
    metrics = {}
    for key, value in (version.tags or {}).items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                metrics[key[len(METRIC_TAG_PREFIX):]] = float(value)
            except ValueError:
                pass
    return metrics


def alias_version(client, name: str, alias: str):
    """The version `alias` points at, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if _not_found(error) or "alias" in str(error).lower():
            return None
        raise


# -- the mutex ---------------------------------------------------------------------------------------------------
@contextmanager
def registry_lock(client, name: str, timeout_s: float = 120.0, stale_after_s: float = 600.0) -> Iterator[str]:
    """Hold `<name>.gate-lock` (see the module docstring); yields the holder's token."""
    from mlflow.exceptions import MlflowException

    lock_name = f"{name}.gate-lock"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(lock_name, tags={"token": token, "since": str(time.time())})
            break
        except MlflowException as error:
            if not _already_exists(error):
                raise
        try:
            held = client.get_registered_model(lock_name)
            since = float((held.tags or {}).get("since", time.time()))
            if time.time() - since > stale_after_s:
                log.warning("gate_lock_stale_broken", lock=lock_name, age_s=round(time.time() - since))
                client.delete_registered_model(lock_name)
                continue
        except MlflowException as error:
            if not _not_found(error):
                raise
            continue  # released between our create and our read: try again at once
        if time.monotonic() > deadline:
            raise RegistryError(f"registry lock {lock_name!r} held by another gate for more than {timeout_s:.0f} s")
        time.sleep(0.2)
    try:
        yield token
    finally:
        try:
            held = client.get_registered_model(lock_name)
            if (held.tags or {}).get("token") == token:
                client.delete_registered_model(lock_name)
        except MlflowException as error:
            log.warning("gate_lock_release_failed", lock=lock_name, error=str(error)[:200])


# -- registering ---------------------------------------------------------------------------------------------------
def version_tags(metrics: dict[str, float], provenance: dict[str, str], extra: dict[str, str] | None = None):
    tags = {k: str(v) for k, v in provenance.items()}
    tags.update({f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()})
    tags.update(extra or {})
    return tags


def register_version(client, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """A new version of `name` (created if needed) from a logged model, tagged, aliased `challenger`."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Abstractinator byte-level autoencoder (pyfunc)")
    except MlflowException as error:
        if not _already_exists(error):
            raise
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    run_id = model_uri.removeprefix("runs:/").split("/")[0] if model_uri.startswith("runs:/") else None
    version = client.create_model_version(name, source=model_uri, tags=tags, model_id=model_id, run_id=run_id)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    log.info("model_version_registered", model=name, version=version.version)
    return str(version.version)


# -- deciding --------------------------------------------------------------------------------------------------------
def _record(client, outcome: GateOutcome, rules: GateRules | None, metrics: dict[str, float]) -> None:
    """A run in the `promotions` experiment, and tags on the version the decision was about."""
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment(PROMOTIONS_EXPERIMENT)
    )
    run = client.create_run(
        experiment_id,
        run_name=f"{outcome.model}-v{outcome.version}-{outcome.action}",
        tags={
            "model": outcome.model,
            "version": str(outcome.version),
            "action": outcome.action,
            "reasons": "; ".join(outcome.reasons)[:5000],
            "champion_before": str(outcome.champion_before),
            "champion_after": str(outcome.champion_after),
            "rules": rules.model_dump_json() if rules else "",
        },
    )
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    client.set_terminated(run.info.run_id)
    if outcome.version is not None:
        for key, value in {
            "gate.decision": outcome.action,
            "gate.reasons": "; ".join(outcome.reasons)[:5000],
            "gate.champion_before": str(outcome.champion_before),
            "gate.time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }.items():
            client.set_model_version_tag(outcome.model, outcome.version, key, value)


def promote(client, name: str, version: str, rules: GateRules, max_attempts: int = 5, force: bool = False,
            forced_by: str = "") -> GateOutcome:
    """Run the gate for `version`: move `champion` to it or refuse, record the decision either way.
    `force` (a person overriding the gate, `forced_by` saying who/why) moves it whatever the metrics say."""
    from mlflow.exceptions import MlflowException

    try:
        challenger = client.get_model_version(name, str(version))
    except MlflowException as error:
        raise RegistryError(f"model {name!r} version {version}: not in the registry ({error.message})") from None
    metrics = metrics_of(challenger)
    with registry_lock(client, name):
        for _ in range(max_attempts):
            champion = alias_version(client, name, CHAMPION)
            before = str(champion.version) if champion else None
            if before == str(version):
                return GateOutcome(model=name, action="already_champion", version=str(version),
                                   champion_before=before, champion_after=before, reasons=["already champion"])
            decision: GateDecision = decide(metrics, metrics_of(champion) if champion else None, rules)
            if force:
                decision = GateDecision(promote=True, reasons=[f"forced: {forced_by or 'by hand'}", *decision.reasons])
            if not decision.promote:
                outcome = GateOutcome(model=name, action="refused", version=str(version), champion_before=before,
                                      champion_after=before, reasons=decision.reasons)
                break
            current = alias_version(client, name, CHAMPION)  # compare ...
            if (str(current.version) if current else None) != before:
                log.warning("champion_moved_during_decision", expected=before, found=current and current.version)
                continue
            client.set_registered_model_alias(name, CHAMPION, str(version))  # ... and set
            if before is not None:
                client.set_model_version_tag(name, str(version), "gate.promoted_over", before)
            outcome = GateOutcome(model=name, action="forced" if force else "promoted", version=str(version),
                                  champion_before=before,
                                  champion_after=str(version), reasons=decision.reasons)
            break
        else:
            raise RegistryError(f"model {name!r}: the champion kept moving; gave up after {max_attempts} attempts")
        _record(client, outcome, rules, metrics)
    log.info("gate_decision", model=name, version=version, action=outcome.action, reasons=outcome.reasons)
    return outcome


def rollback(client, name: str) -> GateOutcome:
    """Give `champion` back to the version the current champion was promoted over."""
    with registry_lock(client, name):
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise RegistryError(f"model {name!r} has no champion to roll back")
        previous = (champion.tags or {}).get("gate.promoted_over")
        if not previous:
            raise RegistryError(f"model {name!r}: champion v{champion.version} was the first; nothing to roll back to")
        client.set_registered_model_alias(name, CHAMPION, previous)
        client.set_model_version_tag(name, str(champion.version), "gate.rolled_back", "true")
        outcome = GateOutcome(model=name, action="rolled_back", version=previous,
                              champion_before=str(champion.version), champion_after=previous,
                              reasons=[f"rollback from v{champion.version} to v{previous}"])
        _record(client, outcome, None, {})
    log.info("gate_rollback", model=name, champion=previous, was=champion.version)
    return outcome


# -- reading -----------------------------------------------------------------------------------------------------------
def status(client, name: str) -> dict[str, Any]:
    """Aliases and every version with its provenance, metrics and gate decision."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as error:
        raise RegistryError(f"model {name!r}: not in the registry ({error.message})") from None
    aliases = dict(model.aliases or {})
    versions = []
    for version in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        tags = version.tags or {}
        versions.append({
            "version": str(version.version),
            "aliases": sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
            "metrics": metrics_of(version),
            "decision": tags.get("gate.decision"),
            "reasons": tags.get("gate.reasons"),
            **{key: tags.get(key) for key in PROVENANCE_TAGS},
        })
    return {"model": name, "aliases": {k: str(v) for k, v in aliases.items()}, "versions": versions}


def history(client, name: str) -> list[dict[str, str]]:
    """Every gate decision about `name`, oldest first (from the promotions experiment)."""
    experiment = client.get_experiment_by_name(PROMOTIONS_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.model = '{name}'", order_by=["attributes.start_time ASC"]
    )
    keys = ("version", "action", "champion_before", "champion_after", "reasons")
    return [
        {"time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.info.start_time / 1000)),
         **{key: run.data.tags.get(key, "") for key in keys}}
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
