"""A job's log lines: all go to the job's log file; warnings, errors and progress lines also
to the terminal (a job's stderr, on a local run). `extra=TERMINAL` or `extra=JOB_LOG_ONLY` on a
log call says otherwise for one line."""

from __future__ import annotations

import logging
import os

TERMINAL = {"terminal": True}
JOB_LOG_ONLY = {"terminal": False}
# Who says why a job failed, on the terminal of a run: the run's terminal (avtokens.terminal, which
# sets this in the jobs' environment, reads the reason from the job's log and names the video and
# the fix), or the job itself, the default, for any other terminal, and for a program that reads
# the jobs' lines and sets it so (tokenize_video).
FAILURES_NAMED_BY = "AVTOKENS_FAILURES_NAMED_BY"
BY_TERMINAL, BY_JOBS = "terminal", "jobs"


def job_failure() -> dict:
    """`extra=` for the line a job fails with."""
    return JOB_LOG_ONLY if os.environ.get(FAILURES_NAMED_BY) == BY_TERMINAL else {}


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
