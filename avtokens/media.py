"""Video and audio I/O through the ffmpeg binary of the imageio-ffmpeg wheel.

Frames stream through pipes in raw RGB, so a video is never held in memory, and the
ffmpeg processes decode and encode on their own cores while the model runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.stream import Disposition
from av.video.reformatter import ColorPrimaries, ColorTrc

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.audio_clock import AudioPlacement, write_clocked_wav
from avtokens.background import prefetched
from avtokens.timing import video_timing

log = logging.getLogger(__name__)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], what: str, source: Path | str) -> bytes:
    """Run ffmpeg to completion; a failure becomes one line naming the file and the cause."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", *args]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = ffmpeg_reason(proc.stderr.decode(errors="replace").splitlines())
        raise AvTokensError(f"{source}: {what} failed: {reason}")
    return proc.stdout


# ffmpeg's lines about its own threads and files winding down after an error: not the reason.
_WINDING_DOWN = re.compile(
    r"Terminating thread with return code|Task finished with error code|Error closing file|"
    r"Error writing trailer|Conversion failed!|Nothing was written into output file"
)


def ffmpeg_reason(lines) -> str:
    """The line of ffmpeg's log that says why it failed: the last one that is not about
    winding down (the error rate of a file too damaged to decode, a full disk)."""
    lines = [line.strip() for line in lines if line.strip()]
    reasons = [line for line in lines if not _WINDING_DOWN.search(line)] or lines
    return reasons[-1] if reasons else "ffmpeg gave no reason"


@dataclass(frozen=True)
class VideoInfo:
    """What the rest of the pipeline needs to know about a source file."""

    width: int  # as decoded, after any display rotation
    height: int
    fps: Fraction  # exact when the container's timestamps are regular
    packet_count: int  # video packets; the decoded frame count is counted while decoding
    duration: float  # seconds, from the video timestamps
    # The first video frame's time (seconds) on the container's own clock, which is where
    # sample 0 of the extracted audio is taken from; MPEG-TS clocks start anywhere.
    video_start: float
    # Largest distance (seconds) between a frame's own timestamp and its place on the
    # constant-rate timeline the pipeline uses; more than half a frame means variable rate.
    timing_deviation: float
    variable_rate: bool
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    # How the stored frames are meant to be shown (the stream header's word).
    sample_aspect_ratio: Fraction = Fraction(1)  # width of a stored pixel over its height
    field_order: str = "progressive"  # or "top first" / "bottom first": interlaced
    transfer: str | None = None  # transfer characteristic, e.g. bt709, smpte2084 (PQ), arib-std-b67 (HLG)
    primaries: str | None = None  # colour primaries, e.g. bt709, bt2020
    # The streams used, as the container numbers them (ffmpeg's `-map 0:N`): chosen as players
    # choose them (`choose_video_stream`, `choose_audio_stream`).
    video_stream: int = 0
    audio_stream: int | None = None
    video_streams: int = 1  # how many the container has (cover pictures not counted)
    # The picture's sizes in the order they are shown, each (seconds after the first frame,
    # width, height): more than one where the stream changes size (a broadcast capture's SD
    # advert in an HD channel). `width` and `height` are the size shown longest, which every
    # frame is fitted into (`filters`).
    sizes: tuple[tuple[float, int, int], ...] = ()

    @property
    def size_changes(self) -> int:
        return max(0, len(self.sizes) - 1)

    def fitting(self, fit: str = "pad") -> str:
        """The ffmpeg filters that give every frame one size (`fit_filter`; "" where the size
        never changes)."""
        return fit_filter(self.width, self.height, self.sample_aspect_ratio, fit) if self.size_changes else ""

    @property
    def filters(self) -> str:
        return self.fitting()

    def warn_size_changes(self, source) -> None:
        if self.size_changes:
            changes = ", ".join(f"{w}x{h} at {at:.2f} s" for at, w, h in self.sizes[1:])
            log.warning("%s: the picture changes size %s (%s); every frame is brought to %dx%d, the "
                        "size shown longest, its aspect kept (picture.fit: black bars, or cut)",
                        source, _times(self.size_changes), changes, self.width, self.height)  # fmt: skip

    def as_metadata(self) -> dict:
        d = asdict(self)
        d["fps"] = ratio_text(self.fps, "/")
        d["sample_aspect_ratio"] = ratio_text(self.sample_aspect_ratio)
        d["sizes"] = [{"at": at, "width": w, "height": h} for at, w, h in self.sizes]
        d["size_changes"] = self.size_changes
        return d

    @property
    def frame_rate(self) -> Fraction | None:
        """The rate of the timeline frames are decoded onto (`decoding_args`); None where
        the rate varies (the frames as they come)."""
        return None if self.variable_rate else self.fps


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def ratio_text(value: Fraction, separator: str = ":") -> str:
    """A ratio as metadata writes it: an aspect ratio "8:9", a rate "30000/1001"."""
    return f"{value.numerator}{separator}{value.denominator}"


