"""Keeping one named retraining schedule (a KFP recurring run) on a Kubeflow Pipelines cluster.

`schedule` keeps exactly one recurring run of a given name: with one that already matches (cron, pipeline
version, parameters, experiment) it does nothing (`unchanged`); otherwise it creates the new one and then applies
the rule every call applies the same way: keep the newest run of the name (creation time, then id), delete the
rest (create first, so a failure never leaves no schedule; a failed listing after the create leaves the new run
for the next call to settle). Concurrent calls converge on one run whatever their settings and interleaving (see
`schedule`); deleting, enabling or disabling a run that is already gone counts as done. A disabled schedule stays
disabled unless `enable` is asked, and an operator's `change_schedule` racing a `schedule` is not lost.
Recurring runs use max_concurrency 1 and no catch-up: a retraining that missed its slot runs once.

The API's shapes this module relies on (kubeflow/pipelines 2.17.0, backend/src/apiserver/server/): a recurring
run pinned to a version comes back with the default service account filled in, one following the latest version
comes back with a reference without a version id (api_converter.go `toApiRecurringRun`); `created_at` has whole
seconds.

Which version a schedule runs: by default the latest version *at the time `schedule` runs* (pinned by id; rerun
`schedule` after each `submit` to re-point it: it is idempotent). `follow_latest=True` sends a pipeline reference
without a version id, which KFP backends with kubeflow/pipelines PR #11560 (2.5 and later) resolve to the latest
version at every trigger (the server stores the reference without a version id and returns it so, so a second
`schedule --follow-latest` is `unchanged`); older backends (2.0-2.4) resolve it once, at creation, and pin that
version, which `schedule` reports in a note. kfp 2.17.3's `Client.create_recurring_run`
refuses a missing version id before sending anything, so both modes go through the generated API
(`client.recurring_runs`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from pipelines.cron import CronError, validate_cron
from pipelines.kfp_connection import ClusterError, api_errors
from pipelines.submission import (
    compiled_pipeline_root,
    experiment_id,
    find_pipeline_id,
    latest_version,
    name_filter,
    parse_parameters,
)

MAX_PAGES = 100
TIE_ATTEMPTS = 3  # creates of one `schedule` call that may lose to an older run created in the same second
CHANGE_ROUNDS = 5  # listings of one `change_schedule` call that may find runs made or changed concurrently
GONE_CHECK_DELAYS_S = (0.0, 0.5, 2.0)  # listings after a 500 from enable/disable: is the run being deleted?


@dataclass(frozen=True)
class ScheduleResult:
    name: str
    # created | replaced | replaced by a concurrent call | unchanged | disabled | enabled | deleted | absent
    action: str
    recurring_run_ids: tuple[str, ...]
    pipeline_version_id: str | None = None
    note: str | None = None  # something the user should know (printed on stderr)


# -- lookups --------------------------------------------------------------------------------------------------------
def recurring_runs_named(client, name: str, namespace: str | None = None) -> list:
    """Every recurring run called `name` (all pages)."""
    found, token = [], ""
    kwargs = {"namespace": namespace} if namespace else {}
    for _ in range(MAX_PAGES):
        with api_errors(f"listing recurring runs named {name!r}"):
            response = client.list_recurring_runs(page_token=token, page_size=50, filter=name_filter(name), **kwargs)
        found += [r for r in response.recurring_runs or [] if r.display_name == name]
        token = response.next_page_token or ""
        if not token:
            break
    return found


# -- schedule -------------------------------------------------------------------------------------------------------
FOLLOWS_LATEST = "(latest version at each trigger)"  # in the description of a run made with follow_latest


def _plain(value: Any) -> Any:
    """Parameters as the API gives them back: protobuf Values hold every number as a double, so 100 and 100.0
    are the same value."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _version_id(run) -> str | None:
    reference = run.pipeline_version_reference
    return (reference.pipeline_version_id or None) if reference else None


