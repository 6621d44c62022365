"""What a person sees of a kfp.local run: one line per task start and end (with its key outputs), a progress bar
per training stage and for scoring; everything kfp.local prints (executor inputs, streamed task logs) goes to a
log file instead.

kfp.local 2.17.3 prints both its own log lines and every task's streamed output to `sys.stdout` (its logging
handler is made on the current `sys.stdout` when a task starts, kfp/local/logging_utils.py; subprocess lines are
`print`ed, kfp/local/subprocess_task_handler.py `run_local_subprocess`, whose `text=True` pipe turns tqdm's
carriage returns into lines). `FollowableOutput` stands in for `sys.stdout` during the run and reads those lines.
"""

from __future__ import annotations

import io
import re
import sys
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TASK_START = re.compile(r"Executing task '(?P<task>[^']+)'")
TASK_END = re.compile(r"Task '(?P<task>[^']+)' finished with status (?P<status>\w+)")
TASK_OUTPUTS = re.compile(r"Task '(?P<task>[^']+)' outputs:")
OUTPUT_VALUE = re.compile(r"^\s+(?P<key>\w+): '(?P<value>.*)'$")
# a dict output (each step's `result`): kfp.local prints its Python repr (logging_utils.make_log_lines_for_outputs)
OUTPUT_DICT = re.compile(r"^\s+(?P<key>\w+): (?P<value>\{.*\})$")
PIPELINE_END = re.compile(r"Pipeline '(?P<pipeline>[^']+)' finished with status (?P<status>\w+)")
TRAIN_PROGRESS = re.compile(r"(?P<desc>train \w+):\s+\d+%\|.*?\|\s*(?P<done>\d+)/(?P<total>\d+)")
SCORING = re.compile(r"\b(scoring_split|scoring_text)\b")
# the outputs worth a glance; hashes are shortened
KEY_OUTPUTS = (
    "Output",
    "reason",
    "data_hash",
    "checkpoint_hash",
    "base_components_hash",
    "report_uri",
    "action",
    "version",
    "champion",
    "reasons",
)


def _dict_values(text: str) -> dict[str, str]:
    """The values of a printed dict output, each as text (a list joined by '; '); {} when it is not a literal.
    A non-finite metric prints as a bare `nan` or `inf`, no literal: read as None."""
    import ast

    try:
        value = ast.literal_eval(re.sub(r"(?<=: )-?(nan|inf)(?=[,}])", "None", text))
    except (ValueError, SyntaxError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        str(key): "; ".join(map(str, item)) if isinstance(item, list) else str(item)
        for key, item in value.items()
        if item is not None
    }


def _short(value: str) -> str:
    if re.fullmatch(r"(sha256:)?[0-9a-f]{32,}", value):
        return value.removeprefix("sha256:")[:12]
    return value if len(value) <= 100 else value[:97] + "..."


class FollowableOutput(io.TextIOBase):
    """A text stream: every line to `log`, a digest of it to `screen` (see the module docstring)."""

    def __init__(self, log: TextIO, screen: TextIO | None = None, bars: bool = True) -> None:
        self.log, self.screen, self.bars = log, screen or sys.__stdout__, bars
        self._pending = ""
        self._task: str | None = None
        self._started = 0.0
        self._outputs: dict[str, str] | None = None
        self._ended: tuple[str, str, float] | None = None
        self._bar: tqdm | None = None
        self._bar_desc = ""
        self._task_lines: list[str] = []
        self.failed_tasks: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()

    def close_view(self) -> None:
        if self._pending:
            self._line(ANSI.sub("", self._pending))
            self._pending = ""
        self._finish_task()
        self.log.flush()

    # -- one line ----------------------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        text = f"{time.strftime('%H:%M:%S')} {message}"
        if self._bar is not None:
            self._bar.write(text, file=self.screen)
        else:
            print(text, file=self.screen, flush=True)

    def _line(self, line: str) -> None:
        self.log.write(line + "\n")
        if self._outputs is not None:
            match = OUTPUT_VALUE.match(line)
            if match:
                self._outputs[match["key"]] = match["value"]
                return
            if match := OUTPUT_DICT.match(line):
                self._outputs.update(_dict_values(match["value"]))
                return
            if not line.strip() or line.startswith(" "):
                return  # artifact reprs and blank lines inside the outputs block
            self._finish_task()
        if match := TASK_START.search(line):
            self._finish_task()
            self._task, self._started, self._task_lines = match["task"], time.monotonic(), []
            self._say(f"{self._task}: started")
        elif match := TASK_END.search(line):
            self._ended = (match["task"], match["status"], time.monotonic() - self._started)
            self._close_bar()
            if match["status"] != "SUCCESS":
                self.failed_tasks.append(match["task"])
                self._finish_task()
        elif TASK_OUTPUTS.search(line):
            self._outputs = {}
        elif match := PIPELINE_END.search(line):
            self._finish_task()
            self._say(f"pipeline {match['pipeline']}: {match['status']}")
        else:
            self._task_lines = (self._task_lines + [line])[-30:]
            self._progress(line)

    def _progress(self, line: str) -> None:
        if not self.bars or self._task is None:
            return
        if match := TRAIN_PROGRESS.search(line):
            desc, done, total = f"{self._task} {match['desc']}", int(match["done"]), int(match["total"])
            if self._bar is None or self._bar_desc != desc:
                self._close_bar()
                self._bar = tqdm(total=total, desc=desc, unit="step", file=self.screen, dynamic_ncols=True)
                self._bar_desc = desc
            self._bar.update(done - self._bar.n)
        elif SCORING.search(line):
            desc = f"{self._task} scoring"
            if self._bar is None or self._bar_desc != desc:
                self._close_bar()
                self._bar = tqdm(desc=desc, unit="set", file=self.screen, dynamic_ncols=True)
                self._bar_desc = desc
            self._bar.update(1)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_desc = None, ""

    def _finish_task(self) -> None:
        self._close_bar()
        if self._ended is None:
            self._outputs = None
            return
        task, status, seconds = self._ended
        outputs = self._outputs or {}
        shown = " ".join(f"{key}={_short(outputs[key])}" for key in KEY_OUTPUTS if outputs.get(key))
        self._say(f"{task}: {status} in {seconds:.1f} s" + (f"  {shown}" if shown else ""))
        if status != "SUCCESS":
            for line in self._task_lines[-12:]:
                print(f"    {line.strip()}", file=self.screen)
        self._ended, self._outputs = None, None


def default_log_path(data_home: Path) -> Path:
    return data_home / "pipeline-logs" / f"run-local-{time.strftime('%Y%m%d-%H%M%S')}.log"
