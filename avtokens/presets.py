"""Tokenizer presets: the rules a preset must obey, checked before any work starts.

Pure Python (no torch) because the Snakefile imports it to validate the config. What a
family accepts (releases, kinds, factors, engines, windows) comes from its registry entry
(`avtokens.visual_tokenizers`), and what a codec accepts from its own (`avtokens.audio_codecs`).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass, field

from avtokens.audio_codecs import DEFAULT_CODEC, AudioCodec, audio_codec
from avtokens.shaping import KEYS as SHAPING_KEYS
from avtokens.shaping import Shaping, parse_rate, rate_text
from avtokens.visual_tokenizers import DEFAULT_FAMILY, KINDS, VisualTokenizer, visual_tokenizer
from avtokens.windows import check_window_length

MODEL_KEYS = ("kind", "temporal", "spatial")  # a preset's fields that pick a family's model


@dataclass(frozen=True)
class Preset:
    """A preset's visual part: everything its visual jobs read (the rules pass these fields as
    the jobs' params). Its audio is an `AudioSetting` of its own, so a visual job holds no codec."""

    name: str
    kind: str  # "CV" (continuous latents) or "DV" (discrete indices)
    temporal: int
    spatial: int
    window: int
    weights: str  # "official" or "demo"
    repo: str  # Hugging Face repo of the checkpoint, e.g. nvidia/Cosmos-0.1-Tokenizer-CV8x8x8
    engine: str = "auto"  # how the network runs: the family's `engines`
    family: str = DEFAULT_FAMILY  # the registry entry: avtokens.visual_tokenizers
    release: str = ""  # the family's release the default repo comes from
    # The frames' targets (frame rate, size, part: avtokens.shaping); a job's params give them
    # as `Shaping.as_params` does.
    shaping: Shaping = field(default_factory=Shaping)

    def __post_init__(self):
        if not isinstance(self.shaping, Shaping):
            object.__setattr__(self, "shaping", Shaping.from_params(self.shaping))

    def as_params(self) -> dict:
        """The fields as a job's params carry them; the shaping only where it changes
        anything, so that the params of a preset made before it existed stay as they were
        (a changed param reruns a job)."""
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "shaping"}
        return {**params, "shaping": self.shaping.as_params()} if self.shaping.changes_anything else params

    @property
    def tokenizer(self) -> VisualTokenizer:
        return visual_tokenizer(self.family)

    @property
    def model(self) -> str:
        """The checkpoint's folder name: the repo's name without its owner."""
        return self.repo.rsplit("/", 1)[-1]

    @property
    def folder_names(self) -> list[str]:
        """Folder names the checkpoint may have locally, the first the one a fetch makes."""
        return self.tokenizer.folder_names(self.repo)

    @property
    def factors(self) -> str:
        return f"{self.temporal}x{self.spatial}x{self.spatial}"

    @property
    def is_discrete(self) -> bool:
        return self.kind == "DV"


@dataclass(frozen=True)
class AudioSetting:
    """A preset's audio part: its codec, how many of the codec's codebooks, and whose weights.
    Presets with the same setting and weights share a video's codes."""

    codec: str  # the audio codec: avtokens.audio_codecs
    codebooks: int  # the first this many of the codec's codebooks
    weights: str  # "official" or "demo"

    @property
    def audio_codec(self) -> AudioCodec:
        return audio_codec(self.codec)

    @property
    def name(self) -> str:
        """The name a video's codes of this setting are kept under: the codec and its codebooks."""
        return self.audio_codec.setting(self.codebooks)

    @property
    def sample_rate(self) -> int:
        return self.audio_codec.sample_rate


def _model_name(kind, temporal, spatial) -> str:
    return f"{kind}{temporal}x{spatial}x{spatial}"


def preset_entry(model: str, **fields) -> dict:
    """A preset's config entry from its model's name (`DV8x16x16`: kind DV, temporal 8, spatial
    16) and the other fields given, those given as None left to their defaults: for commands that
    name a preset so (the benchmarks)."""
    match = re.fullmatch(rf"({'|'.join(KINDS)})(\d+)x(\d+)x\3", model)
    if match is None:
        raise ValueError(f"{model!r} is not a model's name, such as CV8x16x16 or DV4x8x8")
    given = {key: value for key, value in fields.items() if value is not None}
    return {"kind": match[1], "temporal": int(match[2]), "spatial": int(match[3]), **given}


def _model_names(models) -> str:
    return ", ".join(_model_name(*model) for model in models)


def _model_fields(name: str, family: VisualTokenizer, release: str, fields: dict) -> tuple[str, int, int]:
    """(kind, temporal, spatial) of the preset: as given, or, where the release has one model,
    that model's; refused unless the release has that model."""
    models = family.models(release)
    given = [fields.get(key) for key in MODEL_KEYS]
    if all(value is None for value in given) and len(models) == 1:
        return next(iter(models))
    if any(value is None for value in given):
        missing = [key for key, value in zip(MODEL_KEYS, given, strict=True) if value is None]
        raise ValueError(f"preset '{name}': give {', '.join(missing)} (family {family.name}, "
                         f"release {release} has {_model_names(models)})")  # fmt: skip
    kind, temporal, spatial = given[0], int(given[1]), int(given[2])
    if kind not in KINDS:
        raise ValueError(f"preset '{name}': kind must be CV or DV, not {kind!r}")
    if (kind, temporal, spatial) not in models:
        others = [other for other, repos in family.releases.items() if (kind, temporal, spatial) in repos]
        elsewhere = f"; release {' and '.join(others)} has it" if others else ""
        raise ValueError(
            f"preset '{name}': no {family.label} tokenizer of release {release} is "
            f"{_model_name(kind, temporal, spatial)}; it has {_model_names(models)}{elsewhere}"
        )
    return kind, temporal, spatial


