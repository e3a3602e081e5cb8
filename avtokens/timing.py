"""A video stream's timing from its packets' timestamps: exact frame rate, duration, start and
how far the frames stray from a constant-rate timeline.

Pure arithmetic on numbers `media.probe` reads from ffmpeg (the presentation timestamps in
time-base ticks, the time base and the rate the stream header states), so it is tested
without ffmpeg.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple


class VideoTiming(NamedTuple):
    fps: Fraction  # exact when the timestamps are regular
    packet_count: int
    duration: float  # seconds: packet_count frames at fps
    start: float  # seconds from the start of the file (which ffmpeg puts at 0) to the first frame
    # Largest distance (seconds, to the microsecond) between a frame's own timestamp and its
    # place on the constant-rate timeline at fps from the first frame.
    deviation: float

    @property
    def variable_rate(self) -> bool:
        """More than half a frame off the constant-rate timeline somewhere."""
        return self.deviation > 0.5 / self.fps


def video_timing(
    pts: list[int], first_duration: int, time_base: Fraction | None, stated_fps: str | None
) -> VideoTiming:
    """The timing of a stream whose packets carry presentation timestamps `pts` (ticks of
    `time_base`, in any order), the first packet in file order lasting `first_duration`
    ticks. The rate is measured from the first to the last timestamp; with a single
    timestamp from the packet's duration; without a time base (or a duration) it is the
    rate the stream header states (`stated_fps`, e.g. "29.97"), else 25."""
    if not pts:
        raise ValueError("no timestamps")
    pts = sorted(pts)
    count = len(pts)
    if time_base and pts[-1] > pts[0]:
        intervals = count - 1
        fps = frame_rate(intervals / ((pts[-1] - pts[0]) * time_base), intervals, time_base)
    elif time_base and first_duration > 0:
        fps = frame_rate(1 / (first_duration * time_base), 1, time_base)
    else:
        fps = Fraction(stated_fps).limit_denominator(1001) if stated_fps else Fraction(25)
    duration = float(count / fps)
    if not time_base:
        return VideoTiming(fps, count, duration, 0.0, 0.0)
    deviation = max(abs((t - pts[0]) * time_base - i / fps) for i, t in enumerate(pts))
    return VideoTiming(fps, count, duration, float(pts[0] * time_base), round(float(deviation), 6))


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