def _settings(run, compare_service_account: bool, latest_version_id: str | None = None) -> tuple:
    """What makes two recurring runs the same schedule (mode and ids aside). The server fills in a default service
    account (`pipeline-runner`) when none was sent, so it only counts when one was asked for. A run made to follow
    the latest version that a backend before 2.5 pinned to the version that is still the latest counts as
    following it (`latest_version_id`; see `schedule`)."""
    reference = run.pipeline_version_reference
    cron = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
    config = run.runtime_config
    version = _version_id(run)
    if version is not None and version == latest_version_id and FOLLOWS_LATEST in (run.description or ""):
        version = None
    return (
        cron,
        reference.pipeline_id if reference else None,
        version,
        json.dumps(_plain((config.parameters if config else None) or {}), sort_keys=True),
        (config.pipeline_root if config else None) or None,
        str(run.max_concurrency),
        bool(run.no_catchup),
        run.experiment_id or None,
        (run.service_account or None) if compare_service_account else None,
    )


def _enabled(run) -> bool:
    return str(getattr(run.mode, "value", run.mode)) == "ENABLE"


def _creation_order(run) -> tuple:
    """The order every caller ranks runs by: creation time, then id (the API keeps whole seconds, so runs made in
    the same second are ordered by id). Runs the server returns without a time rank first."""
    created = run.created_at.timestamp() if run.created_at else float("-inf")
    return created, run.recurring_run_id


def _delete_if_present(client, run_id: str) -> None:
    """Delete a recurring run; one already gone (a concurrent `schedule` removed it) counts as deleted."""
    import kfp_server_api

    with api_errors(f"deleting the replaced recurring run {run_id}"), contextlib.redirect_stdout(sys.stderr):
        try:
            client.delete_recurring_run(run_id)
        except kfp_server_api.ApiException as error:
            if error.status != 404:
                raise


def _change_if_present(client, run_id: str, action: str, name: str, namespace: str | None) -> bool:
    """`disable`, `enable` or `delete` one recurring run; False when it is gone (a concurrent call deleted it).

    KFP 2.17 deletes a recurring run's ScheduledWorkflow before its database row, and enabling or disabling one
    whose ScheduledWorkflow is gone answers 500, not 404 (backend/src/apiserver/resource/resource_manager.go at
    2.17.0: `DeleteJob` deletes the ScheduledWorkflow, then the row; `ChangeJobMode` reads the row, then the
    Get or Patch of the ScheduledWorkflow fails with NotFound, returned as `NewInternalServerError`). So a 500
    is followed by a few listings: the id gone counts as done, the id still there is the error."""
    import kfp_server_api

    method = {
        "disable": client.disable_recurring_run,
        "enable": client.enable_recurring_run,
        "delete": client.delete_recurring_run,
    }[action]
    with api_errors(f"{action} recurring run {run_id}"), contextlib.redirect_stdout(sys.stderr):
        try:
            method(run_id)
            return True
        except kfp_server_api.ApiException as error:
            if error.status == 404:
                return False
            if error.status != 500 or action == "delete":
                raise
            for delay in GONE_CHECK_DELAYS_S:
                time.sleep(delay)
                if run_id not in {r.recurring_run_id for r in recurring_runs_named(client, name, namespace)}:
                    return False
            raise


def _create_and_list(client, desired, name: str, namespace: str | None) -> tuple[Any, list]:
    """Create `desired`, then list the runs of the name again. If that listing fails, the new run stays and the
    call fails: deleting it could delete the newest run, the one every concurrent call keeps (one that already
    deleted its own older run would leave none); the next `schedule` call applies the rule."""
    with api_errors(f"creating recurring run {name!r}"), contextlib.redirect_stdout(sys.stderr):
        created = client.recurring_runs.recurring_run_service_create_recurring_run(recurring_run=desired)
    try:
        return created, recurring_runs_named(client, name, namespace)
    except ClusterError as error:
        raise ClusterError(
            f"{error} (after creating recurring run {created.recurring_run_id}; older runs of the name may remain "
            "beside it: run schedule again, which keeps the newest and deletes the rest)"
        ) from None


def _adopt_concurrent_mode(client, own, replaced: list, first_modes: dict, name: str, namespace) -> None:
    """A `--disable` or `--enable` that acted on the schedule after this call's first listing changed the run
    this call replaces, not this call's new run: the newest replaced run that was listed first with another mode
    gives its mode to `own` (before it is deleted). A change made later reaches `own` itself (`change_schedule`
    lists again after acting)."""
    if not replaced:
        return
    previous = max(replaced, key=_creation_order)
    was_enabled = first_modes.get(previous.recurring_run_id)
    if was_enabled is None or was_enabled == _enabled(previous) or _enabled(own) == _enabled(previous):
        return
    _change_if_present(client, own.recurring_run_id, "enable" if _enabled(previous) else "disable", name, namespace)