def make_preset(name: str, fields: dict, default_weights: str = "official") -> Preset:
    """The visual part of the preset `name` from its config entry, raising ValueError with an
    actionable message."""
    family = fields.get("family", DEFAULT_FAMILY)
    try:
        tokenizer = visual_tokenizer(family)
    except ValueError as err:
        raise ValueError(f"preset '{name}': {err}") from None
    release = str(fields.get("release", tokenizer.default_release))
    if release not in tokenizer.releases:
        raise ValueError(f"preset '{name}': family {family} has releases {', '.join(tokenizer.releases)}, "
                         f"not {release!r}")  # fmt: skip
    kind, temporal, spatial = _model_fields(name, tokenizer, release, fields)
    window = int(fields.get("window", tokenizer.default_window))
    try:
        check_window_length(window, temporal)
    except ValueError as err:
        raise ValueError(f"preset '{name}': {err}") from None
    weights = fields.get("weights", default_weights)
    if weights not in ("official", "demo"):
        raise ValueError(f"preset '{name}': weights must be official or demo, not {weights!r}")
    # Stand-ins exist for the released layouts only, so a demo preset ignores `repo`.
    repo = tokenizer.models(release)[kind, temporal, spatial]
    if weights == "official" and fields.get("repo"):
        repo = fields["repo"]
    engine = fields.get("engine", tokenizer.engines[0])
    if engine not in tokenizer.engines:
        raise ValueError(f"preset '{name}': engine must be one of {', '.join(tokenizer.engines)} "
                         f"(family {family}), not {engine!r}")  # fmt: skip
    try:
        shaping = Shaping.from_config({key: fields[key] for key in SHAPING_KEYS if key in fields})
        shaping.check_sides(spatial, f"the {tokenizer.label} {_model_name(kind, temporal, spatial)}")
    except ValueError as err:
        raise ValueError(f"preset '{name}': {err}") from None
    return Preset(name, kind, temporal, spatial, window, weights, repo, engine, family, release, shaping)


def make_audio_setting(name: str, fields: dict, default_weights: str = "official") -> AudioSetting:
    """The audio part of the preset `name` from its config entry (codebooks default to the
    codec's), raising ValueError with an actionable message."""
    try:
        codec = audio_codec(fields.get("codec", DEFAULT_CODEC))
    except ValueError as err:
        raise ValueError(f"preset '{name}': {err}") from None
    codebooks = int(fields.get("codebooks", codec.default_codebooks))
    choices = codec.codebook_choices
    if codebooks not in choices:
        allowed = str(choices[0]) if len(choices) == 1 else f"{choices[0]} to {choices[-1]}"
        raise ValueError(f"preset '{name}': {codec.label} codes with {allowed} codebooks, not {codebooks}")
    return AudioSetting(codec.name, codebooks, fields.get("weights", default_weights))


GRID_KEYS = (*MODEL_KEYS, "window")
SHAPING_GRID_KEYS = ("fps", "size", "fit")  # optional in a grid, as "family" and "codec" are


def grid_presets(grid: dict) -> tuple[dict[str, dict], list[str]]:
    """Every combination of a parameter grid as preset entries named after their parameters
    (`DV8x16x16-w33`; another family's preset has the family's name first, another codec's the
    codec's name last, after the targets: `-fps24`, `-1280x720`, `-pad`), and the combinations
    left out because no released tokenizer or no valid window fits them (for example temporal
    4 with spatial 16)."""
    if not grid:
        return {}, []
    missing = [key for key in GRID_KEYS if key not in grid]
    if missing:
        raise ValueError(f"grid: give lists for all of kind, temporal, spatial and window; missing {missing}")
    presets, skipped = {}, []
    families, codecs = grid.get("family", [DEFAULT_FAMILY]), grid.get("codec", [DEFAULT_CODEC])
    targets = [[(key, value) for value in grid[key]] for key in SHAPING_GRID_KEYS if key in grid]
    models = (grid[key] for key in GRID_KEYS)
    combinations = itertools.product(families, codecs, itertools.product(*targets), *models)
    for family, codec, shaping, *values in combinations:
        kind, temporal, spatial, window = values
        name = f"{_model_name(kind, temporal, spatial)}-w{window}" + "".join(map(_target_name, shaping))
        fields = {**dict(zip(GRID_KEYS, values, strict=True)), **dict(shaping)}
        if family != DEFAULT_FAMILY:
            name, fields = f"{family}-{name}", {"family": family, **fields}
        if codec != DEFAULT_CODEC:
            name, fields = f"{name}-{codec}", {**fields, "codec": codec}
        try:
            make_preset(name, fields)
            make_audio_setting(name, fields)
        except ValueError as err:
            skipped.append(str(err))
            continue
        presets[name] = fields
    return presets, skipped


def _target_name(target: tuple[str, object]) -> str:
    """A grid preset's name part for a target: -fps24 (-fps30000-1001), -1280x720, -pad."""
    key, value = target
    if key == "fps":
        try:
            return "-fps" + rate_text(parse_rate(value)).replace("/", "-")
        except ValueError:
            return f"-fps{value}"  # refused with its reason when the preset is made
    return f"-{value}"
