"""The registry as the gate uses it through MlflowClient: the client, the aliases (`challenger`, `champion`), the
model versions and their display tags, registering a version, the gate's lock (components/registry/promote.py
decides, components/registry/decision_log.py records)."""

from __future__ import annotations

from components.infrastructure.logs import get_logger
from components.registry.registry_lock import RegistryError, RegistryLock, already_exists, not_found

log = get_logger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
METRIC_TAG_PREFIX = "metric."
PROVENANCE_TAGS = ("data_hash", "code_identity", "git_commit", "config_hash")


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


def require_model(client, name: str):
    """The registered model `name`; RegistryError (one line) when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if not _not_found(error):
            raise
        raise RegistryError(f"model {name!r}: not in the registry") from None
