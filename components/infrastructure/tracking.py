"""MLflow tracking that never stops training and never loses a metric.

Everything (params, tags, metrics, text and file artifacts) goes into a local queue; `flush` sends the queue
with MlflowClient batch calls. If the tracking server is unreachable, the queue is kept, a warning is logged
once per outage, and the next flush tries again; the run is created lazily, so even a server that is down at
the start gets the whole run when it comes back. `close` retries for a while; whatever still cannot be sent is
written to a JSON-lines file that `replay_unsent` sends later.

A hung (not refused) server costs a bounded delay: each request times out after MLFLOW_HTTP_REQUEST_TIMEOUT
(5 s by default here, no client-side retries), and after a failed flush the next attempts are skipped for a
backoff that doubles up to `MAX_BACKOFF_S`, so a long outage costs one time-out per backoff period, logged as
`tracking_unreachable` / `tracking_reconnected` with the seconds spent waiting. Credentials in the tracking URI
never reach logs or the unsent file (components/infrastructure/redaction.py).

Tracking URI: the settings' (MLFLOW_TRACKING_URI) or, with none, the seed's layout: runs stored under
./mlruns/<project_name> (a sqlite database there, since MLflow 3 retired the plain-folder store), opened with
`mlflow ui --backend-store-uri sqlite:///mlruns/<project_name>/mlflow.db`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.infrastructure.logs import get_logger
from components.infrastructure.redaction import is_redacted, redact, redact_data
from components.infrastructure.settings import get_settings

log = get_logger(__name__)

# The KFP run a pipeline task runs in: the API server labels each pod `pipeline/runid` (kubeflow/pipelines
# backend/src/apiserver/template/argo_template.go `SetPodMetadataLabels`), and pipelines/training.py hands the
# label to the task as this variable through the downward API.
KFP_RUN_ID_ENV = "KFP_RUN_ID"


def kfp_run_id() -> str | None:
    """The KFP run id of this task, or None outside KFP."""
    return os.environ.get(KFP_RUN_ID_ENV, "").strip() or None


def tag_kfp_run(run_id: str | None, tracking_uri: str | None) -> None:
    """Record the KFP run that made an MLflow run (tag `kfp_run_id`) when there is one."""
    kfp_run = kfp_run_id()
    if not (kfp_run and run_id and tracking_uri):
        return
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_tag(run_id, "kfp_run_id", kfp_run)


# MLflow's REST client retries for minutes by default; we retry at a later flush instead.
_CLIENT_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
FIRST_BACKOFF_S = 10.0
MAX_BACKOFF_S = 120.0
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def local_store_dir(project_name: str | None) -> Path:
    return Path("mlruns") / (project_name or "Default")


def resolve_tracking_uri(project_name: str | None) -> str:
    configured = get_settings().mlflow_tracking_uri
    if configured:
        return configured
    store = local_store_dir(project_name)
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store.as_posix()}/mlflow.db"


def ui_command(tracking_uri: str) -> str:
    """What to run to look at the runs, for people (so with any password masked)."""
    tracking_uri = redact(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


@dataclass
class _Queue:
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)  # key, value, timestamp ms, step
    texts: list[tuple[str, str]] = field(default_factory=list)  # text, artifact file
    files: list[tuple[str, str | None]] = field(default_factory=list)  # local path, artifact dir

    def __len__(self) -> int:
        return len(self.params) + len(self.tags) + len(self.metrics) + len(self.texts) + len(self.files)


class RunTracker:
    """One MLflow run, fed through a local queue. Pass `run_id` to continue a run after a resume."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tracking_uri: str | None = None,
        run_id: str | None = None,
        batch_interval: int = 50,
        unsent_path: Path | None = None,
    ):
        for key, value in _CLIENT_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
        from mlflow import MlflowClient

        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri = tracking_uri or resolve_tracking_uri(experiment)
        self.client = MlflowClient(self.tracking_uri)
        self.run_id = run_id
        self.batch_interval = batch_interval
        self.unsent_path = unsent_path
        self._queue = _Queue()
        self._outage_since: float | None = None
        self._retry_at = 0.0  # monotonic time before which flushes are skipped (after a failure)
        self._backoff_s = FIRST_BACKOFF_S
        self._waited_s = 0.0  # time spent in failed requests during the current outage

    # -- queueing (never blocks, never raises for the server) --------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        self._queue.params.update({k: redact(v)[:_MAX_PARAM_LENGTH] for k, v in params.items()})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._queue.tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._queue.metrics.extend((k, float(v), now, step) for k, v in metrics.items())

    def log_text(self, text: str, artifact_file: str) -> None:
        self._queue.texts.append((text, artifact_file))

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self._queue.files.append((str(local_path), artifact_path))

    @property
    def pending(self) -> int:
        return len(self._queue)

    def pending_state(self) -> dict[str, Any] | None:
        """What is queued and unsent, as plain data (a checkpoint carries it over a kill); None when empty."""
        if not self._queue:
            return None
        queue = self._queue
        return {
            "params": dict(queue.params),
            "tags": dict(queue.tags),
            "metrics": list(queue.metrics),
            "texts": list(queue.texts),
            "files": list(queue.files),
        }

    def restore_pending(self, state: dict[str, Any]) -> None:
        """Queue again what `pending_state` returned (ahead of anything queued since)."""
        queue = self._queue
        queue.params = {**state.get("params", {}), **queue.params}
        queue.tags = {**state.get("tags", {}), **queue.tags}
        queue.metrics = [tuple(m) for m in state.get("metrics", [])] + queue.metrics
        queue.texts = [tuple(t) for t in state.get("texts", [])] + queue.texts
        queue.files = [tuple(f) for f in state.get("files", [])] + queue.files

    def maybe_flush(self, step: int) -> None:
        """Flush every `batch_interval` steps (the config's mlflow_batch_interval)."""
        if step % self.batch_interval == 0:
            self.flush()

    # -- sending ----------------------------------------------------------------------------------------------
    def _ensure_run(self) -> str:
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(self.experiment)
            if experiment is None:
                artifact_location = None
                if self.tracking_uri.startswith("sqlite:///"):  # keep the seed's "everything under mlruns/"
                    db_dir = Path(self.tracking_uri.removeprefix("sqlite:///")).parent
                    artifact_location = (db_dir / "artifacts").resolve().as_uri()
                experiment_id = self.client.create_experiment(self.experiment, artifact_location=artifact_location)
            else:
                experiment_id = experiment.experiment_id
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_name).info.run_id
        return self.run_id

    def _send(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._ensure_run()
        queue = self._queue
        while queue.params or queue.tags:
            params = dict(list(queue.params.items())[:_MAX_PARAMS_PER_BATCH])
            tags = dict(list(queue.tags.items())[:_MAX_PARAMS_PER_BATCH])
            self.client.log_batch(
                run_id,
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in tags.items()],
            )
            for key in params:
                del queue.params[key]
            for key in tags:
                del queue.tags[key]
        while queue.metrics:
            chunk = queue.metrics[:_MAX_METRICS_PER_BATCH]
            self.client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in chunk])
            del queue.metrics[: len(chunk)]
        while queue.texts:
            text, artifact_file = queue.texts[0]
            self.client.log_text(run_id, text, artifact_file)
            queue.texts.pop(0)
        while queue.files:
            local_path, artifact_path = queue.files[0]
            if Path(local_path).exists():
                self.client.log_artifact(run_id, local_path, artifact_path)
            else:
                log.warning("artifact_missing", path=local_path)
            queue.files.pop(0)

    def flush(self, force: bool = False) -> bool:
        """Send what is queued; True if the queue is empty afterwards. Failures keep the queue, and during an
        outage attempts are skipped until the backoff has passed (unless `force`)."""
        if not self._queue and self.run_id is not None:
            return True
        now = time.monotonic()
        if not force and now < self._retry_at:
            return False
        try:
            self._send()
        except Exception as error:  # any failure to reach the server: keep everything, retry later
            spent = time.monotonic() - now
            self._waited_s += spent
            self._retry_at = time.monotonic() + self._backoff_s
            first_line = (str(error).splitlines() or [type(error).__name__])[0][:200]
            if self._outage_since is None:
                self._outage_since = now
                log.warning(
                    "tracking_unreachable",
                    uri=redact(self.tracking_uri),
                    pending=self.pending,
                    error=redact(first_line),
                    waited_s=round(spent, 1),
                    next_try_in_s=self._backoff_s,
                    note="training goes on; metrics are kept and sent when the server returns",
                )
            else:
                log.info("tracking_still_unreachable", waited_s=round(spent, 1), next_try_in_s=self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, MAX_BACKOFF_S)
            return False
        if self._outage_since is not None:
            log.info(
                "tracking_reconnected",
                outage_s=round(time.monotonic() - self._outage_since, 1),
                waited_s=round(self._waited_s, 1),
            )
            self._outage_since = None
            self._waited_s, self._backoff_s, self._retry_at = 0.0, FIRST_BACKOFF_S, 0.0
        return True

    def close(self, status: str | None = "FINISHED", retry_for_s: float = 30.0, retry_every_s: float = 2.0) -> bool:
        """Flush (retrying for a while) and mark the run `status` (None: leave it running, to be resumed);
        what still cannot be sent goes to `unsent_path`."""
        deadline = time.monotonic() + retry_for_s
        while not self.flush(force=True):
            if time.monotonic() >= deadline:
                self._write_unsent(status)
                return False
            time.sleep(retry_every_s)
        if status is None:
            return True
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as error:
            log.warning("tracking_terminate_failed", run_id=self.run_id, error=redact(error)[:200])
        return True

    def _write_unsent(self, status: str | None = None) -> None:
        """status: how the run ended (FINISHED, FAILED), set by the replay once the rest is sent."""
        path = self.unsent_path or Path("mlflow_unsent.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        record = redact_data(
            {
                "tracking_uri": self.tracking_uri,  # redacted: replay_unsent takes the credentials from the environment
                "experiment": self.experiment,
                "run_name": self.run_name,
                "run_id": self.run_id,
                "params": self._queue.params,
                "tags": self._queue.tags,
                "metrics": self._queue.metrics,
                "texts": self._queue.texts,
                "files": self._queue.files,
                "status": status,
            }
        )
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        log.error(
            "tracking_unsent_saved",
            path=str(path),
            pending=self.pending,
            note="send later with components.infrastructure.tracking.replay_unsent",
        )


