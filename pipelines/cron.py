"""Checking a Kubeflow Pipelines cron expression before it is sent.

KFP's ScheduledWorkflow controller parses schedules with robfig/cron: six fields, seconds first
(`second minute hour day-of-month month day-of-week`, e.g. "0 0 3 * * 0" = Sundays 03:00:00 UTC), each a `*`, `?`
(day fields only), a number or name, a range `a-b`, a step `/n`, or a comma list of those; or a descriptor
(`@daily`, `@weekly`, `@every 6h`). A five-field Unix cron is the common mistake: it would be read shifted by one
field, so it is refused with a message that says how to fix it.
"""

from __future__ import annotations

import re

from configs.errors import UserError

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
# (name, low, high, names for low.., `?` allowed)
FIELDS = [
    ("second", 0, 59, None, False),
    ("minute", 0, 59, None, False),
    ("hour", 0, 23, None, False),
    ("day of month", 1, 31, None, True),
    ("month", 1, 12, MONTHS, False),
    ("day of week", 0, 6, WEEKDAYS, True),
]
DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


class CronError(UserError):
    """A schedule KFP would reject or misread; the message names the field and the fix."""


def _value(text: str, low: int, high: int, names: list[str] | None, field: str, cron: str) -> int:
    if names and text.upper() in names:
        return low + names.index(text.upper())
    if not text.isdigit():
        raise CronError(f"cron {cron!r}: {field} {text!r} is not a number" + (f" or one of {names}" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"cron {cron!r}: {field} {value} is outside {low}-{high}")
    return value


def _check_field(text: str, spec: tuple, cron: str) -> None:
    field, low, high, names, question_allowed = spec
    for part in text.split(","):
        if not part:
            raise CronError(f"cron {cron!r}: empty item in the {field} field {text!r}")
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) == 0):
            raise CronError(f"cron {cron!r}: {field} step {step!r} must be a positive number")
        if base == "?":
            if not question_allowed:
                raise CronError(f"cron {cron!r}: '?' is only allowed for day of month and day of week")
            continue
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        first = _value(start, low, high, names, field, cron)
        if dash:
            last = _value(end, low, high, names, field, cron)
            if last < first:
                raise CronError(f"cron {cron!r}: {field} range {base!r} runs backwards")


def validate_cron(cron: str) -> str:
    """`cron` stripped, if KFP accepts it; raises CronError naming the problem otherwise."""
    text = " ".join(cron.split())
    if text.startswith("@"):
        if text in DESCRIPTORS:
            return text
        if text.startswith("@every ") and GO_DURATION.match(text.removeprefix("@every ")):
            return text
        raise CronError(f"cron {cron!r}: unknown descriptor (use {sorted(DESCRIPTORS)} or '@every 6h')")
    fields = text.split(" ") if text else []
    if len(fields) != 6:
        hint = f" (as 6 fields: '0 {text}')" if len(fields) == 5 else ""
        raise CronError(
            f"cron {cron!r} has {len(fields)} fields; Kubeflow recurring runs take 6, seconds first, "
            f"e.g. '0 0 3 * * 0'{hint}"
        )
    for value, spec in zip(fields, FIELDS, strict=True):
        _check_field(value, spec, cron)
    return text
