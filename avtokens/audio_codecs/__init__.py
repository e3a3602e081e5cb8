"""The registry of audio codecs: a preset's `codec:` names one of these. To add a codec, write
its module (an `AudioCodec` subclass) and list it here; README, "Adding an audio codec"."""

from __future__ import annotations

from avtokens.audio_codecs.base import AudioCodec, LoadedCodec
from avtokens.audio_codecs.dac import DAC
from avtokens.audio_codecs.mimi import MIMI

# The first listed is the default: a preset without `codec:` uses it.
AUDIO_CODECS: dict[str, AudioCodec] = {codec.name: codec for codec in (DAC, MIMI)}
DEFAULT_CODEC = next(iter(AUDIO_CODECS))
# What manifest rows written before they named their codec were made with (DAC's 44.1 kHz
# model as this project ran it then): frozen, so that changing the default or DAC's settings
# never relabels old rows.
LEGACY_CODEC_ROW = {"audio_codec": "dac", "audio_codebooks": 9, "audio_codebook_size": 1024,
                    "audio_sample_rate": 44100, "audio_hop": 512}  # fmt: skip

__all__ = ["AUDIO_CODECS", "DEFAULT_CODEC", "LEGACY_CODEC_ROW", "AudioCodec", "LoadedCodec", "audio_codec"]


def audio_codec(name: str) -> AudioCodec:
    """The codec called `name`; ValueError naming the known ones if there is none."""
    try:
        return AUDIO_CODECS[name]
    except KeyError:
        raise ValueError(f"no audio codec {name!r}; codecs: {', '.join(AUDIO_CODECS)}") from None
