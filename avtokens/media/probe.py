"""What a source file holds, read without decoding it all (PyAV): its streams and the ones a
player would choose, the picture's size (and its changes), pixel shape, field order and
colour, the exact frame rate from every packet's timestamp, and the audio's format. Also how a
frame of another size is fitted to the size shown longest (`fit_filter`)."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
from av.stream import Disposition
from av.video.reformatter import ColorPrimaries, ColorTrc

from avtokens import AvTokensError
from avtokens.timing import video_timing

log = logging.getLogger(__name__)


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
                        source, times_text(self.size_changes), changes, self.width, self.height)  # fmt: skip

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


def times_text(count: int) -> str:
    """How often, as a message says it: "once", "3 times"."""
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
