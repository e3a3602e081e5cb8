"""A source's audio track: taken out as the codecs' input, on the video's clock
(`extract_wav`, `extract_audio`; the placement itself is `avtokens.audio_clock`), and put back
beside a reconstructed video (`mux`)."""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.audio_clock import AudioPlacement, write_clocked_wav
from avtokens.media.ffmpeg import decoding_threads, run_ffmpeg
from avtokens.media.frames import DecodedVideo, decoding_args
from avtokens.media.probe import VideoInfo, probe, times_text
from avtokens.media.sources import sha256_of, source_record, video_record

log = logging.getLogger(__name__)


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
    placement read them. ffmpeg decodes on the job's threads (`decoding_threads`)."""
    with ThreadPoolExecutor(1) as pool:
        counting = pool.submit(
            run_ffmpeg,
            ["-progress", "pipe:1", "-nostats", *decoding_threads(), "-copyts", "-i", str(source),
             *decoding_args(info), "-f", "null", "-"],
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
                    source, times_text(placement.format_changes), changes)  # fmt: skip
    return decoded, placement


def mux(video: Path | str, audio: Path | str, dest: Path | str) -> None:
    """One H.264 video stream (copied) and one AAC audio stream in an mp4. A reconstruction of
    a stretch of its source (a preset's `start`, `max_seconds`; its comment tag says which:
    avtokens.visual.reconstruction_comment) gets the audio of that stretch."""
    stretch = shown_stretch(video)
    cut = [] if stretch is None else ["-ss", repr(stretch["start"]), "-t", repr(stretch["duration"])]
    run_ffmpeg(
        ["-y", "-i", str(video), *cut, "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
         "-c:v", "copy", "-c:a", "aac", "-b:a", "256k", "-movflags", "+faststart",
         "-f", "mp4", str(dest)],
        "muxing", video,
    )  # fmt: skip


def shown_stretch(video: Path | str) -> dict | None:
    """{"start", "duration"} (seconds after the source's first frame) of a reconstruction made
    on a preset's own timeline, from its comment tag; None for one of the whole source."""
    with av.open(str(video)) as container:
        comment = container.metadata.get("comment", "")
    try:
        return json.loads(comment).get("avtokens_timeline")
    except (ValueError, AttributeError):
        return None


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
