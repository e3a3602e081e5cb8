"""A job's log lines: all go to the job's log file; warnings, errors and progress lines also
to the terminal (a job's stderr, on a local run). `extra=TERMINAL` or `extra=JOB_LOG_ONLY` on a
log call says otherwise for one line."""

from __future__ import annotations

import logging
import os

TERMINAL = {"terminal": True}
JOB_LOG_ONLY = {"terminal": False}
# Set in a job's environment by the run's terminal (avtokens.terminal), which names a failed job's
# reason itself, from the job's log: the job's last line then goes to its log only.
FAILURES_ON_TERMINAL = {"AVTOKENS_TERMINAL": "names-failed-jobs"}


def job_failure() -> dict:
    """`extra=` for the line a job fails with."""
    named = all(os.environ.get(key) == value for key, value in FAILURES_ON_TERMINAL.items())
    return JOB_LOG_ONLY if named else {}


class OnTerminal(logging.Filter):
    """Warnings and errors, and lines marked TERMINAL; not those marked JOB_LOG_ONLY."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "terminal", record.levelno >= logging.WARNING)


class TerminalFormat(logging.Formatter):
    """`WARNING <message>`, `ERROR <message>`; a progress line as it is."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else f"{record.levelname} {message}"


def warn_stand_in(log: logging.Logger, path, made: str) -> None:
    """The job's log says that `path` holds stand-in weights, whose `made` (tokens, codes) carry
    no meaning; not the terminal, where every job of a run would repeat it (the run's end says
    it once)."""
    log.warning("%s holds stand-in weights: its %s carry no meaning", path, made, extra=JOB_LOG_ONLY)