class StreamFacts(NamedTuple):
    """What choosing a stream looks at."""

    index: int
    default: bool  # the container marks it as the one to play
    cover: bool  # an attached picture (cover art), not a video
    packets: int


def choose_video_stream(streams: list[StreamFacts]) -> StreamFacts | None:
    """The stream a player shows: never a cover picture; a default one before others; then
    the one with the most frames (a one-frame still beside the video loses); then the first."""
    videos = [s for s in streams if not s.cover]
    return max(videos, key=lambda s: (s.default, s.packets, -s.index), default=None)


def choose_audio_stream(streams: list[StreamFacts]) -> StreamFacts | None:
    """The stream a player plays: a default one before others; then the first."""
    return max(streams, key=lambda s: (s.default, -s.index), default=None)


# ffmpeg's field orders (AVFieldOrder) as the pipeline names them: by the field coded first.
_FIELD_ORDERS = {2: "top first", 3: "bottom first", 4: "top first", 5: "bottom first"}


FITS = ("pad", "crop")


def fit_filter(width: int, height: int, sample_aspect_ratio: Fraction, fit: str = "pad") -> str:
    """ffmpeg filters that bring a frame of any size and pixel shape to `width`x`height` with
    pixels of `sample_aspect_ratio`, its display aspect kept: scaled to fit inside and centred
    on black (`fit="pad"`: letter- or pillarboxed), or scaled to fill it and the overflow cut
    evenly (`"crop"`). A frame of that size and shape passes unchanged."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, not {fit!r}")
    sar = sample_aspect_ratio
    target = float(Fraction(width) * sar / height)  # the display aspect of the whole frame
    # In the scale filter's expressions `dar` is the incoming frame's display aspect; a wider
    # frame is fitted by its width when padded, by its height when cropped.
    by_width = f"gte(dar,{target!r})" if fit == "pad" else f"lt(dar,{target!r})"
    fitted_w = f"if({by_width},{width},round({height}*dar*{sar.denominator}/{sar.numerator}))"
    fitted_h = f"if({by_width},round({width}*{sar.numerator}/{sar.denominator}/dar),{height})"
    fill = f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2:black" if fit == "pad" else f"crop={width}:{height}"
    return (f"scale=w='{fitted_w}':h='{fitted_h}':flags=lanczos,setsar={sar.numerator}/{sar.denominator},"
            f"{fill},scale={width}:{height}")  # fmt: skip


# A keyframe is decoded for its size when it is this long after the last one decoded: every
# keyframe of a long-GOP stream, a few a second of an intra-only one.
_SIZE_CHECK_INTERVAL = 0.25


def _size(frame) -> tuple[int, int]:
    """A decoded frame's size as shown: ffmpeg turns frames upright as it decodes them."""
    if round(frame.rotation) % 180 == 90:
        return frame.height, frame.width
    return frame.width, frame.height


def _shown_sizes(keyframes: list[tuple[float, tuple[int, int]]], start: float, duration: float):
    """The sizes in the order they are shown, each (seconds after `start`, width, height), from
    the keyframes' (time, size) of a video `duration` seconds long; and the size shown longest
    (the first of equals)."""
    sizes: list[tuple[float, int, int]] = []
    for time, size in sorted(keyframes):
        if not sizes or sizes[-1][1:] != size:
            sizes.append((round(max(0.0, time - start), 6), *size))
    ends = [at for at, _, _ in sizes[1:]] + [max(duration, sizes[-1][0])]
    shown: dict[tuple[int, int], float] = {}
    for (at, *size), until in zip(sizes, ends, strict=True):
        shown[tuple(size)] = shown.get(tuple(size), 0.0) + until - at
    return tuple(sizes), max(shown, key=shown.get)  # dicts keep order: the first of equals


