"""Video and audio I/O through the ffmpeg binary of the imageio-ffmpeg wheel.

Frames stream through pipes in raw RGB, so a video is never held in memory, and the
ffmpeg processes decode and encode on their own cores while the model runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from avtokens import AvTokensError
from avtokens.background import prefetched
from avtokens.timing import VideoTiming, video_timing

log = logging.getLogger(__name__)

# Channel counts of the layouts ffmpeg names in its stream summary.
_LAYOUT_CHANNELS = {
    "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "quad": 4, "quad(side)": 4,
    "4.0": 4, "4.1": 5, "5.0": 5, "5.0(side)": 5, "5.1": 6, "5.1(side)": 6, "6.0": 6,
    "6.1": 7, "7.0": 7, "7.1": 8, "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8,
}  # fmt: skip


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], what: str, source: Path | str) -> bytes:
    """Run ffmpeg to completion; a failure becomes one line naming the file and the cause."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise AvTokensError(f"{source}: {what} failed: {_last_line(proc.stderr)}")
    return proc.stdout


def _last_line(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "ffmpeg gave no reason"


@dataclass(frozen=True)
class VideoInfo:
    """What the rest of the pipeline needs to know about a source file."""

    width: int  # as decoded, after any display rotation
    height: int
    fps: Fraction  # exact when the container's timestamps are regular
    packet_count: int  # video packets; the decoded frame count is counted while decoding
    duration: float  # seconds, from the video timestamps
    video_start: float  # seconds from the start of the file to the first video frame
    # Largest distance (seconds) between a frame's own timestamp and its place on the
    # constant-rate timeline the pipeline uses; more than half a frame means variable rate.
    timing_deviation: float
    variable_rate: bool
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    # How the stored frames are meant to be shown (the stream header's word, as ffmpeg reads it).
    sample_aspect_ratio: Fraction = Fraction(1)  # width of a stored pixel over its height
    field_order: str = "progressive"  # or "top first" / "bottom first": interlaced
    transfer: str | None = None  # transfer characteristic, e.g. bt709, smpte2084 (PQ), arib-std-b67 (HLG)
    primaries: str | None = None  # colour primaries, e.g. bt709, bt2020

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        d["sample_aspect_ratio"] = ratio_text(self.sample_aspect_ratio)
        return d


def ratio_text(value: Fraction) -> str:
    """An aspect ratio as metadata writes it, e.g. "8:9"."""
    return f"{value.numerator}:{value.denominator}"


def probe(path: Path | str) -> VideoInfo:
    """Read a video's size, exact frame rate and audio format without decoding it all."""
    path = Path(path)
    if path.is_dir():
        raise AvTokensError(f"{path}: is a folder, not a video file")
    try:
        with open(path, "rb") as file:
            empty = not file.read(1)
    except OSError as err:  # missing, permission denied, a dangling link, an I/O error
        raise AvTokensError(f"{path}: cannot be read ({err.strerror or err})") from None
    if empty:
        raise AvTokensError(f"{path}: file is empty")
    # One ffmpeg run (a process costs tens of milliseconds, a dataset has a million clips):
    # its log holds the input's summary; the video packets' timestamps go to stdout, and the
    # first decoded frame to a PPM file, whose header gives the size ffmpeg will deliver
    # (display rotation included).
    with tempfile.TemporaryDirectory(prefix="avtokens-probe-") as tmp:
        first_frame = Path(tmp, "first.ppm")
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", str(path),
             "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "pipe:1",
             "-map", "0:v:0", "-frames:v", "1", "-c:v", "ppm", "-f", "image2pipe", str(first_frame)],
            capture_output=True,
        )  # fmt: skip
        ppm = first_frame.read_bytes()[:64] if first_frame.exists() else b""
    log_text = proc.stderr.decode(errors="replace")
    summary = re.split(r"^(?:Stream mapping:|Output #)", log_text, maxsplit=1, flags=re.M)[0]
    if not re.search(r"Stream #\d+:\d+.*: Video: ", summary):
        reason = "no video stream" if "Stream #" in summary else _last_line(proc.stderr)
        raise AvTokensError(f"{path}: not a readable video ({reason})")
    if proc.returncode != 0:
        raise AvTokensError(f"{path}: reading the video failed: {_last_line(proc.stderr)}")
    fields = ppm.split()
    if len(fields) < 3 or fields[0] != b"P6":
        raise AvTokensError(f"{path}: no decodable video frame")
    width, height = int(fields[1]), int(fields[2])
    timing = _video_timing(path, proc.stdout.decode(), summary)
    picture = _picture_format(re.search(r"Stream #\d+:\d+.*: Video: (.*)", summary).group(1))
    audio = re.search(r"Stream #\d+:\d+.*: Audio: .*?, (\d+) Hz, ([^,]+)", summary)
    channels = None
    if audio:
        layout = audio.group(2).strip()
        counted = re.fullmatch(r"(\d+) channels.*", layout)
        channels = int(counted.group(1)) if counted else _LAYOUT_CHANNELS.get(layout)
    return VideoInfo(
        width=width,
        height=height,
        fps=timing.fps,
        packet_count=timing.packet_count,
        duration=timing.duration,
        video_start=timing.start,
        timing_deviation=timing.deviation,
        variable_rate=timing.variable_rate,
        has_audio=audio is not None,
        audio_rate=int(audio.group(1)) if audio else None,
        audio_channels=channels,
        **picture,
    )


