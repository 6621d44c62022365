"""`schedule` under conflict: racing calls, both `--follow-latest` server behaviours, and failures mid-call.

Racers are threads in this process, each with its own kfp client, released at one instant by a barrier; the fake
server's pauses force the interleaving that matters: every racer's create is made before any racer hears back
(`Pause(..., after_effect=True)`), so each lists every racer's run afterwards. With the former rule (each caller
keeps the oldest run with *its own* settings and deletes the rest) two conflicting calls deleted each other's
runs and left none; the rule every caller now applies (keep the newest run of the name, delete the rest) leaves
exactly one. The fake keeps real, whole-second creation times, so racers' runs usually tie and are ordered by id.
"""

# no `from __future__ import annotations`: kfp reads the component annotations as types

import itertools
import threading
import time

import pytest

from tests.fake_kfp_server import Failure, FakeKfpHttpServer, Pause
from tests.test_cluster_submission import TOKEN, cli

NAME = "weekly-retrain"
ROUNDS = 3


@pytest.fixture
def environment(monkeypatch, tmp_path):
    from kfp import Client

    monkeypatch.setattr(Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    for name in ("ABSTRACTINATOR_KFP_TOKEN_FILE", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABSTRACTINATOR_KFP_TOKEN", TOKEN)


def started(**options) -> FakeKfpHttpServer:
    """A fake on the real clock (racers' runs tie within a second), or `counting=True`: one second per object,
    so that the latest version is unambiguous."""
    if options.pop("counting", False):
        options["clock"] = itertools.count(1_800_000_000).__next__
    return FakeKfpHttpServer(required_token=TOKEN, **options).start()


def race(server: FakeKfpHttpServer, settings: list[dict]) -> list:
    """One `schedule` call per entry of `settings` (keyword arguments), released at one instant; returns each
    call's ScheduleResult or the exception it raised. Released in a later second than the previous round's
    survivor was made: a survivor in the same second may outrank every racer's run by id, and then each racer
    creates again a second later with no pause forcing the order of those creates, so a racer may report a run
    that a racer listing after it replaced (the same-second rule has its own test below)."""
    from pipelines.kfp_connection import connect
    from pipelines.schedules import schedule

    last_made = max((job["created_at_s"] for job in server.state.jobs.values()), default=0)
    while int(time.time()) <= last_made:
        time.sleep(0.02)
    clients = [connect(server.url, token=TOKEN) for _ in settings]
    start = threading.Barrier(len(settings), timeout=60)
    results: list = [None] * len(settings)

    def racer(index: int) -> None:
        start.wait()
        try:
            results[index] = schedule(clients[index], NAME, pipeline_name="small-training", **settings[index])
        except Exception as error:  # reported to the test, which asserts there is none
            results[index] = error

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(len(settings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def creates_answered_together(racers: int) -> list[Pause]:
    """The worst interleaving: every racer lists before any creates (so every racer creates), and every racer's
    (first) recurring run exists before any racer's create is answered and it lists again. The listings are held
    after they are made, not before: released before, a racer's thread that the machine schedules late could
    still list after another racer's create (and find its settings `unchanged`)."""
    return [
        Pause("GET", "/recurringruns", racers, after_effect=True, limit=racers),
        Pause("POST", "/recurringruns", racers, after_effect=True, limit=racers),
    ]


def test_conflicting_schedules_released_at_once_leave_exactly_one(environment, package):
    racers = 2
    server = started()
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        for round_number in range(ROUNDS):
            server.pauses = creates_answered_together(racers)
            settings = [
                {"cron": f"0 {racer} 3 * * 0", "parameters": [f"steps={100 * round_number + racer}"]}
                for racer in range(racers)
            ]
            results = race(server, settings)
            assert not [r for r in results if isinstance(r, Exception)], results
            (only,) = server.recurring_runs_named(NAME)
            winners = [r for r in results if r.recurring_run_ids == (only["recurring_run_id"],)]
            assert len(winners) == racers  # every caller reports the one that remains
            actions = sorted(r.action for r in results)
            assert actions.count("replaced by a concurrent call") == racers - 1, actions
            expected = {f"0 {i} 3 * * 0": {"steps": 100 * round_number + i} for i in range(racers)}
            assert only["runtime_config"]["parameters"] == expected[only["trigger"]["cron_schedule"]["cron"]]
        # every racer created
        assert len(server.requests_to("POST", "/recurringruns")) >= racers * ROUNDS
    finally:
        server.stop()


def test_identical_schedules_released_at_once_leave_exactly_one(environment, package):
    racers = 3
    server = started()
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        for round_number in range(ROUNDS):
            server.pauses = creates_answered_together(racers)
            results = race(server, [{"cron": "0 0 3 * * 0", "parameters": [f"steps={round_number}"]}] * racers)
            assert not [r for r in results if isinstance(r, Exception)], results
            (only,) = server.recurring_runs_named(NAME)
            assert only["runtime_config"]["parameters"] == {"steps": round_number}
            assert {r.recurring_run_ids for r in results} == {(only["recurring_run_id"],)}
        assert len(server.requests_to("POST", "/recurringruns")) >= racers * ROUNDS
    finally:
        server.stop()


@pytest.mark.parametrize("resolves_latest", [False, True], ids=["2.5-and-later", "before-2.5"])
def test_follow_latest_converges_against_both_server_behaviours(environment, package, capsys, resolves_latest):
    server = started(resolves_latest=resolves_latest, counting=True)
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        follow = ("schedule", "--host", server.url, "--name", NAME, "--pipeline-name", "small-training")
        follow += ("--cron", "@weekly", "--follow-latest", "--param", "steps=7")
        capsys.readouterr()
        actions = []
        for _ in range(3):
            assert cli(*follow) == 0, capsys.readouterr().err
            out, err = capsys.readouterr()
            actions.append(out.splitlines()[0])
            assert len(server.recurring_runs_named(NAME)) == 1
        assert actions == [f"schedule {NAME}: created"] + [f"schedule {NAME}: unchanged"] * 2
        (run,) = server.recurring_runs_named(NAME)
        latest = server.latest_version(run["pipeline_version_reference"]["pipeline_id"])
        if resolves_latest:  # the server pinned what was the latest version, and the call says so
            assert run["pipeline_version_reference"]["pipeline_version_id"] == latest["pipeline_version_id"]
            assert "note: this KFP backend (before 2.5) pinned the latest version" in err
        else:
            assert "pipeline_version_id" not in run["pipeline_version_reference"]
            assert "note:" not in err
        # a new version: followed by the server, or re-pinned by the next call; one run either way
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        assert cli(*follow) == 0
        out = capsys.readouterr().out
        assert (f"schedule {NAME}: replaced" if resolves_latest else f"schedule {NAME}: unchanged") in out
        (run,) = server.recurring_runs_named(NAME)
        newest = server.latest_version(run["pipeline_version_reference"]["pipeline_id"])
        assert run["pipeline_version_reference"].get("pipeline_version_id") == (
            newest["pipeline_version_id"] if resolves_latest else None
        )
    finally:
        server.stop()


@pytest.mark.parametrize("follow_latest", [False, True], ids=["pinned", "follow-latest"])
def test_a_failure_after_the_create_fails_the_call_and_the_next_call_settles(
    environment, package, capsys, follow_latest
):
    """The listing after the create fails: the call exits 2 and keeps the run it made (deleting it could delete
    the newest run, the one a concurrent call kept: tests/test_cluster_schedule_races.py), saying to run again;
    the next call keeps the newest run and deletes the rest."""
    server = started()
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        base = ("schedule", "--host", server.url, "--name", NAME, "--pipeline-name", "small-training")
        extra = ("--follow-latest",) if follow_latest else ()
        assert cli(*base, "--cron", "0 0 3 * * 0", *extra) == 0
        server.failures.append(Failure("GET", "/recurringruns", skip=1))  # the call's second listing fails
        capsys.readouterr()
        assert cli(*base, "--cron", "0 0 4 * * 0", *extra) == 2
        err = capsys.readouterr().err
        (error,) = [line for line in err.splitlines() if line.startswith("error:")]
        assert "HTTP 503" in error and "after creating recurring run" in error and "run schedule again" in error
        assert len(server.recurring_runs_named(NAME)) == 2
        assert cli(*base, "--cron", "0 0 4 * * 0", *extra) == 0
        (only,) = server.recurring_runs_named(NAME)
        assert only["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 0"
    finally:
        server.stop()


def test_a_schedule_deleted_by_a_concurrent_call_fails_the_call(environment, package, capsys):
    """`schedule --delete` runs between a `schedule`'s create and its listing: nothing of the name is left,
    which the `schedule` call reports (exit 2) instead of claiming a schedule."""
    from pipelines.kfp_connection import connect
    from pipelines.schedules import change_schedule

    # the create is held (after it is made) until the deleter below has deleted and joins the barrier
    server = started(pauses=[Pause("POST", "/recurringruns", 2, after_effect=True, limit=1)])
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        deleter = threading.Thread(
            target=lambda: (
                wait_for(lambda: server.state.jobs),
                change_schedule(connect(server.url, token=TOKEN), NAME, "delete"),
                server.pauses[0].barrier.wait(),
            )
        )
        deleter.start()
        code = cli(
            "schedule", "--host", server.url, "--name", NAME, "--pipeline-name", "small-training", "--cron", "@weekly"
        )
        deleter.join(timeout=60)
        assert code == 2
        assert "was deleted by a concurrent call while it was being scheduled" in capsys.readouterr().err
        assert server.recurring_runs_named(NAME) == []
    finally:
        server.stop()


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_replacement_made_in_the_same_second_wins_over_the_run_it_replaces(environment, package):
    """Creation times have whole seconds, and ties go by id: the fake hands out ever smaller ids, so a
    replacement made in the same second ranks below the run it replaces. The call creates again in the next
    second instead of reporting a concurrent call and leaving the old settings in place."""
    from pipelines.kfp_connection import connect
    from pipelines.schedules import schedule

    descending = (f"run-{n:04d}" for n in range(9999, 0, -1))
    server = started(recurring_run_ids=lambda: next(descending))
    try:
        assert cli("submit", "--host", server.url, "--package", str(package)) == 0
        client = connect(server.url, token=TOKEN)
        for _ in range(3):  # until both creates fall in one second (the first try, unless the machine stalls)
            while time.time() % 1 > 0.2:
                time.sleep(0.01)
            schedule(client, NAME, "0 0 3 * * 0", pipeline_name="small-training")
            first_second = server.state.jobs[next(reversed(server.state.jobs))]["created_at_s"]
            creates = len(server.requests_to("POST", "/recurringruns"))
            result = schedule(client, NAME, "0 0 4 * * 0", pipeline_name="small-training")
            tied = server.requests_to("POST", "/recurringruns")[creates:]
            (only,) = server.recurring_runs_named(NAME)
            assert result.action == "replaced" and result.recurring_run_ids == (only["recurring_run_id"],)
            assert only["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * 0"
            if len(tied) > 1:  # the first replacement tied with the run it replaced, and lost; the next won
                assert server.state.jobs[only["recurring_run_id"]]["created_at_s"] > first_second
                break
            schedule(client, NAME, "0 0 5 * * 0", pipeline_name="small-training")  # not in one second: again
        else:
            pytest.fail("no two creates fell in one second")
    finally:
        server.stop()