def replay_unsent(path: Path, tracking_uri: str | None = None) -> int:
    """Send every record of an unsent-metrics file, then end its run with the status it was closed with; returns
    how many records were sent (the file is removed).
    A record whose URI had credentials masked goes to `tracking_uri` or, by default, the configured one."""
    sent = 0
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        uri = record["tracking_uri"]
        if tracking_uri or is_redacted(uri):
            uri = tracking_uri or get_settings().mlflow_tracking_uri or uri
        tracker = RunTracker(record["experiment"], record["run_name"], uri, record["run_id"])
        tracker._queue = _Queue(
            params=record["params"],
            tags=record["tags"],
            metrics=[tuple(m) for m in record["metrics"]],
            texts=[tuple(t) for t in record["texts"]],
            files=[tuple(f) for f in record["files"]],
        )
        if not tracker.flush(force=True):
            raise RuntimeError(f"{path}: the tracking server {redact(uri)} is still unreachable")
        if record.get("status"):  # the run ends as it ended here, not RUNNING forever (older files have none)
            tracker.client.set_terminated(tracker._ensure_run(), status=record["status"])
        sent += 1
    Path(path).unlink()
    return sent


def mlflow_failures() -> tuple[type[BaseException], ...]:
    """What a failing or unreachable tracking server raises through MlflowClient (ValueError: a response cut off
    mid-body does not parse as JSON)."""
    import requests
    from mlflow.exceptions import MlflowException

    return MlflowException, requests.RequestException, OSError, ValueError
