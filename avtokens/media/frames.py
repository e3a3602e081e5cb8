"""Video frames through ffmpeg pipes in raw RGB: decoded onto the video's timeline window by
window (`read_frame_windows`) and encoded to H.264 (`VideoWriter`), so a video is never held in
memory and ffmpeg decodes and encodes on its own cores while the model runs."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from avtokens import AvTokensError
from avtokens.background import prefetched
from avtokens.media.ffmpeg import FfmpegLog, decoding_threads, encoding_threads, ffmpeg_exe
from avtokens.media.probe import ratio_text

log = logging.getLogger(__name__)


def decoding_args(frames) -> list[str]:
    """ffmpeg's output options that decode `frames` (a `VideoInfo`, or the `Picture` planned
    for it): its chosen stream, the picture's filters, and the timeline. A constant-rate
    stream is decoded onto its constant-rate timeline (`-fps_mode cfr`): a frame that cannot
    be decoded (a damaged file) becomes a repeat of the frame before, so every later frame
    keeps its time. A variable-rate stream gives its frames as they come. A picture with a
    timeline of its own (a preset's targets) gets it from its filters, and at most as many
    frames as it holds."""
    stream = getattr(frames, "video_stream", None)
    filters = [getattr(frames, "filters", "")]
    rate, timeline = getattr(frames, "frame_rate", None), getattr(frames, "timeline", None)
    if rate or timeline:  # the timeline starts at the first frame, not at the start of the file
        start = getattr(frames, "video_start", None)
        # Not STARTPTS: ffmpeg builds the filters again where the frames change size, and
        # STARTPTS would then start the rest of the timeline at 0 again.
        filters.insert(0, "setpts=PTS-STARTPTS" if start is None else f"setpts=round(PTS-{start!r}/TB)")
    if timeline:
        frame_timing = ["-fps_mode", "passthrough", *timeline.output_args]
    elif rate:
        frame_timing = ["-fps_mode", "cfr", "-r", ratio_text(rate, "/")]
    else:
        frame_timing = ["-fps_mode", "passthrough"]
    chain = ",".join(f for f in filters if f)
    return [
        "-map",
        "0:v:0" if stream is None else f"0:{stream}",
        *(["-vf", chain] if chain else []),
        *frame_timing,
    ]


def read_frame_windows(path: Path | str, frames, window: int, prefetch: int = 2, decoded: dict | None = None,
                       threads: int | None = None) -> Iterator[np.ndarray]:  # fmt: skip
    """Yield the video's frames as uint8 arrays [n, H, W, 3], `window` frames at a time
    (the last one shorter). A background thread keeps up to `prefetch` windows ready.
    `frames`: the video's `VideoInfo` (frames as decoded) or an `avtokens.picture.Picture`
    planned for it (frames converted as the tokenizer sees them, one frame per frame). A file
    whose frames are another size is an error (unless the byte counts happen to agree).
    `decoded`: a dict that gets, once all frames are read, how many frames were filled in
    ("filled_frames") and dropped ("dropped_frames") to keep a constant-rate timeline.
    `threads`: ffmpeg's decoder and filter threads (`decoding_threads`), a job's own count."""
    width, height = frames.width, frames.height
    frame_bytes = width * height * 3
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-progress", "pipe:2",
           *decoding_threads(threads), "-copyts", "-i", str(path), *decoding_args(frames),
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ffmpeg_log = FfmpegLog(proc.stderr)

    def raw_windows():
        while True:
            buf = np.empty((window, height, width, 3), np.uint8)
            view, got = memoryview(buf).cast("B"), 0
            while got < len(view) and (n := proc.stdout.readinto(view[got:])):
                got += n
            # A partial last frame from an ffmpeg that succeeded: the frames are another size.
            if got % frame_bytes and got < len(view) and proc.wait() == 0:
                raise AvTokensError(f"{path}: its frames are not {width}x{height} (decoding ended in one)")
            if got // frame_bytes:
                yield buf[: got // frame_bytes]
            if got < len(view):
                return

    try:
        yield from prefetched(raw_windows(), depth=prefetch, cancel=proc.kill)
        if proc.wait() != 0:
            raise AvTokensError(f"{path}: decoding failed: {ffmpeg_log.finish().reason}")
        ffmpeg_log.finish()
        if decoded is not None:
            decoded.update(filled_frames=ffmpeg_log.counter("dup_frames"),
                           dropped_frames=ffmpeg_log.counter("drop_frames"))  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        ffmpeg_log.finish()
        proc.stderr.close()


# x264's threaded lookahead decides frame types by how far the encoding threads have got:
# with 2 threads, 4 of 15 encodes of the same 320x180 frames differed. Run in the encoding
# thread instead, it gives the same bytes every time (30 of 30 at 2, 3 and 4 threads), for
# 0 to 8% more time (2 cores, 720p).
REPEATABLE_X264 = "sync-lookahead=0"


class VideoWriter:
    """Encode RGB frames to an H.264 mp4 at an exact frame rate through an ffmpeg pipe,
    with an optional `comment` tag in its metadata and the pixels' aspect ratio (non-square
    pixels: players stretch the frames to the display aspect ratio). A callable `comment` is
    read when the first frames arrive, so it can say what made them (a model's first call can
    still change its record: a compile failure falls back to eager). `threads`: x264's and
    the pixel conversion's threads, a job's own count; the file's bytes are the same on every
    run with the same count, frames and settings, and differ between counts."""

    def __init__(self, path, width: int, height: int, fps: Fraction, crf: int, preset: str,
                 comment: str | Callable[[], str] | None = None,
                 sample_aspect_ratio: Fraction = Fraction(1), threads: int | None = None):  # fmt: skip
        sar = sample_aspect_ratio
        # 4:2:0 needs even sizes; odd-sized sources keep their size in 4:4:4.
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.path, self.comment = path, comment
        self.cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y", *decoding_threads(threads),
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0",
                    *(["-vf", f"setsar={sar.numerator}/{sar.denominator}"] if sar != 1 else []),
                    "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", pix_fmt,
                    *encoding_threads(threads), "-x264-params", REPEATABLE_X264]  # fmt: skip
        self.proc = None
        self.frames = 0

    def _started(self) -> subprocess.Popen:
        if self.proc is None:
            comment = self.comment() if callable(self.comment) else self.comment
            tag = ["-metadata", f"comment={comment}"] if comment else []
            output = ["-movflags", "+faststart", "-f", "mp4", str(self.path)]
            self.proc = subprocess.Popen(
                [*self.cmd, *tag, *output], stdin=subprocess.PIPE, stderr=subprocess.PIPE
            )
            self.log = FfmpegLog(self.proc.stderr)
        return self.proc

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames [n, H, W, 3]."""
        try:
            self._started().stdin.write(np.ascontiguousarray(frames).data)
        except BrokenPipeError:
            self.close()
        self.frames += len(frames)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self.proc is not None:  # the caller failed: stop ffmpeg without masking the original error
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        proc = self._started()
        if not proc.stdin.closed:
            proc.stdin.close()
        if proc.wait() != 0:
            raise AvTokensError(f"{self.path}: video encoding failed: {self.log.finish().reason}")


class DecodedVideo(NamedTuple):
    """What decoding a video's frames onto its timeline gives (`decoding_args`)."""

    frame_count: int
    filled_frames: int  # places without a decodable frame of their own, each the frame before again
    dropped_frames: int  # frames that fell on a place of the timeline another frame had

    def warn(self, source) -> None:
        if self.filled_frames:
            log.warning(
                "%s: %d of the %d frames of its timeline have no picture of their own (lost, or "
                "not decodable: a damaged file?); each repeats the frame before, so every later "
                "frame keeps its time",
                source, self.filled_frames, self.frame_count,
            )  # fmt: skip
