"""Stand-in weights (`weights: demo`): tiny random models in the official file formats, for
offline runs and tests. Each visual tokenizer family and audio codec writes its own
(`write_stand_in` of its registry entry), marked so that output made from it says so; this is
the one entry point, which the `stand_in_weights` rule calls.
"""

from __future__ import annotations

from pathlib import Path

# Loaded before run_rule starts the job, which then gives torch the job's thread count: the
# writers run networks (Mimi's stand-in scales its codebooks by what its encoder computes).
import torch  # noqa: F401

from avtokens.audio_codecs import audio_codec
from avtokens.visual_tokenizers import visual_tokenizer


def write_stand_in(folder: Path | str, model: dict) -> None:
    """The stand-in checkpoint folder of `model`: {"codec": an audio codec's name} or {"family": a
    visual tokenizer family's name, "kind", "temporal", "spatial"}."""
    model = dict(model)
    if "codec" in model:
        audio_codec(model["codec"]).write_stand_in(Path(folder))
    else:
        visual_tokenizer(model.pop("family")).write_stand_in(Path(folder), **model)