def schedule(
    client,
    name: str,
    cron: str,
    *,
    pipeline_name: str,
    parameters: list[str] | None = None,
    experiment: str = "abstractinator",
    namespace: str | None = None,
    follow_latest: bool = False,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    enable: bool = False,
) -> ScheduleResult:
    """Converge on exactly one recurring run called `name`, with these settings unless a concurrent call's win.

    The rule every call applies the same way: of the runs of the name it lists, keep the newest (creation time,
    then id: `_creation_order`) and delete the rest. A call whose newest listed run already has the requested
    settings creates nothing (`unchanged`); otherwise it creates one and lists again before applying the rule.
    Whatever the interleaving, one run remains: the newest run ever made is never deleted (only a caller that
    listed a newer one deletes a run), and of any two runs the creator that listed later saw both and deleted the
    older. The API keeps whole seconds, so a run made in the same second as an older one may rank below it (ties
    go by id): a call whose new run lost to a run it had listed before creating applies the rule and creates
    again in the next second (any number of creates keeps the argument above true); after `TIE_ATTEMPTS` such
    losses the server's clock is to blame (it went back, or the old run's replica's is ahead) and the call fails,
    its own runs deleted and the old run kept. A call whose own new run lost to a concurrent call's newer one
    reports `replaced by a concurrent call` (that call's settings win); a call that finds no run at all after
    creating one (a concurrent `--delete`) fails; a call whose listing after the create fails keeps its new run
    (it may be the newest, which a concurrent call may have kept while deleting its own) and fails.

    A disabled schedule stays disabled (a replacement is created disabled) unless `enable`. The mode is decided
    from the first listing; a `--disable` or `--enable` that changed the replaced run after it is copied onto the
    new run (`_adopt_concurrent_mode`), and one that acts later reaches the new run itself (`change_schedule`
    lists again after acting).

    `follow_latest` against a backend before 2.5 (which resolves a reference without a version id to the latest
    version and pins it: resource_manager.go `fetchPipelineVersionFromPipelineSpec` at kubeflow/pipelines 2.4.0)
    gives a run pinned to the latest version; a later identical call is `unchanged` while that version is still
    the latest and re-points it otherwise, and `ScheduleResult.note` says so."""
    import kfp_server_api as api

    try:
        cron = validate_cron(cron)
    except CronError as error:
        raise ClusterError(str(error)) from None
    pipeline_id = find_pipeline_id(client, pipeline_name, namespace)
    if pipeline_id is None:
        raise ClusterError(f"no pipeline named {pipeline_name!r}: upload it first (abstractinator pipeline submit)")
    version = latest_version(client, pipeline_id)
    typed = parse_parameters(
        parameters or [], version.pipeline_spec if isinstance(version.pipeline_spec, dict) else None
    )
    if isinstance(version.pipeline_spec, dict):
        pipeline_root = pipeline_root or compiled_pipeline_root(version.pipeline_spec)
    exp_id = experiment_id(client, experiment, namespace)
    existing = recurring_runs_named(client, name, namespace)
    keep_disabled = bool(existing) and not enable and not any(_enabled(r) for r in existing)
    desired = api.V2beta1RecurringRun(
        display_name=name,
        description=f"scheduled retraining of {pipeline_name} "
        + (FOLLOWS_LATEST if follow_latest else f"version {version.display_name}"),
        experiment_id=exp_id,
        mode=api.RecurringRunMode.DISABLE if keep_disabled else api.RecurringRunMode.ENABLE,
        pipeline_version_reference=api.V2beta1PipelineVersionReference(
            pipeline_id=pipeline_id,
            pipeline_version_id=None if follow_latest else version.pipeline_version_id,
        ),
        runtime_config=api.V2beta1RuntimeConfig(parameters=typed, pipeline_root=pipeline_root),
        trigger=api.V2beta1Trigger(cron_schedule=api.V2beta1CronSchedule(cron=cron)),
        max_concurrency="1",
        no_catchup=True,
        service_account=service_account,
    )
    compare_service_account = service_account is not None
    wanted = _settings(desired, compare_service_account)

    def same(run) -> bool:
        return _settings(run, compare_service_account, version.pipeline_version_id) == wanted

    first_modes = {run.recurring_run_id: _enabled(run) for run in existing}
    newest = max(existing, key=_creation_order) if existing else None
    action = "unchanged"
    if newest is None or not same(newest):
        had_runs = bool(existing)
        for attempt in range(TIE_ATTEMPTS):
            seen_before = {run.recurring_run_id for run in existing}
            created, existing = _create_and_list(client, desired, name, namespace)
            if not existing:
                raise ClusterError(
                    f"recurring run {name!r} was deleted by a concurrent call while it was being scheduled: "
                    "run schedule again"
                )
            newest = max(existing, key=_creation_order)
            if newest.recurring_run_id == created.recurring_run_id:
                action = "replaced" if had_runs else "created"
                break
            action = "replaced by a concurrent call"
            if newest.recurring_run_id not in seen_before:
                break
            # A run that existed before this call's create ranks above it: within one (whole) second by the id
            # tie-break, or because the server's clock went back (or the old run's replica's clock was ahead).
            # Apply the rule (which deletes this call's run), then create again a second later.
            for other in existing:
                if other.recurring_run_id != newest.recurring_run_id:
                    _delete_if_present(client, other.recurring_run_id)
            existing = [newest]
            if attempt == TIE_ATTEMPTS - 1:
                raise ClusterError(
                    f"recurring run {newest.recurring_run_id}, made before this call, still ranks above each of "
                    f"the {TIE_ATTEMPTS} runs it created (creation time {newest.created_at}): the API server's "
                    "clock ties or went back; its old settings remain: check the server's clock, then run "
                    "schedule again"
                )
            time.sleep(1.05 - time.time() % 1)
        if action != "replaced by a concurrent call":
            replaced = [r for r in existing if r.recurring_run_id != newest.recurring_run_id]
            _adopt_concurrent_mode(client, newest, replaced, first_modes, name, namespace)
    for other in existing:
        if other.recurring_run_id != newest.recurring_run_id:
            _delete_if_present(client, other.recurring_run_id)
    if enable and not _enabled(newest) and action in ("unchanged", "replaced by a concurrent call"):
        _change_if_present(client, newest.recurring_run_id, "enable", name, namespace)
        action = "enabled"
    pinned = _version_id(newest)
    note = None
    if follow_latest and pinned is not None and FOLLOWS_LATEST in (newest.description or ""):
        note = (
            f"this KFP backend (before 2.5) pinned the latest version {pinned} instead of following it: "
            "run schedule again after each submit"
        )
    return ScheduleResult(name, action, (newest.recurring_run_id,), pinned, note)


