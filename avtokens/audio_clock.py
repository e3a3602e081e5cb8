"""A source's audio on its video's clock: mono at one sample rate, sample 0 at the first video
frame, every stretch of audio at the time its own timestamps give.

Broadcast captures change their audio format at ad breaks and programme boundaries (a stereo
advert in a 5.1 programme, a 44.1 kHz insert in a 48 kHz stream), and their audio can start
late, stop for a while or overlap itself where parts were spliced. ffmpeg's timestamp-driven
resampler (`aresample=async=1`) is rebuilt at each format change and then places the rest of
the file seconds late, so the audio is decoded here (PyAV) in runs: a run is audio of one
format whose timestamps follow on from each other; each run is converted on its own (ffmpeg's
resampler and downmix, as `-ac 1 -ar` would) and written at the place its first timestamp
gives. Silence fills what no run covers; where a run starts inside audio already written,
its overlapping start is dropped, as ffmpeg's `async` trims. Timestamps that drift from the
samples' count by less than `SYNC_TOLERANCE` are taken as jitter: the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np
import soundfile

log = logging.getLogger(__name__)

# Less than a DAC code frame (11.6 ms) and a video frame: a run drifting further starts again
# at its own timestamp.
SYNC_TOLERANCE = 0.010
_SILENCE_BLOCK = 1 << 16  # samples of silence written at a time (a gap can be hours long)


@dataclass(frozen=True)
class AudioFormat:
    """What a run of decoded audio is: a change of any of these is a format change."""

    codec: str
    sample_rate: int
    channels: int
    layout: str


@dataclass
class AudioPlacement:
    """How the audio was placed: what token files record of it, so a dataset can filter the
    captures it distrusts."""

    # The formats in the order they came, each with its time after the first video frame.
    formats: list[dict] = field(default_factory=list)
    gaps_filled: float = 0.0  # seconds of silence written where the stream had no audio
    overlaps_dropped: float = 0.0  # seconds of audio dropped where it overlapped audio before it
    undecodable_packets: int = 0

    @property
    def format_changes(self) -> int:
        return max(0, len(self.formats) - 1)

    def as_metadata(self) -> dict:
        return {"format_changes": self.format_changes, **asdict(self)}


class _ClockedWav:
    """A mono 16-bit wav written in order, each block at the sample it belongs at."""

    def __init__(self, wav: soundfile.SoundFile, end: int):
        self.wav, self.end, self.written = wav, end, 0

    def put(self, at: int, samples: np.ndarray) -> tuple[int, int]:
        """Write `samples` from sample `at` on (up to the end; what lies before sample 0 is
        cut): the silence written before them, and how many were dropped as overlapping
        what is written already."""
        gap = self.silence_until(min(at, self.end))
        overlap = max(0, self.written - max(at, 0))
        skip = min(len(samples), max(0, self.written - at))
        kept = samples[skip : skip + max(0, self.end - self.written)]
        self.wav.write(kept)
        self.written += len(kept)
        return gap, min(overlap, len(samples))

    def silence_until(self, position: int) -> int:
        gap = max(0, position - self.written)
        for start in range(0, gap, _SILENCE_BLOCK):
            self.wav.write(np.zeros(min(_SILENCE_BLOCK, gap - start), np.int16))
        self.written += gap
        return gap


# The audio codecs of broadcast and disc captures. A stream whose packets stop decoding may
# have changed codec under the same PID (an AC-3 programme, an MPEG audio advert): the packet
# is tried with each of these before it is taken for damaged.
CAPTURE_CODECS = ("aac", "aac_latm", "mp2", "mp3", "ac3", "eac3")


def _frames(path: Path, container, stream, placement: AudioPlacement):
    """The stream's decoded frames, each with its codec's name and its time on the container's
    clock (None where its packet had no timestamp of its own). A packet that no decoder takes
    is skipped (as ffmpeg skips it); a damaged tail ends them."""
    decoder = stream.codec_context
    try:
        for packet in container.demux(stream):
            try:
                frames = decoder.decode(packet)
            except av.FFmpegError:
                other, frames = _decoder_for(packet, decoder.name)
                if other is None:  # damaged: the next packet goes to the same decoder
                    placement.undecodable_packets += 1
                    continue
                decoder = other
            for frame in frames:
                # Audio is never reordered: where a container stamps only decoding times (AVI),
                # they are the presentation times.
                stamp = frame.pts if frame.pts is not None else frame.dts
                yield decoder.name, frame, None if stamp is None else float(stamp * stream.time_base)
    except av.FFmpegError as err:
        log.warning("%s: reading audio stopped early (%s)", path, err)


def _decoder_for(packet, failed: str):
    """A new decoder of another capture codec that decodes `packet`, and its frames; or None."""
    for name in CAPTURE_CODECS:
        if name == failed:
            continue
        decoder = av.CodecContext.create(name, "r")
        try:
            frames = decoder.decode(packet)
        except av.FFmpegError:
            continue
        if frames:
            return decoder, frames
    return None, []


def _format(frame, codec: str) -> AudioFormat:
    return AudioFormat(codec, frame.sample_rate, frame.layout.nb_channels, frame.layout.name)


def write_clocked_wav(path: Path | str, dest: Path | str, stream_index: int | None, start: float,
                      duration: float, sample_rate: int) -> AudioPlacement:  # fmt: skip
    """Write `dest`: the audio stream `stream_index` of `path` (None: none, silence) as mono
    16-bit PCM at `sample_rate`, sample 0 at `start` seconds of the container's clock (the
    first video frame), and at least `duration` seconds long: silence where there is no audio,
    and audio that starts before `start` cut. It ends where the audio does, or a second after
    `duration` if the audio goes on (a damaged timestamp must not write hours)."""
    path, placement = Path(path), AudioPlacement()
    end = round((duration + 1) * sample_rate)
    with soundfile.SoundFile(str(dest), "w", sample_rate, 1, "PCM_16", format="WAV") as wav:
        out = _ClockedWav(wav, end)
        if stream_index is not None:
            # nofillin: a packet without a timestamp of its own (an MPEG-TS audio packet after
            # the first of its PES) gets none, rather than one worked out from the stream's first
            # format, which is wrong after a change; such audio follows on from the audio before.
            with av.open(str(path), options={"fflags": "nofillin"}, metadata_errors="ignore") as container:
                _place(path, container, container.streams[stream_index], start, sample_rate, out, placement)
        placement.gaps_filled += out.silence_until(round(duration * sample_rate)) / sample_rate
    placement.gaps_filled = round(placement.gaps_filled, 6)
    placement.overlaps_dropped = round(placement.overlaps_dropped, 6)
    return placement


def _place(path, container, stream, start: float, rate: int, out: _ClockedWav,
           placement: AudioPlacement) -> None:  # fmt: skip
    current, resampler, at, expected = None, None, 0, start  # expected: the next frame's time

    def flush() -> None:
        nonlocal at
        if resampler is not None:
            at = _write(out, at, resampler.resample(None), rate, placement)

    for codec, frame, time in _frames(path, container, stream, placement):
        if not frame.samples:
            continue
        kind = _format(frame, codec)
        time = expected if time is None else time
        if kind != current or abs(time - expected) > SYNC_TOLERANCE:
            flush()
            if kind != current:
                placement.formats.append({"at": round(time - start, 6), **asdict(kind)})
            current = kind
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            at = round((time - start) * rate)
        at = _write(out, at, resampler.resample(frame), rate, placement)
        expected = time + frame.samples / frame.sample_rate
    flush()


def _write(out: _ClockedWav, at: int, frames, rate: int, placement: AudioPlacement) -> int:
    for converted in frames:
        samples = converted.to_ndarray().reshape(-1)
        gap, dropped = out.put(at, samples)
        placement.gaps_filled += gap / rate
        placement.overlaps_dropped += dropped / rate
        at += len(samples)
    return at