def _picture_format(video_line: str) -> dict:
    """Sample aspect ratio, field order and colour of a stream from ffmpeg's summary line,
    e.g. `h264 (High), yuv420p10le(tv, bt2020nc/bt2020/smpte2084, top first), 720x480 [SAR 8:9 DAR 4:3]`
    (one colour name stands for matrix, primaries and transfer alike)."""
    sar = re.search(r"\[SAR (\d+):(\d+) DAR", video_line)
    details = re.search(r"\b\w+\((.*?)\)(?:,|$)", video_line)  # the pixel format's, e.g. yuv420p(...)
    order, primaries, transfer = "progressive", None, None
    for item in (x.strip() for x in details.group(1).split(",")) if details else ():
        if re.match(r"(top|bottom)( coded)? first", item):
            order = f"{item.split()[0]} first"
        elif item.count("/") == 2:  # matrix/primaries/transfer
            primaries, transfer = item.split("/")[1:]
        elif item not in ("tv", "pc", "progressive", "unknown") and re.fullmatch(r"[\w-]+", item):
            primaries = transfer = item
    return {
        "sample_aspect_ratio": Fraction(int(sar[1]), int(sar[2])) if sar and int(sar[1]) else Fraction(1),
        "field_order": order,
        "transfer": transfer,
        "primaries": primaries,
    }


def unusable_source(path: Path | str) -> str | None:
    """Why a listed source cannot be handed to a job at all ("no such file", "cannot be read
    (Permission denied)"), or None. One system call each: a sheet may list millions."""
    if not os.path.exists(path):
        return "no such file"
    if not os.access(path, os.R_OK):
        return "cannot be read (Permission denied)"
    return None


def source_record(path: Path | str, name: str, sha256: str) -> dict:
    """What token files record of the file they came from."""
    path = Path(path)
    return {"name": name, "file": path.name, "size": path.stat().st_size, "sha256": sha256}


def video_record(info: VideoInfo, frame_count: int) -> dict:
    """What token files record of the video stream: the probe, with the decoded frame count."""
    return {**info.as_metadata(), "frame_count": frame_count, "duration": float(frame_count / info.fps)}


def _video_timing(path: Path, crc: str, summary: str) -> VideoTiming:
    """The video stream's timing (see avtokens.timing) from its packets' timestamps, as
    ffmpeg's framecrc output lists them."""
    tb_match = re.search(r"^#tb 0: (\d+)/(\d+)", crc, re.M)
    time_base = Fraction(int(tb_match.group(1)), int(tb_match.group(2))) if tb_match else None
    pts, durations = [], []
    for line in crc.splitlines():
        if line.startswith("#"):
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) >= 4 and cols[2].lstrip("-").isdigit():
            pts.append(int(cols[2]))
            durations.append(int(cols[3]))
    if not pts:
        raise AvTokensError(f"{path}: video stream has no frames")
    stated = re.search(r"Video: .*?, ([\d.]+) fps", summary)
    return video_timing(pts, durations[0], time_base, stated.group(1) if stated else None)


