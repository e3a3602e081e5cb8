"""A video stream's timing from its packets' timestamps: exact frame rate, duration, start and
how far the frames stray from a constant-rate timeline.

Pure arithmetic on numbers `media.probe` reads from ffmpeg (the presentation timestamps in
time-base ticks, the time base and the rate the stream header states), so it is tested
without ffmpeg.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import accumulate
from statistics import median_low
from typing import NamedTuple


class VideoTiming(NamedTuple):
    fps: Fraction  # exact when the timestamps are regular
    packet_count: int
    duration: float  # seconds: the frames of the constant-rate timeline at fps
    start: float  # seconds: the first frame's timestamp, on the container's own clock
    # Largest distance (seconds, to the microsecond) between a frame's own timestamp and its
    # place on the constant-rate timeline at fps from the first frame.
    deviation: float

    @property
    def variable_rate(self) -> bool:
        """More than half a frame off the constant-rate timeline somewhere."""
        return self.deviation > 0.5 / self.fps


def video_timing(
    pts: list[int],
    first_duration: int,
    time_base: Fraction | None,
    stated_fps: Fraction | str | None,
    packet_count: int | None = None,
) -> VideoTiming:
    """The timing of a stream whose packets carry presentation timestamps `pts` (ticks of
    `time_base`, in any order), the first packet in file order lasting `first_duration`
    ticks. The rate is measured from the first to the last timestamp; with a single
    timestamp from the packet's duration; without a time base (or a duration) it is the
    rate the stream header states (`stated_fps`, e.g. 30000/1001 or "29.97"), else 25.
    Where frames are missing from a constant-rate stream (`frame_places`), the rate is that
    of the frames around them, and the timeline keeps their places.

    `packet_count`: the stream's packets, when some carry no timestamp (normal in MPEG
    program streams, where only some packets do): the frames between two timestamps are then
    unknown, so the rate is the stated one, and the deviation is how far a timestamp lies from
    the nearest frame of that rate's timeline."""
    if not pts:
        raise ValueError("no timestamps")
    pts = sorted(pts)
    count = max(packet_count or 0, len(pts))
    if not time_base:
        fps = stated_rate(stated_fps)
        return VideoTiming(fps, count, float(count / fps), 0.0, 0.0)
    start = float(pts[0] * time_base)
    if count > len(pts):
        fps = stated_rate(stated_fps)
        offsets = [(t - pts[0]) * time_base * fps for t in pts]  # in frames from the first
        deviation = max(abs(offset - round(offset)) for offset in offsets) / fps
        return VideoTiming(fps, count, float(count / fps), start, round(float(deviation), 6))
    places = frame_places(pts) or list(range(count))
    if pts[-1] > pts[0]:
        fps = frame_rate(places[-1] / ((pts[-1] - pts[0]) * time_base), places[-1], time_base)
    elif first_duration > 0:
        fps = frame_rate(1 / (first_duration * time_base), 1, time_base)
    else:
        fps = stated_rate(stated_fps)
    deviation = max(abs((t - pts[0]) * time_base - i / fps) for i, t in zip(places, pts, strict=True))
    frames = places[-1] + 1  # more than the packets where frames are missing
    return VideoTiming(fps, count, float(frames / fps), start, round(float(deviation), 6))


def frame_places(pts: list[int]) -> list[int] | None:
    """Each sorted timestamp's frame number from the first, where the stream runs at one rate
    with frames missing: every interval between neighbours a whole number of the typical
    (median) interval, to a quarter of it, and some more than one. None where no frame is
    missing or the rate varies."""
    intervals = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    typical = median_low(intervals) if intervals else 0
    if typical <= 0:
        return None
    steps = [round(d / typical) for d in intervals]
    off_grid = any(abs(d / typical - n) > 0.25 for d, n in zip(intervals, steps, strict=True))
    if min(steps) < 1 or max(steps) < 2 or off_grid:
        return None
    return list(accumulate(steps, initial=0))


def stated_rate(stated_fps: Fraction | str | None) -> Fraction:
    """The rate a stream header states (to a denominator of at most 1001), else 25."""
    return Fraction(stated_fps).limit_denominator(1001) if stated_fps else Fraction(25)


def frame_rate(mean: Fraction, intervals: int, time_base: Fraction) -> Fraction:
    """The exact rate behind a measured mean rate. Containers store timestamps rounded to
    their time base (Matroska: 1 ms), so 24 fps reads as 23.99 and 29.97 as 29.968: take the
    nearest usual rate (an integer, or an integer x 1000/1001) if it explains the timestamps
    to within one time-base tick over the whole stream; else keep the mean (variable rate)."""
    whole = round(mean)
    candidates = [Fraction(k) for k in (whole - 1, whole, whole + 1) if k > 0]
    candidates += [Fraction(k * 1000, 1001) for k in (whole, whole + 1) if k > 0]
    best = min(candidates, key=lambda c: abs(c - mean))
    if abs(intervals / best - intervals / mean) <= time_base:
        return best
    return mean.limit_denominator(1001)
