"""`schedule`, `--disable`/`--enable`/`--delete` and the server's clock in the interleavings a reviewer found lossy.

Each test forces one interleaving with the fake server's pauses (tests/fake_kfp_server.py): the test thread holds
one call at a chosen request and acts as the concurrent caller meanwhile, then releases it. Each guards a rule of
pipelines/schedules.py:
- a failed listing after the create never deletes the new run (it may be the newest, the one every caller keeps);
- an operator's `--disable`/`--enable` made while a `schedule` is replacing the run is kept on the replacement;
- a server whose clock ranks an old run above every new one fails the call (exit 2) instead of "replaced by a
  concurrent call";
- enabling or disabling a run whose deletion is half done (500 on KFP 2.17) counts as done once it is gone.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types

import threading

import pytest

from tests import test_cluster_schedule_convergence as convergence
from tests.fake_kfp_server import Failure, Pause
from tests.test_cluster_schedule_convergence import NAME, started, wait_for
from tests.test_cluster_submission import TOKEN, cli

environment = convergence.environment  # the fixture, shared (`package` comes from conftest.py)
SCHEDULE = ("schedule", "--name", NAME, "--pipeline-name", "small-training")


def in_thread(call) -> tuple[threading.Thread, dict]:
    """Run `call()` in a thread; the dict gets its "result" or "error"."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = call()
        except Exception as error:  # reported to the test
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_a_failed_listing_after_the_create_never_deletes_the_newest_run(environment, package, capsys):
    """B creates the newest run, then is held; meanwhile A (same settings) finds B's run, keeps it, deletes the
    older one and exits 0. B's listing then fails: the former clean-up deleted B's run and left no schedule."""
    server = started(counting=True)
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 3 * * 0") == 0
        server.pauses = [Pause("POST", "/recurringruns", 2, after_effect=True, limit=1)]
        b, outcome = in_thread(lambda: cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 4 * * 0"))
        wait_for(lambda: server.pauses[0].held == 1)  # B's run exists; B has not heard back
        (newest,) = [r for r in server.recurring_runs_named(NAME) if "0 0 4" in str(r["trigger"])]
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 4 * * 0") == 0  # A: unchanged, deletes the old
        server.failures.append(Failure("GET", "/recurringruns"))  # B's listing after its create
        server.pauses[0].barrier.wait()
        b.join(timeout=60)
        assert outcome == {"result": 2}
        assert "run schedule again" in capsys.readouterr().err
        assert server.recurring_runs_named(NAME) == [newest]
    finally:
        server.stop()


@pytest.mark.parametrize("change", ["disable", "enable"])
def test_a_mode_change_racing_a_schedule_is_kept(environment, package, change):
    """Every serial order of `--<change>` and `schedule --cron Y` ends in the changed mode. Here the change runs
    right after the schedule's first listing (which decided the new run's mode); the schedule then replaces the
    run the operator changed."""
    from pipelines.kfp_connection import connect
    from pipelines.schedules import change_schedule

    server = started(counting=True)
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 3 * * 0") == 0
        if change == "enable":
            change_schedule(connect(server.url, token=TOKEN), NAME, "disable")
        server.pauses = [Pause("GET", "/recurringruns", 2, after_effect=True, limit=1)]
        call, outcome = in_thread(lambda: cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 4 * * 0"))
        wait_for(lambda: server.pauses[0].held == 1)  # the schedule has listed, not heard back
        result = change_schedule(connect(server.url, token=TOKEN), NAME, change)
        assert result.action == f"{change}d"
        server.pauses[0].barrier.wait()
        call.join(timeout=60)
        assert outcome == {"result": 0}
        (only,) = server.recurring_runs_named(NAME)
        assert only["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 0"
        assert only["mode"] == ("DISABLE" if change == "disable" else "ENABLE")
    finally:
        server.stop()


def test_a_mode_change_acts_again_on_a_run_created_after_its_listing(environment, package):
    """`--disable` lists, a `schedule` then replaces the run (enabled, as it listed it), and the disable acts on
    the run it listed, now deleted: it lists again and disables the replacement."""
    from pipelines.kfp_connection import connect
    from pipelines.schedules import change_schedule

    server = started(counting=True)
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 3 * * 0") == 0
        (old,) = server.recurring_runs_named(NAME)
        server.pauses = [Pause("POST", f"/recurringruns/{old['recurring_run_id']}:disable", 2)]
        call, outcome = in_thread(lambda: change_schedule(connect(server.url, token=TOKEN), NAME, "disable"))
        wait_for(lambda: server.pauses[0].held == 1)  # the disable has listed [old]; it has not acted
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 4 * * 0") == 0  # replaces old, enabled
        server.pauses[0].barrier.wait()
        call.join(timeout=60)
        (only,) = server.recurring_runs_named(NAME)
        assert outcome["result"].recurring_run_ids == (old["recurring_run_id"], only["recurring_run_id"])
        assert only["mode"] == "DISABLE" and only["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 0"
    finally:
        server.stop()


def test_a_server_clock_that_went_back_fails_the_call(environment, package, capsys):
    """The server's clock steps back an hour (or the old run came from a replica whose clock was ahead): every
    new run ranks below the old one. The call must not report "replaced by a concurrent call" with exit 0 while
    the old settings stay: it exits 2 naming the clock, and leaves the old run alone."""
    now = [1_800_000_000]
    server = started(clock=lambda: now[0])
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 3 * * 0") == 0
        (before,) = server.recurring_runs_named(NAME)
        now[0] -= 3600
        capsys.readouterr()
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 4 * * 0") == 2
        (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert "clock" in error and before["recurring_run_id"] in error
        assert server.recurring_runs_named(NAME) == [before]
        assert len(server.requests_to("POST", "/recurringruns")) == 4  # the first call's, then 3 attempts
    finally:
        server.stop()


@pytest.mark.parametrize("change", ["disable", "enable"])
def test_a_mode_change_of_a_run_being_deleted_counts_as_done(environment, package, change):
    """KFP 2.17 answers 500 to enabling or disabling a run whose deletion is half done (the fake imitates it:
    module docstring); the call lists again, finds the run gone and reports success."""
    import kfp_server_api

    from pipelines.kfp_connection import connect
    from pipelines.schedules import change_schedule

    server = started(counting=True)
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*SCHEDULE, "--host", server.url, "--cron", "0 0 3 * * 0") == 0
        (run,) = server.recurring_runs_named(NAME)
        run_id = run["recurring_run_id"]
        server.pauses = [Pause("DELETE", f"/recurringruns/{run_id}", 2, mid_delete=True)]
        deleter, _ = in_thread(lambda: change_schedule(connect(server.url, token=TOKEN), NAME, "delete"))
        wait_for(lambda: server.pauses[0].held == 1)  # the ScheduledWorkflow is gone, the row not yet
        client = connect(server.url, token=TOKEN)
        with pytest.raises(kfp_server_api.ApiException) as answered:  # what the server answers meanwhile
            getattr(client, f"{change}_recurring_run")(run_id)
        assert answered.value.status == 500

        def release_after_the_500() -> None:
            wait_for(lambda: len(server.requests_to("POST", f"/recurringruns/{run_id}:{change}")) == 2)
            server.pauses[0].barrier.wait()

        releaser, _ = in_thread(release_after_the_500)
        result = change_schedule(client, NAME, change)
        releaser.join(timeout=60)
        deleter.join(timeout=60)
        assert result.action == f"{change}d" and result.recurring_run_ids == (run_id,)
        assert server.recurring_runs_named(NAME) == []
    finally:
        server.stop()
