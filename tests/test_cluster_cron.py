"""Cron strings for Kubeflow recurring runs: 6 fields, seconds first, robfig/cron syntax; mistakes named."""

from __future__ import annotations

import pytest

from pipelines.cron import CronError, validate_cron


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 3 * * 0",
        "0 0 3 * * SUN",
        "0 */15 * * * *",
        "30 0 4 1,15 * ?",
        "0 0 2 ? JAN-MAR MON-FRI",
        "0 0 0 1 */2 *",
        "@daily",
        "@weekly",
        "@every 6h",
        "@every 1h30m",
    ],
)
def test_valid_schedules_are_accepted(cron):
    assert validate_cron(cron) == cron


def test_whitespace_is_normalised():
    assert validate_cron("  0  0 3 * *   0 ") == "0 0 3 * * 0"


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        (
            "0 3 * * 0",
            "has 5 fields; Kubeflow recurring runs take 6, seconds first, e.g. '0 0 3 * * 0' "
            "(as 6 fields: '0 0 3 * * 0')",
        ),
        ("", "has 0 fields"),
        ("0 0 0 3 * * 0", "has 7 fields"),
        ("60 0 3 * * 0", "second 60 is outside 0-59"),
        ("0 0 3 32 * *", "day of month 32 is outside 1-31"),
        ("0 0 3 * 13 *", "month 13 is outside 1-12"),
        ("0 0 3 * * 7", "day of week 7 is outside 0-6"),
        ("0 0 ? * * *", "'?' is only allowed for day of month and day of week"),
        ("0 0 5-2 * * *", "hour range '5-2' runs backwards"),
        ("0 */0 * * * *", "minute step '0' must be a positive number"),
        ("0 0 3,,4 * * *", "empty item in the hour field"),
        ("@fortnightly", "unknown descriptor"),
        ("@every soon", "unknown descriptor"),
    ],
)
def test_mistakes_are_named(cron, message):
    with pytest.raises(CronError) as error:
        validate_cron(cron)
    assert message in str(error.value) and "\n" not in str(error.value)