def probe(path: Path | str) -> VideoInfo:
    """Read a video's streams, size, exact frame rate and audio format without decoding it
    all (PyAV: the container's own fields, and every video packet's timestamp)."""
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
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise AvTokensError(f"{path}: not a readable video ({_av_reason(err)})") from None
    with container:
        return _probe_container(path, container)


def _av_reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


def _probe_container(path: Path, container) -> VideoInfo:
    streams = list(container.streams.video)
    if not streams:
        raise AvTokensError(f"{path}: not a readable video (no video stream)")
    # One pass over the file: every packet's timestamp, and the first frame of each stream.
    # The sizes come from keyframes (a stream changes size at one): (time, size) of each decoded.
    packets = {s.index: [] for s in streams}
    first, keyframes = {}, {s.index: [] for s in streams}
    try:
        for packet in container.demux(streams):
            if not packet.size:
                continue
            index, stream = packet.stream.index, packet.stream
            packets[index].append((packet.pts, packet.duration))
            if index not in first:
                if frames := _decoded(stream, packet):
                    first[index] = frames[0]
                    stream.codec_context.skip_frame = "NONKEY"
            elif packet.is_keyframe and packet.pts is not None:
                time = float(packet.pts * stream.time_base)
                if not keyframes[index] or abs(time - keyframes[index][-1][0]) >= _SIZE_CHECK_INTERVAL:
                    keyframes[index] += [(time, _size(f)) for f in _decoded(stream, packet)]
    except av.FFmpegError as err:  # a damaged tail: ffmpeg's decoding reads on, or stops, as it can
        log.warning("%s: reading packets stopped early (%s)", path, _av_reason(err))
    for s in streams:
        if s.index not in first and (frames := _decoded(s, None)):  # held back until the end
            first[s.index] = frames[0]
    facts = [_facts(s, len(packets[s.index])) for s in streams]
    chosen = choose_video_stream(facts)
    if chosen is None:
        raise AvTokensError(f"{path}: not a readable video (no video stream, only a cover picture)")
    stream = container.streams[chosen.index]
    frame = first.get(chosen.index)
    if frame is None:
        raise AvTokensError(f"{path}: no decodable video frame")
    if len(facts) > 1:
        log.info("%s: video stream %d of %d streams chosen (%s)", path, chosen.index,
                 len(container.streams), "default" if chosen.default else "most frames")  # fmt: skip
    timestamps = [pts for pts, _ in packets[chosen.index] if pts is not None]
    if not timestamps:
        raise AvTokensError(f"{path}: video stream has no timestamps")
    timing = video_timing(
        timestamps, packets[chosen.index][0][1] or 0, stream.time_base,
        stream.average_rate or stream.guessed_rate, packet_count=len(packets[chosen.index]),
    )  # fmt: skip
    video_start = float(frame.pts * stream.time_base) if frame.pts is not None else timing.start
    sizes, (width, height) = _shown_sizes(
        [(video_start, _size(frame)), *keyframes[chosen.index]], video_start, timing.duration
    )
    audio = choose_audio_stream([_facts(s, 0) for s in container.streams.audio])
    audio_context = container.streams[audio.index].codec_context if audio else None
    codec = stream.codec_context
    sar = stream.sample_aspect_ratio or codec.sample_aspect_ratio
    return VideoInfo(
        width=width,
        height=height,
        fps=timing.fps,
        packet_count=timing.packet_count,
        duration=timing.duration,
        video_start=video_start,
        timing_deviation=timing.deviation,
        variable_rate=timing.variable_rate,
        has_audio=audio is not None,
        audio_rate=audio_context.sample_rate if audio else None,
        audio_channels=audio_context.layout.nb_channels if audio else None,
        sample_aspect_ratio=Fraction(sar) if sar else Fraction(1),
        field_order=_FIELD_ORDERS.get(codec.field_order, "progressive"),
        transfer=_colour_name(ColorTrc, frame.color_trc),
        primaries=_colour_name(ColorPrimaries, frame.color_primaries),
        video_stream=chosen.index,
        audio_stream=audio.index if audio else None,
        video_streams=sum(not s.cover for s in facts),
        sizes=sizes,
    )


