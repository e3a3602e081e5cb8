"""How many tokens a video will make, from its length, rate and size alone (no model, no file).

The same window, latent-frame and alignment rules the workflow runs by, so the numbers are
the ones a run gives: used for the token table by window in the README and to check the
original description's figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from avtokens.alignment import audio_block_size, code_frame_count, code_frame_ranges
from avtokens.audio_codecs import DEFAULT_CODEC, AudioCodec, audio_codec
from avtokens.windows import video_latent_spans


@dataclass(frozen=True)
class TokenPlan:
    latent_frames: int
    latent_width: int
    latent_height: int
    audio_block: int  # code frames every full latent frame carries (the "27x9 audio" view)
    visual_tokens: int
    audio_tokens: int  # the code stream's codes: code frames x codebooks
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return (self.visual_tokens + self.audio_tokens) / self.seconds


def plan_tokens(frame_count: int, fps: Fraction, width: int, height: int, temporal: int, spatial: int,
                window: int, codec: AudioCodec | None = None,
                codebooks: int | None = None) -> TokenPlan:  # fmt: skip
    """Token counts of a video of `frame_count` frames at `fps` and `width`x`height` with a
    tokenizer of factors `temporal` x `spatial` x `spatial` coding `window` frames at a time,
    and `codebooks` of an audio codec (default: the default codec with its default count)."""
    codec = codec or audio_codec(DEFAULT_CODEC)
    codebooks = codebooks or codec.default_codebooks
    spans = video_latent_spans(frame_count, window, temporal)
    ranges = code_frame_ranges(spans, fps, codec.sample_rate, codec.hop)
    latent_width, latent_height = -(-width // spatial), -(-height // spatial)
    code_frames = code_frame_count(frame_count, fps, codec.sample_rate, codec.hop)
    return TokenPlan(
        latent_frames=len(spans),
        latent_width=latent_width,
        latent_height=latent_height,
        audio_block=audio_block_size(ranges, spans, temporal),
        visual_tokens=len(spans) * latent_width * latent_height,
        audio_tokens=code_frames * codebooks,
        seconds=float(frame_count / fps),
    )
