"""What a run shows on the terminal: Snakemake's progress, the jobs' warnings and progress
lines, and a line for each failure as it happens, with what to do about it; Snakemake's whole
account (job blocks, reasons, tracebacks) goes to its log file, named on the last line.

A failed job is named in one line, from the error line of its own log (so also for a cluster
job, whose output is not this terminal): a video that fails in several jobs (every job that
reads a broken file) once, as `ERROR video <name>: <reason>` and the fix. The end of the run
names again the failures that other lines followed, so that its last lines say what went wrong.

This is a Snakemake logger plugin (`--logger avtokens`, which the workflow profile
`profiles/default` sets), found by Snakemake as the package `snakemake_logger_plugin_avtokens`
beside this one. Snakemake writes its log file whatever the terminal shows. A dry run,
`--verbose` and `--debug-dag` are shown in full, as Snakemake shows them: there the job blocks
are what was asked for.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from avtokens.joblog import BY_TERMINAL, FAILURES_NAMED_BY
from avtokens.storage import local_copy

# Snakemake's own lines kept on the terminal of a run; the rest of its INFO lines go to its log
# only. Outside a run (`--lint`, `--unlock`, ...) its INFO lines are shown but for its planning's.
_SHOWN_INFO = ("Nothing to be done", "Will exit after finishing", "Terminating processes", "Report created",
               "Complete log")  # fmt: skip
_PLANNING = ("Config file", "Assuming unrestricted shared filesystem", "Building DAG of jobs",
             "Creating report", "Adding ", "Loading script code")  # fmt: skip
# Snakemake's account of a failed run, replaced on the terminal by the failures' own lines.
_RUN_FAILED = "Exiting because a job execution failed"
_SOME_JOBS_FAILED = "At least one job did not complete successfully"
# A job's error line in its log, as avtokens.rule writes it: "<date> <time> ERROR <message>".
_ERROR_LINE = re.compile(r"^\S+ \S+ ERROR (.+)$")
# Failures named again at the end of a run, at most; the complete log has them all.
SHOWN_FAILURES = 5
# How Snakemake names a job's file in a storage provider: "s3://bucket/key (send to storage)".
_STORAGE_NOTE = re.compile(r" \((send to|retrieve from) storage\)$")


@dataclass
class LogHandlerSettings(LogHandlerSettingsBase):
    """No settings: the terminal's brevity is the point; the log file has everything."""


@dataclass
class FailedJob:
    rule: str
    wildcards: dict
    inputs: list[str]
    logs: list[str]

    def __post_init__(self) -> None:
        self.inputs = [_STORAGE_NOTE.sub("", str(path)) for path in self.inputs]
        self.logs = [_STORAGE_NOTE.sub("", str(path)) for path in self.logs]

    def reason(self) -> str | None:
        """The job's last error line, from its log (an object's: from its local copy), with an
        object's local copy named as the object."""
        for log in self.logs:
            try:
                lines = Path(local_copy(log)).read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            errors = [match[1] for line in lines if (match := _ERROR_LINE.match(line))]
            if errors:
                reason = errors[-1]
                for path in self.inputs:
                    copy = local_copy(path)
                    reason = (
                        f"{path}{reason[len(copy) :]}" if copy != path and reason.startswith(copy) else reason
                    )
                return reason
        return None

    def blamed_input(self, reason: str | None) -> str | None:
        """The input file (a video) that `reason` says is at fault, if it names one."""
        return next((path for path in self.inputs if reason and reason.startswith(f"{path}: ")), None)

    def line(self) -> tuple[str, str | None]:
        """The failure's line, and the input file it blames (if any): `ERROR video <name>:
        <reason>` and the fix, `ERROR <reason>` for the run's verdict (which says what to do
        itself), else `ERROR <rule> (<wildcards>) failed: <reason>`."""
        reason = self.reason()
        blamed = self.blamed_input(reason)
        if blamed is not None:
            video = self.wildcards.get("video")
            fix = "Fix or replace the file, or remove its row from the sheet, and run again"
            return f"ERROR {f'video {video}: ' if video else ''}{reason}. {fix}", blamed
        if reason is not None and self.rule.endswith("check_run"):  # also as a module's prefix_check_run
            return f"ERROR {reason}", None
        wildcards = ", ".join(f"{key}={value}" for key, value in self.wildcards.items())
        what = f"{self.rule} ({wildcards})" if wildcards else self.rule
        said = f": {reason}" if reason else (f"; its log: {self.logs[0]}" if self.logs else "")
        return f"ERROR {what} failed{said}", None