def _facts(stream, packets: int) -> StreamFacts:
    flags = stream.disposition
    return StreamFacts(
        stream.index, bool(flags & Disposition.default), bool(flags & Disposition.attached_pic), packets
    )


def _decoded(stream, packet) -> list:
    """The frames a packet (None: the end) gives; none where it cannot be decoded."""
    try:
        return stream.codec_context.decode(packet)
    except av.FFmpegError:
        return []


def _colour_name(names, value: int) -> str | None:
    """ffmpeg's name of a colour property (`smpte2084`, `arib-std-b67`), None if unspecified."""
    try:
        name = names(value).name.lower().replace("_", "-")
    except ValueError:
        return None
    return None if name in ("unspecified", "reserved") else name


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


def video_record(info: VideoInfo, decoded: DecodedVideo) -> dict:
    """What token files record of the video stream: the probe, with what decoding gave."""
    return {**info.as_metadata(), **decoded._asdict(), "duration": float(decoded.frame_count / info.fps)}


def sha256_of(path: Path | str, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FfmpegLog:
    """Reads an ffmpeg process's stderr while it runs (a pipe nobody reads fills up, and ffmpeg
    then waits forever: a damaged file can log thousands of decoding errors), keeping the last
    lines for an error message and the latest `-progress` values."""

    def __init__(self, stream):
        self.lines: deque[str] = deque(maxlen=20)
        self.progress: dict[str, str] = {}
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            if _PROGRESS_LINE.fullmatch(line):
                key, value = line.split("=", 1)
                self.progress[key] = value
            elif line:
                self.lines.append(line)

    def finish(self) -> FfmpegLog:
        """Wait for the process's stderr to end (the process has exited)."""
        self._thread.join()
        return self

    @property
    def reason(self) -> str:
        return ffmpeg_reason(self.lines)

    def counter(self, key: str) -> int:
        return int(self.progress.get(key, 0))


_PROGRESS_LINE = re.compile(r"[a-z_0-9]+=.*")


def decoding_args(frames) -> list[str]:
    """ffmpeg's output options that decode `frames` (a `VideoInfo`, or the `Picture` planned
    for it): its chosen stream, the picture's filters, and the timeline. A constant-rate
    stream is decoded onto its constant-rate timeline (`-fps_mode cfr`): a frame that cannot
    be decoded (a damaged file) becomes a repeat of the frame before, so every later frame
    keeps its time. A variable-rate stream gives its frames as they come."""
    stream = getattr(frames, "video_stream", None)
    filters = [getattr(frames, "filters", "")]
    rate = getattr(frames, "frame_rate", None)
    if rate:  # the timeline starts at the first frame, not at the start of the file
        start = getattr(frames, "video_start", None)
        # Not STARTPTS: ffmpeg builds the filters again where the frames change size, and
        # STARTPTS would then start the rest of the timeline at 0 again.
        filters.insert(0, "setpts=PTS-STARTPTS" if start is None else f"setpts=round(PTS-{start!r}/TB)")
        timeline = ["-fps_mode", "cfr", "-r", ratio_text(rate, "/")]
    else:
        timeline = ["-fps_mode", "passthrough"]
    chain = ",".join(f for f in filters if f)
    return [
        "-map",
        "0:v:0" if stream is None else f"0:{stream}",
        *(["-vf", chain] if chain else []),
        *timeline,
    ]


def read_frame_windows(path: Path | str, frames, window: int, prefetch: int = 2,
                       decoded: dict | None = None) -> Iterator[np.ndarray]:  # fmt: skip
    """Yield the video's frames as uint8 arrays [n, H, W, 3], `window` frames at a time
    (the last one shorter). A background thread keeps up to `prefetch` windows ready.
    `frames`: the video's `VideoInfo` (frames as decoded) or an `avtokens.picture.Picture`
    planned for it (frames converted as the tokenizer sees them, one frame per frame). A file
    whose frames are another size is an error (unless the byte counts happen to agree).
    `decoded`: a dict that gets, once all frames are read, how many frames were filled in
    ("filled_frames") and dropped ("dropped_frames") to keep a constant-rate timeline."""
    width, height = frames.width, frames.height
    frame_bytes = width * height * 3
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-progress", "pipe:2",
           "-copyts", "-i", str(path), *decoding_args(frames), "-f", "rawvideo", "-pix_fmt", "rgb24",
           "pipe:1"]  # fmt: skip
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