def change_schedule(client, name: str, action: str, namespace: str | None = None) -> ScheduleResult:
    """`disable`, `enable` or `delete` every recurring run called `name`. Deleting nothing is not an error (the
    state asked for holds); disabling or enabling nothing is.

    A `schedule` call racing this one may create a run after this call's listing (made with the mode it listed
    first) and delete the runs this call changed: so this call lists again after acting and acts on every run it
    has not acted on yet or whose mode is not the one asked for, until a listing shows nothing to do
    (`CHANGE_ROUNDS` listings at most). A run deleted concurrently counts as done (see `_change_if_present`)."""
    if action not in ("disable", "enable", "delete"):
        raise ClusterError(f"unknown schedule change {action!r}")
    handled: list[str] = []
    for _ in range(CHANGE_ROUNDS):
        listed = recurring_runs_named(client, name, namespace)
        if not listed and not handled:
            if action == "delete":
                return ScheduleResult(name, "absent", ())
            raise ClusterError(f"no recurring run named {name!r} to {action}")
        pending = [
            run
            for run in listed
            if run.recurring_run_id not in handled or (action != "delete" and _enabled(run) != (action == "enable"))
        ]
        if not pending:
            return ScheduleResult(name, f"{action}d", tuple(handled))
        for run in pending:
            _change_if_present(client, run.recurring_run_id, action, name, namespace)
            if run.recurring_run_id not in handled:
                handled.append(run.recurring_run_id)
    raise ClusterError(
        f"the recurring runs named {name!r} kept changing while they were being {action}d "
        f"({CHANGE_ROUNDS} listings): run it again"
    )
