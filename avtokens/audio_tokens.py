"""A preset's audio token file: a video's codes (`avtokens.audio`) grouped by the latent
frames of the preset's visual token file. No model runs and torch is not imported: the
align_audio job reads and writes small files and starts in a fraction of a second."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

import avtokens
from avtokens import AvTokensError
from avtokens.alignment import code_frame_ranges
from avtokens.atomic import atomic_output
from avtokens.media import sha256_of
from avtokens.tokenfile import TokenFileReader, TokenFileWriter, read_metadata
from avtokens.windows import video_latent_spans

log = logging.getLogger(__name__)
CODES_FORMAT = "avtokens-audio-codes/1"  # a video's codes, before alignment to any preset


def align_codes(codes_path, visual_tokens, dest) -> None:
    """A preset's audio token file: a video's codes (`avtokens.audio.encode_wav_files`) with the code
    frames of each latent frame of its visual token file (`code_ranges`). No model runs."""
    with TokenFileReader(codes_path) as reader:
        audio = reader.metadata
        if audio.get("format") != CODES_FORMAT:
            raise AvTokensError(
                f"{codes_path}: not a file of audio codes ({CODES_FORMAT}) but {audio.get('format')}"
            )
        codes = reader.array("codes")[0]
    visual = read_metadata(visual_tokens)
    video, tok = visual["video"], visual["tokenizer"]
    # A preset's own timeline (avtokens.shaping) has its own rate and frame count, and starts
    # `first_tick` frames of its rate after the source's first frame, where the codes start.
    shaped = visual["picture"].get("timeline")
    theirs = (audio["source"]["sha256"], audio["video"]["fps"], audio["video"]["frame_count"])
    ours = (visual["source"]["sha256"], video.get("source_fps", video["fps"]),
            theirs[2] if shaped else video["frame_count"])  # fmt: skip
    if ours != theirs:
        raise AvTokensError(
            f"{visual_tokens} and {codes_path} describe different videos (source sha256 "
            f"{ours[0][:12]} vs {theirs[0][:12]}, {ours[1]} vs {theirs[1]} fps, "
            f"{ours[2]} vs {theirs[2]} frames); rerun both from the same source"
        )
    first_tick = shaped["first_tick"] if shaped else 0
    spans = video_latent_spans(video["frame_count"], tok["window"], tok["temporal"])
    # The codes' own clock: any codec's sample rate and hop, as the codes file records them.
    coded = audio["audio"]
    ticks = [(start + first_tick, end + first_tick) for start, end in spans]
    ranges = code_frame_ranges(ticks, Fraction(video["fps"]), coded["sample_rate"], coded["hop"])
    # A target timeline's last frame may end a little after the source's audio (ffmpeg's fps
    # filter rounds the last frame): its codes end where the codes do.
    ranges = [(min(start, len(codes)), min(end, len(codes))) for start, end in ranges]
    metadata = {
        "format": "avtokens-audio/1",
        "project_version": avtokens.__version__,
        "source": visual["source"],
        "audio": audio["audio"],
        "alignment": {
            "rule": "code frame k belongs to the latent frame whose time span holds k*hop/sample_rate",
            "fps": video["fps"],
            "frame_count": video["frame_count"],
            **({"first_tick": first_tick} if shaped else {}),
            "latent_frames": len(ranges),
            "visual_tokens": Path(visual_tokens).name,
            "audio_codes": {"file": Path(codes_path).name, "sha256": sha256_of(codes_path)},
        },
        "codec": audio["codec"],
        "stand_in_weights": audio["stand_in_weights"],
        "runtime": audio["runtime"],  # where the codes were computed
    }
    with atomic_output(dest) as tmp:
        writer = TokenFileWriter(tmp, "codes", np.dtype("uint16"), (audio["audio"]["codebooks"],))
        writer.append(codes)
        writer.finish(metadata, extra={"code_ranges": np.asarray(ranges, dtype=np.int64)})
    log.info("%s: %d code frames over %d latent frames", dest, len(codes), len(ranges))