def extract_wav(source: Path | str, dest: Path | str, info: VideoInfo,
                sample_rate: int) -> tuple[DecodedVideo, AudioPlacement]:  # fmt: skip
    """The source's chosen audio stream as mono 16-bit PCM at `sample_rate`, placed on the
    video's clock (`avtokens.audio_clock`): sample 0 is the moment of the first video frame,
    every stretch of audio sits where its timestamps put it, across format changes; silence
    where there is none (a source without audio: as long as the video).

    Also returns how decoding the video goes, counted by ffmpeg as the audio is placed: the
    frame count every visual token file of it records (read_frame_windows decodes the same
    way), which can differ from the packet count (frames the decoder drops, or an edit list
    discards). Timestamps are the container's own (`-copyts`), as the probe and the audio
    placement read them."""
    with ThreadPoolExecutor(1) as pool:
        counting = pool.submit(
            run_ffmpeg,
            ["-progress", "pipe:1", "-nostats", "-copyts", "-i", str(source), *decoding_args(info),
             "-f", "null", "-"],
            "decoding the video", source,
        )  # fmt: skip
        placement = write_clocked_wav(source, dest, info.audio_stream if info.has_audio else None,
                                      info.video_start, info.duration, sample_rate)  # fmt: skip
        progress = counting.result().decode()
    counts = {
        key: int(value)
        for key, value in re.findall(r"^(frame|dup_frames|drop_frames)=(\d+)$", progress, re.M)
    }
    if not counts.get("frame"):
        raise AvTokensError(f"{source}: no decodable video frames")
    decoded = DecodedVideo(counts["frame"], counts.get("dup_frames", 0), counts.get("drop_frames", 0))
    decoded.warn(source)
    if placement.format_changes:
        changes = ", ".join(f"{f['codec']} {f['sample_rate']} Hz {f['layout']} at {f['at']:.2f} s"
                            for f in placement.formats[1:])  # fmt: skip
        log.warning("%s: the audio changes format %s (%s); each part is placed by its own timestamps",
                    source, _times(placement.format_changes), changes)  # fmt: skip
    return decoded, placement


def mux(video: Path | str, audio: Path | str, dest: Path | str) -> None:
    """One H.264 video stream (copied) and one AAC audio stream in an mp4."""
    run_ffmpeg(
        ["-y", "-i", str(video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
         "-c:v", "copy", "-c:a", "aac", "-b:a", "256k", "-movflags", "+faststart",
         "-f", "mp4", str(dest)],
        "muxing", video,
    )  # fmt: skip


def extract_audio(source, name: str, sample_rate: int, wav_dest, timeline_dest) -> None:
    """What the audio jobs of a video need, made once per sample rate for every codec of that
    rate: its audio as their input (mono at `sample_rate` on the video's clock, `extract_wav`)
    and its timeline (JSON: the source file and the video stream with the decoded frame count,
    which every visual token file of the video records too, so the codes cover exactly the
    frames the latent frames do)."""
    info = probe(source)
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(sha256_of, source)
        with atomic_output(wav_dest) as tmp:
            decoded, placement = extract_wav(source, tmp, info, int(sample_rate))
        timeline = {"source": source_record(source, name, digest.result()),
                    "video": video_record(info, decoded),
                    "audio_placement": placement.as_metadata()}  # fmt: skip
    with atomic_output(timeline_dest) as tmp:
        tmp.write_text(json.dumps(timeline, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
