"""Config keys that were renamed or moved. A config that still sets one stops before any job
(rules/common.smk) rather than having it ignored: the run would silently do something else
than the user asked (one job per video, the default batch, the official DAC URL)."""

from __future__ import annotations

# old key -> what replaces it, and what that is
RENAMED_KEYS = {
    "videos_per_job": "`shard_size`: every stage (not only the model ones) runs one job per shard of "
    'that many videos (README, "Many short clips: shard mode")',
    "batch_windows": "`batch_megapixels`, frames x pixels per model call in millions (64: four "
    "17-frame windows at 1280x720)",
    "dac_url": "`codecs: {dac: {url: ...}}`, where each audio codec's official files are fetched "
    'from (README, "Real checkpoints")',
}


def renamed_keys(config: dict) -> list[str]:
    """A line for each renamed key that `config` still sets, saying what replaces it."""
    return [f"config: `{key}` is now {now}; replace it" for key, now in RENAMED_KEYS.items() if key in config]
