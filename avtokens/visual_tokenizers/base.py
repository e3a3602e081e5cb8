"""What the workflow needs of a family of visual tokenizers.

A family is one module under `avtokens.visual_tokenizers`: a subclass of `VisualTokenizer`,
made once and listed in the registry (`avtokens.visual_tokenizers.VISUAL_TOKENIZERS`). The
rules, the config schema, presets, checkpoints, stand-in weights, token metadata, summaries,
the manifest and the data loader ask it instead of naming a model. Importing a family must not
import torch: the Snakefile reads the registry while it plans (one plan per cluster job), so
the model code is imported where a model loads or runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# A preset's kind: continuous latents (bf16 [t, h, w, channels]) or discrete indices (uint16 [t, h, w]).
KINDS = {"CV": "continuous", "DV": "discrete"}
PARTS = ("encoder", "decoder")


@dataclass(frozen=True)
class LatentLayout:
    """How a kind of tokens is stored: the token file's tensor, its dtype and, for discrete
    tokens, the number of distinct indices."""

    tensor: str
    dtype: str
    vocabulary: int | None = None


class LoadedEncoder(Protocol):
    """What `VisualTokenizer.encoder` returns: frames [B, 3, T, H, W] in [-1, 1] of `dtype`,
    T = 1 + k * temporal, H and W multiples of spatial -> latents bf16 [B, 1 + k, H/s, W/s,
    channels] or indices int64 [B, 1 + k, H/s, W/s]. `full_batch`: how many windows a call of
    full windows at this resolution takes; an engine that compiles pads every call to it, so
    that it sees one shape per resolution (None: the call's own batch)."""

    preset: object
    device: object
    dtype: object
    channels: int | None  # of continuous latents; a property of the checkpoint
    record: dict  # the token file's `tokenizer.encoder`: file, sha256, dtype, engine, ...
    stand_in: bool
    metadata: dict  # more of the token file's `tokenizer` record (e.g. a latent normalisation)

    def __call__(self, frames, full_batch: int | None = None): ...


class LoadedDecoder(Protocol):
    """What `VisualTokenizer.decoder` returns: tokens as the encoder gives them (latents or
    indices, any batch of windows) -> frames [B, 3, 1 + temporal * (t - 1), h*s, w*s] in
    [-1, 1], in the network's dtype. `full_batch`: as for `LoadedEncoder`."""

    device: object
    record: dict

    def __call__(self, tokens, full_batch: int | None = None): ...


class VisualTokenizer:
    """A family: its releases and their checkpoints, frame rules, latent layout, loaders,
    stand-in weights and advice when memory runs out. Subclasses set the attributes and
    implement `open_encoder`, `open_decoder` and `write_stand_in`; `encoder` and `decoder`
    pin the files in the weights lock before they call those, whatever the family."""

    name: str  # a preset's `family:`
    label: str  # how messages name it
    # release -> {(kind, temporal, spatial): the Hugging Face repo of that model}
    releases: dict[str, dict[tuple[str, int, int], str]]
    default_release: str
    default_window: int
    engines: tuple[str, ...]  # a preset's `engine:` values; the first is the default
    # part -> files of a checkpoint folder it reads; the last one holds the weights
    files: dict[str, tuple[str, ...]]
    vocabulary: int | None = None  # distinct indices of discrete (DV) tokens
    # What reconstructions from its stand-in weights look like (README, report): what to expect
    # when judging a `weights: demo` run by eye.
    stand_in_output: str

    def models(self, release: str) -> dict[tuple[str, int, int], str]:
        return self.releases[release]

    def folder_names(self, repo: str) -> list[str]:
        """Names a checkpoint of `repo` may have locally, the first the one a fetch makes."""
        return [repo.rsplit("/", 1)[-1]]

    def checkpoint_files(self, *parts: str) -> list[str]:
        """The files of a checkpoint folder that `parts` read, each once."""
        return list(dict.fromkeys(name for part in parts or PARTS for name in self.files[part]))

    def weights_file(self, part: str) -> str:
        return self.files[part][-1]

    def layout(self, kind: str) -> LatentLayout:
        if kind == "DV":
            return LatentLayout("indices", "uint16", self.vocabulary)
        return LatentLayout("latents", "bfloat16")

    def single_window_advice(self, window: int) -> str:
        """What to change when one window does not fit in memory."""
        return f"lower the preset's `window` (now {window}), for example to 33 or 17"

    def lock_key(self, repo: str, file: str) -> str:
        """The weights lock's key of a file of a checkpoint of `repo`."""
        return f"{repo}/{file}"

    def encoder(self, folder: Path, preset, device, lock) -> LoadedEncoder:
        """The preset's encoder from the checkpoint `folder`, its files first pinned in `lock`."""
        return self.open_encoder(Path(folder), preset, device, self._pinned(folder, preset, "encoder", lock))

    def decoder(self, folder: Path, preset, device, lock) -> LoadedDecoder:
        """The preset's decoder from the checkpoint `folder`, its files first pinned in `lock`."""
        return self.open_decoder(Path(folder), preset, device, self._pinned(folder, preset, "decoder", lock))

    def _pinned(self, folder, preset, part: str, lock) -> dict[str, str]:
        from avtokens.checkpoints import pinned_files

        key_of = lambda name: self.lock_key(preset.repo, name)  # noqa: E731
        what = f"the {self.label} {part} of preset '{preset.name}'"
        origin = f"files of the Hugging Face repo {preset.repo}"
        return pinned_files(folder, self.files[part], key_of, lock, what, origin)

    def open_encoder(self, folder: Path, preset, device, digests: dict[str, str]) -> LoadedEncoder:
        """Load the encoder; `digests`: the sha256 of each of its `files`, already pinned."""
        raise NotImplementedError

    def open_decoder(self, folder: Path, preset, device, digests: dict[str, str]) -> LoadedDecoder:
        """Load the decoder; `digests`: the sha256 of each of its `files`, already pinned."""
        raise NotImplementedError

    def write_stand_in(self, folder: Path, kind: str, temporal: int, spatial: int,
                       full_size: bool = False) -> None:  # fmt: skip
        """A tiny randomly initialised model in the official file layout, marked as a stand-in;
        with `full_size`, the released architecture with random weights, which costs what the
        released model costs (for benchmarks; the workflow's stand-ins are the tiny ones)."""
        raise NotImplementedError
