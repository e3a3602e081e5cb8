"""Progress a person can follow in a job's log: done of total, rate, time left, at a steady pace."""

from __future__ import annotations

import logging
import time

from avtokens.joblog import JOB_LOG_ONLY, TERMINAL

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Progress:
    """Logs "`what`: 1,210 of 13,275 frames (9%), 84.2 frames/s, 2 min 23 s left" every `every`
    seconds while work advances, and once at the end. `unit` "s" counts seconds of media and
    gives the rate as a multiple of real time. `total` may be an estimate (a container's packet
    count): the count shown never claims more than 100%. The lines go to the terminal too
    (avtokens.joblog), the last one only after others did: a job that is over within `every`
    seconds says nothing there."""

    def __init__(self, what: str, total: float, unit: str, every: float = 10.0, clock=time.monotonic):
        self.what, self.total, self.unit, self.every, self.clock = what, total, unit, every, clock
        self.done = 0.0
        self.started = self.last = clock()
        self.shown = False  # a line went to the terminal

    def advance(self, amount: float) -> None:
        self.done += amount
        now = self.clock()
        if now - self.last >= self.every or self.done >= self.total:
            self.shown = self.shown or now - self.last >= self.every
            self.last = now
            log.info("%s", self.line(now), extra=TERMINAL if self.shown else JOB_LOG_ONLY)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        total = max(self.total, self.done)
        share = f"{self.done / total:.0%}" if total else "100%"
        if self.unit == "s":
            amount = f"{self.done:,.1f} of {total:,.1f} s"
            speed = f"{rate:.1f}x real time"
        else:
            amount = f"{self.done:,.0f} of {total:,.0f} {self.unit}"
            speed = f"{rate:.1f} {self.unit}/s"
        left = f"{_duration((total - self.done) / rate)} left" if rate > 0 and self.done < total else "done"
        return f"{self.what}: {amount} ({share}), {speed}, {left}"
