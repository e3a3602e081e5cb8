"""Progress lines: done of total, rate and time left, at a steady pace."""

import logging

from avtokens.joblog import OnTerminal, TerminalFormat
from avtokens.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_logged_at_a_steady_pace_with_rate_and_time_left(caplog):
    clock = Clock()
    progress = Progress("clip.mp4 encode", 13_275, "frames", every=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="avtokens.progress"):
        for _ in range(30):  # 100 frames every 2 s
            clock.now += 2
            progress.advance(100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6  # every 10 s of 60
    assert lines[0] == "clip.mp4 encode: 500 of 13,275 frames (4%), 50.0 frames/s, 4 min 16 s left"
    assert lines[-1] == "clip.mp4 encode: 3,000 of 13,275 frames (23%), 50.0 frames/s, 3 min 26 s left"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="avtokens.progress"):
        clock.now += 1
        progress.advance(13_275 - 3_000)  # the end is always logged
    assert caplog.records[-1].getMessage().endswith("(100%), 217.6 frames/s, done")


def test_seconds_of_media_are_shown_as_real_time_and_an_estimate_never_passes_100_percent(caplog):
    clock = Clock()
    progress = Progress("audio encode", 60.0, "s", every=0, clock=clock)
    with caplog.at_level(logging.INFO, logger="avtokens.progress"):
        clock.now += 2
        progress.advance(30.0)
        clock.now += 2
        progress.advance(31.0)  # more than the estimate
    assert caplog.records[0].getMessage() == "audio encode: 30.0 of 60.0 s (50%), 15.0x real time, 2 s left"
    assert caplog.records[1].getMessage() == "audio encode: 61.0 of 61.0 s (100%), 15.2x real time, done"


def test_a_job_that_is_over_quickly_says_nothing_on_the_terminal_and_a_long_one_to_the_end(caplog):
    clock = Clock()
    shown = OnTerminal()
    with caplog.at_level(logging.INFO, logger="avtokens.progress"):
        quick = Progress("clip.mp4 encode", 100, "frames", every=10, clock=clock)
        clock.now += 3
        quick.advance(100)
        long = Progress("episode.mp4 encode", 100, "frames", every=10, clock=clock)
        for _ in range(4):
            clock.now += 5
            long.advance(25)
    lines = [(record.getMessage().split(":")[0], shown.filter(record)) for record in caplog.records]
    assert lines == [("clip.mp4 encode", False), ("episode.mp4 encode", True), ("episode.mp4 encode", True)]
    assert TerminalFormat().format(caplog.records[-1]).endswith("(100%), 5.0 frames/s, done")
