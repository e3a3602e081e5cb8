"""The registry of visual tokenizer families: a preset's `family:` names one of these. To add a
family, write its module or folder (a `VisualTokenizer` subclass) and list it here; to remove
one, delete both. README, "Adding a tokenizer"."""

from __future__ import annotations

from avtokens.visual_tokenizers.base import KINDS, LatentLayout, VisualTokenizer
from avtokens.visual_tokenizers.cosmos import COSMOS
from avtokens.visual_tokenizers.wan import WAN21

# The first listed is the default: a preset without `family:` is of it.
VISUAL_TOKENIZERS: dict[str, VisualTokenizer] = {family.name: family for family in (COSMOS, WAN21)}
DEFAULT_FAMILY = next(iter(VISUAL_TOKENIZERS))
# What token files and manifest rows written before they named their family were made with:
# frozen, so that changing the default never relabels old files.
LEGACY_FAMILY = "cosmos"

__all__ = [
    "DEFAULT_FAMILY",
    "KINDS",
    "LEGACY_FAMILY",
    "VISUAL_TOKENIZERS",
    "LatentLayout",
    "VisualTokenizer",
    "visual_tokenizer",
]


def visual_tokenizer(name: str) -> VisualTokenizer:
    """The family called `name`; ValueError naming the known ones if there is none."""
    try:
        return VISUAL_TOKENIZERS[name]
    except KeyError:
        raise ValueError(f"no tokenizer family {name!r}; families: {', '.join(VISUAL_TOKENIZERS)}") from None
