"""The registry of audio codecs: a preset's `codec:` names one of these. To add a codec, write
its module (an `AudioCodec` subclass) and list it here; README, "Adding an audio codec"."""

from __future__ import annotations

from avtokens.audio_codecs.base import AudioCodec, LoadedCodec
from avtokens.audio_codecs.dac import DAC
from avtokens.audio_codecs.mimi import MIMI

AUDIO_CODECS: dict[str, AudioCodec] = {codec.name: codec for codec in (DAC, MIMI)}
DEFAULT_CODEC = DAC.name

__all__ = ["AUDIO_CODECS", "DEFAULT_CODEC", "AudioCodec", "LoadedCodec", "audio_codec"]


def audio_codec(name: str) -> AudioCodec:
    """The codec called `name`; ValueError naming the known ones if there is none."""
    try:
        return AUDIO_CODECS[name]
    except KeyError:
        raise ValueError(f"no audio codec {name!r}; codecs: {', '.join(AUDIO_CODECS)}") from None