def sha256_of(path: Path | str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_frame_windows(path: Path | str, frames, window: int, prefetch: int = 2) -> Iterator[np.ndarray]:
    """Yield the video's frames as uint8 arrays [n, H, W, 3], `window` frames at a time
    (the last one shorter). A background thread keeps up to `prefetch` windows ready.
    `frames`: the video's `VideoInfo` (frames as decoded) or an `avtokens.picture.Picture`
    planned for it (frames converted as the tokenizer sees them, one frame per frame). A file
    whose frames are another size is an error (unless the byte counts happen to agree)."""
    width, height = frames.width, frames.height
    filters = ["-vf", frames.filters] if getattr(frames, "filters", None) else []
    frame_bytes = width * height * 3
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-i", str(path),
           "-map", "0:v:0", *filters, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "pipe:1"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

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
            raise AvTokensError(f"{path}: decoding failed: {_last_line(proc.stderr.read())}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


class VideoWriter:
    """Encode RGB frames to an H.264 mp4 at an exact frame rate through an ffmpeg pipe,
    with an optional `comment` tag in its metadata and the pixels' aspect ratio (non-square
    pixels: players stretch the frames to the display aspect ratio). A callable `comment` is
    read when the first frames arrive, so it can say what made them (a model's first call can
    still change its record: a compile failure falls back to eager)."""

    def __init__(self, path, width: int, height: int, fps: Fraction, crf: int, preset: str,
                 comment: str | Callable[[], str] | None = None,
                 sample_aspect_ratio: Fraction = Fraction(1)):  # fmt: skip
        sar = sample_aspect_ratio
        # 4:2:0 needs even sizes; odd-sized sources keep their size in 4:4:4.
        pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.path, self.comment = path, comment
        self.cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-y",
                    "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
                    "-framerate", f"{fps.numerator}/{fps.denominator}", "-i", "pipe:0",
                    *(["-vf", f"setsar={sar.numerator}/{sar.denominator}"] if sar != 1 else []),
                    "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", pix_fmt]  # fmt: skip
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
            raise AvTokensError(f"{self.path}: video encoding failed: {_last_line(proc.stderr.read())}")


def extract_wav(source: Path | str, dest: Path | str, info: VideoInfo, sample_rate: int) -> int:
    """The source's first audio stream as mono 16-bit PCM at `sample_rate` (ffmpeg's
    downmix and resampler), placed on the video's clock: sample 0 is the moment of the first
    video frame. Audio that starts later than the video is preceded by silence, audio that
    starts earlier is cut, and gaps inside it are filled with silence. A source without
    audio gives silence as long as the video.

    Returns how many frames decoding the video gives, counted in the same ffmpeg run: the
    count every visual token file of it records (read_frame_windows decodes the same way),
    which can differ from the packet count (frames the decoder drops, or an edit list
    discards)."""
    if info.has_audio:
        timeline = f"aresample={sample_rate}:async=1:first_pts=0"  # sample 0 = the file's start
        skip = round(info.video_start * sample_rate)
        if skip > 0:
            timeline += f",atrim=start_sample={skip},asetpts=PTS-STARTPTS"
        inputs, audio = ["-i", str(source)], ["-map", "0:a:0", "-af", timeline]
    else:
        inputs = ["-i", str(source), "-f", "lavfi", "-i", f"anullsrc=r={sample_rate}:cl=mono"]
        audio = ["-map", "1:a:0", "-t", f"{info.duration}"]
    progress = run_ffmpeg(
        ["-y", "-progress", "pipe:1", "-nostats", *inputs,
         *audio, "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", str(dest),
         "-map", "0:v:0", "-fps_mode", "passthrough", "-f", "null", "-"],
        "audio extraction", source,
    ).decode()  # fmt: skip
    counts = re.findall(r"^frame=(\d+)$", progress, re.M)
    if not counts or not int(counts[-1]):
        raise AvTokensError(f"{source}: no decodable video frames")
    return int(counts[-1])


def mux(video: Path | str, audio: Path | str, dest: Path | str) -> None:
    """One H.264 video stream (copied) and one AAC audio stream in an mp4."""
    run_ffmpeg(
        ["-y", "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
         "-c:v", "copy", "-c:a", "aac", "-b:a", "256k", "-movflags", "+faststart",
         "-f", "mp4", str(dest)],
        "muxing", video,
    )  # fmt: skip
