"""Tokenizer presets: the rules a preset must obey, checked before any work starts.

Pure Python (no torch) because the Snakefile imports it to validate the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from avtokens.windows import check_window_length

# How a Cosmos network runs: the released TorchScript graph, our own modules filled with its
# weights, or those modules through torch.compile; auto: compiled on a GPU, else torchscript.
ENGINES = ("auto", "torchscript", "eager", "compiled")
# (temporal, spatial) compression pairs NVIDIA released, for both CV and DV.
RELEASED_FACTORS = {(4, 8), (8, 8), (8, 16)}
DAC_WEIGHTS_FILE = "weights_44khz_8kbps_0.0.1.pth"
# Frames coded together: 121 is the temporal context of NVIDIA's Cosmos 1.0 tokenizers and
# reproduces the original description's token counts; NVIDIA's tool uses 17 (34% more tokens).
DEFAULT_WINDOW = 121
_NEW_PREFIX, _OLD_PREFIX = "Cosmos-0.1-Tokenizer-", "Cosmos-Tokenizer-"
_MODEL_NAME = re.compile(r"Cosmos-0\.1-Tokenizer-(CV|DV)(\d+)x(\d+)x\3")


@dataclass(frozen=True)
class Preset:
    name: str
    kind: str  # "CV" (continuous latents) or "DV" (discrete indices)
    temporal: int
    spatial: int
    window: int
    weights: str  # "official" or "demo"
    repo: str  # Hugging Face repo of the Cosmos checkpoint, e.g. nvidia/Cosmos-0.1-Tokenizer-CV8x8x8
    engine: str = "auto"  # how the network runs: see ENGINES

    @property
    def model(self) -> str:
        """The checkpoint's folder name: the repo's name without its owner."""
        return self.repo.rsplit("/", 1)[-1]

    @property
    def folder_names(self) -> list[str]:
        """Folder names the checkpoint may have locally: the repo's name, then its other
        spelling (NVIDIA renamed Cosmos-Tokenizer-* to Cosmos-0.1-Tokenizer-*)."""
        for old, new in ((_OLD_PREFIX, _NEW_PREFIX), (_NEW_PREFIX, _OLD_PREFIX)):
            if self.model.startswith(old):
                return [self.model, new + self.model[len(old) :]]
        return [self.model]

    @property
    def factors(self) -> str:
        return f"{self.temporal}x{self.spatial}x{self.spatial}"

    @property
    def is_discrete(self) -> bool:
        return self.kind == "DV"


def default_model_name(kind: str, temporal: int, spatial: int) -> str:
    return f"{_NEW_PREFIX}{kind}{temporal}x{spatial}x{spatial}"


def make_preset(name: str, fields: dict, default_weights: str = "official") -> Preset:
    """Build a preset from its config entry, raising ValueError with an actionable message."""
    kind, temporal, spatial = fields["kind"], int(fields["temporal"]), int(fields["spatial"])
    if kind not in ("CV", "DV"):
        raise ValueError(f"preset '{name}': kind must be CV or DV, not {kind!r}")
    if (temporal, spatial) not in RELEASED_FACTORS:
        pairs = ", ".join(f"{t}x{s}x{s}" for t, s in sorted(RELEASED_FACTORS))
        raise ValueError(
            f"preset '{name}': no Cosmos tokenizer compresses {temporal}x{spatial}x{spatial}; "
            f"released factors are {pairs} (temporal 4 exists only with spatial 8)"
        )
    window = int(fields.get("window", DEFAULT_WINDOW))
    try:
        check_window_length(window, temporal)
    except ValueError as err:
        raise ValueError(f"preset '{name}': {err}") from None
    weights = fields.get("weights", default_weights)
    if weights not in ("official", "demo"):
        raise ValueError(f"preset '{name}': weights must be official or demo, not {weights!r}")
    # Stand-ins exist for the released layouts only, so a demo preset ignores `repo`.
    repo = f"nvidia/{default_model_name(kind, temporal, spatial)}"
    if weights == "official" and fields.get("repo"):
        repo = fields["repo"]
    engine = fields.get("engine", "auto")
    if engine not in ENGINES:
        raise ValueError(f"preset '{name}': engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    return Preset(name, kind, temporal, spatial, window, weights, repo, engine)


def released_model_factors(model: str) -> tuple[str, int, int]:
    """(kind, temporal, spatial) of a `Cosmos-0.1-Tokenizer-{kind}{t}x{s}x{s}` name."""
    match = _MODEL_NAME.fullmatch(model)
    if not match:
        raise ValueError(f"{model!r} is not a Cosmos-0.1-Tokenizer-{{CV,DV}}TxSxS name")
    return match.group(1), int(match.group(2)), int(match.group(3))


def grid_presets(grid: dict) -> tuple[dict[str, dict], list[str]]:
    """Every combination of a parameter grid as preset entries named after their parameters
    (`DV8x16x16-w33`), and the combinations left out because no released tokenizer or no
    valid window fits them (for example temporal 4 with spatial 16)."""
    if not grid:
        return {}, []
    missing = [key for key in ("kind", "temporal", "spatial", "window") if key not in grid]
    if missing:
        raise ValueError(f"grid: give lists for all of kind, temporal, spatial and window; missing {missing}")
    presets, skipped = {}, []
    for kind in grid["kind"]:
        for temporal in grid["temporal"]:
            for spatial in grid["spatial"]:
                for window in grid["window"]:
                    name = f"{kind}{temporal}x{spatial}x{spatial}-w{window}"
                    fields = {"kind": kind, "temporal": temporal, "spatial": spatial, "window": window}
                    try:
                        make_preset(name, fields)
                    except ValueError as err:
                        skipped.append(str(err))
                        continue
                    presets[name] = fields
    return presets, skipped
