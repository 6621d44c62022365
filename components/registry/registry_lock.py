"""The registry gate's mutex: a lease on a registered model, held with a heartbeat, broken safely when its
holder dies.

MLflow offers no compare-and-set: tags and aliases are plain overwrites (`set_registered_model_tag`,
`set_registered_model_alias`) and deletes are unconditional. What it does offer atomically, in every backend,
is *creating* a registered model: the name is the table's primary key (mlflow/store/model_registry/
sqlalchemy_store.py `create_registered_model` turns the IntegrityError into RESOURCE_ALREADY_EXISTS; the REST
server maps it to HTTP 400). So every step that must be exclusive is a create:

- take:    create `<name>.gate-lock` tagged with a fresh token (tags go in the same create, so a lock is never
           seen without its token);
- refresh: the holder sets the tag `heartbeat.<token>` every lease/4 seconds. A tag write is not conditional,
           but it is keyed by the writer's token, so a late holder writing on a lock that has since changed hands
           cannot make that lock look alive;
- end:     whoever ends generation `<token>` (its holder releasing, or a waiter breaking it) must first create
           `<name>.gate-lock.ended-<token>-<attempt>`. Exactly one party wins that create; only the winner
           deletes the lock, and only after re-reading that it still carries `<token>` (no one else can change it
           meanwhile: that would need the same marker). Two waiters that both judge a lock stale cannot both break
           it, and a waiter can never delete a lock it did not judge. `attempt` counts up only when a lock whose
           marker was won stays in place for another whole lease (its ender died between marker and delete).

Staleness is judged on the waiter's own monotonic clock: a lock whose (token, heartbeat) has not changed for
`lease_s` is dead. No clocks are compared across machines. Markers older than an hour are removed on release.
A holder checks `verify()` right before a write that must only happen under the lock (the alias move); if its
lock was broken meanwhile (it stalled past the lease), it stops with an error instead of writing. What no lease
without fencing tokens can exclude remains: a process frozen for longer than the lease between its last check
and its next write.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

from components.infrastructure.logs import get_logger
from configs.errors import UserError

log = get_logger(__name__)

MARKER_MAX_AGE_S = 3600.0


class RegistryError(UserError):
    """The registry was unreachable, or lacks the model/version asked for; str() is one line."""


class LockError(RegistryError):
    """The lock could not be taken in time, or was lost; str() is one line."""


def _code(error: Exception) -> str:
    return str(getattr(error, "error_code", ""))


def already_exists(error: Exception) -> bool:
    return "RESOURCE_ALREADY_EXISTS" in _code(error) or "already exists" in str(error)


def not_found(error: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in _code(error) or "not found" in str(error).lower()


class RegistryLock:
    """`with RegistryLock(client, "model"):` holds `model.gate-lock` (see the module docstring)."""

    def __init__(self, client, name: str, lease_s: float = 6.0, timeout_s: float = 120.0, poll_s: float = 0.25):
        self.client, self.name = client, name
        self.lock_name = f"{name}.gate-lock"
        self.lease_s, self.timeout_s, self.poll_s = lease_s, timeout_s, poll_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- one atomic step each ---------------------------------------------------------------------------------
    def _create_lock(self) -> bool:
        from mlflow.exceptions import MlflowException

        holder = f"{socket.gethostname()}:{os.getpid()}"
        try:
            self.client.create_registered_model(self.lock_name, tags={"token": self.token, "holder": holder})
            return True
        except MlflowException as error:
            # On a name clash MLflow's SqlAlchemyStore.create_registered_model (3.17) reads the existing model to
            # word its error; when the holder deletes the lock in between, the answer is RESOURCE_DOES_NOT_EXIST.
            # Either way the lock was taken when we asked: not ours, try again.
            if already_exists(error) or not_found(error):
                return False
            raise

    def _read(self) -> tuple[str, str] | None:
        """(token, its heartbeat) of the lock as it is now; None when there is no lock."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.lock_name).tags or {}
        except MlflowException as error:
            if not_found(error):
                return None
            raise
        token = tags.get("token", "")
        return token, tags.get(f"heartbeat.{token}", "")

    def _end(self, token: str, attempt: int = 0) -> bool:
        """End lock generation `token` (see the module docstring); True if this call ended it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(f"{self.lock_name}.ended-{token}-{attempt}")
        except MlflowException as error:
            if already_exists(error):
                return False
            raise
        held = self._read()
        if held is not None and held[0] == token:
            try:
                self.client.delete_registered_model(self.lock_name)
            except MlflowException as error:
                if not not_found(error):
                    raise
        return True

    # -- taking and holding -----------------------------------------------------------------------------------
    def acquire(self) -> RegistryLock:
        deadline = time.monotonic() + self.timeout_s
        observed, since, attempts = None, 0.0, {}
        while not self._create_lock():
            held = self._read()
            if held is None:
                continue  # released between our create and our read: try again at once
            if held != observed:
                observed, since = held, time.monotonic()
            elif time.monotonic() - since > self.lease_s:
                attempt = attempts.get(held[0], 0)
                if self._end(held[0], attempt):
                    log.warning(
                        "gate_lock_stale_broken",
                        lock=self.lock_name,
                        token=held[0][:8],
                        silent_s=round(time.monotonic() - since, 1),
                    )
                attempts[held[0]] = attempt + 1
                observed = None
                continue
            if time.monotonic() > deadline:
                raise LockError(
                    f"registry lock {self.lock_name!r} held by a live gate for more than {self.timeout_s:.0f} s"
                )
            time.sleep(self.poll_s)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"{self.lock_name}-heartbeat", daemon=True)
        self._beat.start()
        return self

    def _heartbeat(self) -> None:
        beat = 0
        while not self._stop.wait(self.lease_s / 4):
            beat += 1
            try:
                self.client.set_registered_model_tag(self.lock_name, f"heartbeat.{self.token}", str(beat))
            except Exception:  # an outage: the next beat tries again; verify() decides whether we still hold it
                pass

    def verify(self) -> None:
        """Raise LockError unless this process still holds the lock (call right before a guarded write)."""
        held = self._read()
        if held is None or held[0] != self.token:
            raise LockError(
                f"registry lock {self.lock_name!r} was broken while this gate held it "
                f"(silent for more than {self.lease_s:.0f} s); nothing was changed by this step"
            )

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=self.lease_s)
        if not self._end(self.token):
            log.warning("gate_lock_was_broken", lock=self.lock_name)
        self._remove_old_markers()

    def _remove_old_markers(self) -> None:
        from mlflow.exceptions import MlflowException

        cutoff_ms = (time.time() - MARKER_MAX_AGE_S) * 1000
        try:
            markers = self.client.search_registered_models(
                filter_string=f"name LIKE '{self.lock_name}.ended-%'", max_results=200
            )
            for marker in markers:
                if marker.creation_timestamp and marker.creation_timestamp < cutoff_ms:
                    self.client.delete_registered_model(marker.name)
        except MlflowException:
            pass  # tidying only: the next release tries again

    def __enter__(self) -> RegistryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        try:
            self.release()
        except Exception as error:  # the server is gone: the lease runs out and the next gate breaks it
            if exc[0] is None:
                raise
            log.debug("gate_lock_release_failed", lock=self.lock_name, error=str(error).splitlines()[0][:200])