class LogHandler(LogHandlerBase):
    """The terminal's handler; Snakemake's default one is left out while a plugin writes to the
    stream."""

    def __post_init__(self) -> None:
        settings = self.common_settings
        self.stream = sys.stdout if settings.stdout else sys.stderr
        self.full = None
        if settings.dryrun or settings.verbose or settings.debug_dag:
            from snakemake.logging import ColorizingTextHandler, DefaultFilter, DefaultFormatter

            self.full = ColorizingTextHandler(nocolor=settings.nocolor, stream=self.stream)
            self.full.addFilter(DefaultFilter(settings.quiet, settings.debug_dag, settings.verbose,
                                              settings.dryrun, settings.printshellcmds))  # fmt: skip
            self.full.setFormatter(DefaultFormatter(settings.quiet, settings.show_failed_logs))
        # For the jobs: this terminal names their failures, unless whoever started the run reads the
        # jobs' own lines and said so.
        self.names_failures = (
            self.full is None and os.environ.setdefault(FAILURES_NAMED_BY, BY_TERMINAL) == BY_TERMINAL
        )
        self.executing = False  # the workflow runs jobs: its other INFO lines are its log's
        self.running = False  # jobs have started: a rule's exception is a failed job's
        self.jobs: dict[int, tuple[str, dict]] = {}  # job id: rule and wildcards
        self.failures: list[str] = []  # the lines of the failures so far
        self.blamed: set[str] = set()  # input files a failure was blamed on
        self.trailing = 0  # failures' lines shown last, with no other line after them

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False

    def emit(self, record) -> None:
        if self.full is not None:
            self.full.handle(record)
            return
        if self.quiet_about("all") and record.levelname not in ("ERROR", "CRITICAL"):
            return
        for line in self.lines(record):
            self.stream.write(line + "\n")
        self.stream.flush()

    def lines(self, record) -> list[str]:
        """What the terminal shows of `record`."""
        event = getattr(record, "event", None)
        message = str(record.msg or "")
        if event == LogEvent.WORKFLOW_STARTED:
            self.executing = True
            return []
        if event == LogEvent.JOB_INFO:
            self.running = True
            self.jobs[record.jobid] = (record.rule_name, dict(record.wildcards or {}))
            return []
        if event == LogEvent.JOB_ERROR:
            if not self.names_failures:  # the job said why itself
                return []
            rule, wildcards = self.jobs.get(record.jobid, (record.rule_name, {}))
            return self.failure(FailedJob(rule, wildcards, list(record.input), list(record.log)))
        if event == LogEvent.ERROR:  # an exception, with Snakemake's account of where
            failed_job = self.running and getattr(record, "exception", "") == "RuleException"
            return self.shown([] if failed_job or _SOME_JOBS_FAILED in message else [message])
        if message.startswith(_RUN_FAILED):  # the run's end: the failures again, if they scrolled away
            return self.recap()
        if event == LogEvent.PROGRESS:
            if self.quiet_about("progress"):
                return []
            done, total = record.done, record.total
            return self.shown([f"{done} of {total} steps ({_percent(done, total)}) done"])
        if event == LogEvent.GROUP_ERROR:
            return self.shown([f"ERROR {message}"])
        if event is not None:  # job blocks, statistics, the run's header
            return []
        if record.levelname in ("WARNING", "ERROR", "CRITICAL") or message.startswith(_SHOWN_INFO):
            return self.shown([message])
        return [] if self.executing or message.startswith(_PLANNING) else [message]

    def quiet_about(self, what: str) -> bool:
        """Whether `--quiet` asked for no `what` (progress, all)."""
        from snakemake.logging import is_quiet_about

        return is_quiet_about(self.common_settings.quiet or set(), what)

    def shown(self, lines: list[str]) -> list[str]:
        if lines:
            self.trailing = 0
        return lines

    def failure(self, job: FailedJob) -> list[str]:
        """A failed job's line, unless a failure was blamed on the same input before."""
        line, blamed = job.line()
        if blamed is not None:
            if blamed in self.blamed:
                return []
            self.blamed.add(blamed)
        self.failures.append(line)
        self.trailing += 1
        return [line]

    def recap(self) -> list[str]:
        """The failures that other lines followed, named again after those that are the last
        lines already: every failure once at the end of the run."""
        earlier = self.failures[: len(self.failures) - self.trailing]
        lines = earlier[:SHOWN_FAILURES]
        if len(earlier) > SHOWN_FAILURES:
            lines.append(f"... and {len(earlier) - SHOWN_FAILURES} more (above, and in the complete log)")
        return lines


def _percent(done: int, total: int) -> str:
    """As Snakemake's own progress line: no 0% or 100% until it is so."""
    from snakemake.logging import format_percentage

    return format_percentage(done, total)
