"""Video and audio I/O through the ffmpeg binary of the imageio-ffmpeg wheel.

Frames stream through pipes in raw RGB, so a video is never held in memory, and the
ffmpeg processes decode and encode on their own cores while the model runs.

Modules: `probe` (what a file holds, without decoding it all), `frames` (frames decoded and
encoded through pipes), `audio_track` (the audio taken out on the video's clock, and muxed
back), `sources` (a source file's hash and records), `ffmpeg` (running ffmpeg). The names
the workflow's scripts, benchmarks and tests use are importable from here.
"""

from avtokens.media.audio_track import extract_audio, extract_wav, mux
from avtokens.media.ffmpeg import ffmpeg_exe, run_ffmpeg
from avtokens.media.frames import DecodedVideo, VideoWriter, read_frame_windows
from avtokens.media.probe import (
    FITS,
    StreamFacts,
    VideoInfo,
    choose_audio_stream,
    choose_video_stream,
    probe,
    ratio_text,
)
from avtokens.media.sources import sha256_of, source_record, unusable_source, video_record

__all__ = [
    "FITS",
    "DecodedVideo",
    "StreamFacts",
    "VideoInfo",
    "VideoWriter",
    "choose_audio_stream",
    "choose_video_stream",
    "extract_audio",
    "extract_wav",
    "ffmpeg_exe",
    "mux",
    "probe",
    "ratio_text",
    "read_frame_windows",
    "run_ffmpeg",
    "sha256_of",
    "source_record",
    "unusable_source",
    "video_record",
]
