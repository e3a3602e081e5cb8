"""What the workflow needs of an audio codec.

A codec is one module under `avtokens.audio_codecs`: a subclass of `AudioCodec`, made once and
listed in the registry (`avtokens.audio_codecs.AUDIO_CODECS`). Presets name one (`codec:`);
the rules, checkpoints, stand-in weights and the audio jobs ask it, and everything that reads
codes afterwards (alignment, summaries, manifest, data loader) reads the rates and codebooks
the codes file records, not the codec. Importing a codec must not import torch: the Snakefile
reads the registry while it plans, so model code is imported where a model loads or runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Protocol

# Samples [start, end) of a video's mono audio at the codec's rate, zeros past its end.
ReadSamples = Callable[[int, int], object]


class LoadedCodec(Protocol):
    """What `AudioCodec.load` returns: a model on a device that codes long audio window by
    window, in memory bounded by the window, however its network needs that done."""

    device: object
    codebooks: int
    codebook_size: int
    stand_in: bool
    record: dict  # the codes file's `codec`: name, file, sha256, stand_in, ...

    def encode(self, read: ReadSamples, frames: int, window: int) -> Iterator:
        """Code frames [0, frames), `window` at a time: int64 [k, codebooks] tensors, in order,
        reading the samples of code frame i from [i * hop, (i + 1) * hop)."""

    def decode(self, codes, window: int) -> Iterator:
        """codes int64 [n, codebooks] -> mono float samples [n * hop] in pieces, in order."""


class AudioCodec:
    """A codec: its rates, codebooks, checkpoint files and where they come from, its loader and
    stand-in weights. Subclasses set the attributes and implement `open` and `write_stand_in`;
    `load` pins the files in the weights lock before it calls `open`, whatever the codec."""

    name: str  # a preset's `codec:`
    label: str  # how messages and the report name it
    sample_rate: int  # Hz of the mono audio it codes
    hop: int  # samples per code frame
    codebook_size: int
    codebook_choices: range  # a preset's `codebooks:` values
    default_codebooks: int
    channel_policy = "downmixed to mono by ffmpeg before coding"
    folder: str  # the checkpoint's folder name (under `checkpoints`, and as a stand-in)
    files: tuple[str, ...]  # the folder's files the codec reads; the last holds the weights
    repo: str | None = None  # the Hugging Face repo the files come from
    url: str | None = None  # or, for a codec of one file, that file's URL (a release asset)
    # What reconstructions from its stand-in weights sound like (README, report).
    stand_in_output: str

    @property
    def code_rate(self) -> Fraction:
        """Code frames per second."""
        return Fraction(self.sample_rate, self.hop)

    def window_frames(self, seconds: float) -> int:
        """Code frames in a window of `seconds` (the audio jobs' `audio_window_seconds`)."""
        return max(1, int(seconds * self.code_rate))

    def setting(self, codebooks: int) -> str:
        """The name a video's codes of this codec and number of codebooks are kept under."""
        return self.name if len(self.codebook_choices) == 1 else f"{self.name}-q{codebooks}"

    def source(self, config: dict) -> dict:
        """Where the official files come from: {"repo": Hugging Face repo} or {"url": one file's
        URL}, the codec's own unless the config's `codecs: {<name>: ...}` names another (a mirror)."""
        own = {"url": self.url} if self.url else {"repo": self.repo}
        return config.get("codecs", {}).get(self.name) or own

    def lock_key(self, file: str) -> str:
        """The weights lock's key of one of the official files."""
        return f"{self.repo}/{file}"

    @property
    def origin(self) -> str:
        """Where the official files come from, for a message about a missing one."""
        return f"files of the Hugging Face repo {self.repo}"

    def load(self, folder: Path, codebooks: int, device, lock) -> LoadedCodec:
        """The codec from the checkpoint `folder`, its files first pinned in `lock`."""
        from avtokens.checkpoints import pinned_files

        digests = pinned_files(
            folder, self.files, self.lock_key, lock, f"the {self.label} checkpoint", self.origin
        )
        return self.open(Path(folder), codebooks, device, digests)

    def open(self, folder: Path, codebooks: int, device, digests: dict[str, str]) -> LoadedCodec:
        """Load the codec; `digests`: the sha256 of each of its `files`, already pinned."""
        raise NotImplementedError

    def write_stand_in(self, folder: Path, seed: int = 0, full_size: bool = False) -> None:
        """A tiny randomly initialised model in the official file layout, marked as a stand-in;
        with `full_size`, the released architecture with random weights, which costs what the
        released model costs (for benchmarks; the workflow's stand-ins are the tiny ones)."""
        raise NotImplementedError


def overlapping_windows(total: int, size: int, before: int, after: int):
    """(start, end, context_start, context_end) of each window of `size` over [0, total), with
    up to `before` and `after` positions of context around it."""
    for start in range(0, total, size):
        end = min(start + size, total)
        yield start, end, max(0, start - before), min(total, end + after)
