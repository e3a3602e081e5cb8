"""Manifest rows: where each video's token files are, what a clip needs to know of them, and
whether the files are still the ones the manifest describes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from avtokens import AvTokensError
from avtokens.audio_codecs import LEGACY_CODEC_ROW
from avtokens.media import sha256_of
from avtokens.storage import folder_of, is_url, joined, object_sizes, read_text
from avtokens.visual_tokenizers import LEGACY_FAMILY, LatentLayout, visual_tokenizer


@dataclass(frozen=True)
class VideoTokens:
    """One manifest row: where a video's token files are and what a clip needs to know."""

    where: str  # "<manifest>:<line>", for messages
    video: str
    preset: str
    family: str  # of the tokenizer: avtokens.visual_tokenizers
    kind: str
    factors: tuple[int, int]  # temporal, spatial
    window: int
    visual: Path | str  # a local file, or an object's URL (avtokens.storage)
    audio: Path | str
    latent_frames: int
    fps: Fraction
    codec: str  # of the audio: avtokens.audio_codecs
    codebooks: int
    codebook_size: int
    code_clock: tuple[int, int]  # the codes' sample rate and hop
    latent_size: tuple[int, int]  # latent height and width
    bucket: str | None = None  # the preset's size it was brought to (avtokens.shaping), if any
    first_tick: int = 0  # a preset's timeline: frame j shows the source at (first_tick + j) / fps s
    # fit: pad: the latent positions the picture covers (x, y, width, height), the rest pad
    content: tuple[int, int, int, int] | None = None
    source_sha256: str | None = None  # of the video file the tokens were made from
    release: str = ""  # of the tokenizer family (avtokens.visual_tokenizers), "" where rows lack it

    @property
    def latents_per_window(self) -> int:
        return 1 + (self.window - 1) // self.factors[0]

    @property
    def layout(self) -> LatentLayout:
        """How its family stores its kind of tokens: the visual file's tensor, its dtype and,
        for discrete tokens, their vocabulary (which the files do not record)."""
        return visual_tokenizer(self.family).layout(self.kind)


def read_manifests(manifests, preset: str | None = None, verify: str = "size",
                   storage_options: dict | None = None) -> list[VideoTokens]:  # fmt: skip
    """The rows of one or more manifest.jsonl files for one preset (`preset` may be left out
    when they hold only one), with their files checked: `verify` "size" (present, same size
    as when the manifest was written), "sha256" (also the same content: reads every file
    whole once) or "none".

    A manifest may be an object (`s3://bucket/results/manifest.jsonl`): its token files are
    then the objects beside it, checked by size with a listing per folder, not a request per
    file; `storage_options` go to fsspec (avtokens.storage)."""
    if verify not in ("size", "sha256", "none"):
        raise ValueError(f"verify must be 'size', 'sha256' or 'none', not {verify!r}")
    manifests = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests)
    rows = []
    for manifest in manifests:
        manifest = manifest if is_url(manifest) else Path(manifest)
        try:
            lines = read_text(manifest, storage_options).splitlines()
        except OSError as err:
            raise AvTokensError(f"{manifest}: cannot be read ({err.strerror or err})") from None
        rows += [
            (f"{manifest}:{n}", folder_of(manifest), json.loads(line))
            for n, line in enumerate(lines, 1)
            if line
        ]
    presets = sorted({row["preset"] for _, _, row in rows})
    if preset is None and len(presets) > 1:
        raise AvTokensError(f"{', '.join(map(str, manifests))}: rows of presets {', '.join(presets)}; "
                            "choose one with preset=")  # fmt: skip
    chosen = [(where, base, row) for where, base, row in rows if preset is None or row["preset"] == preset]
    if not chosen:
        raise AvTokensError(
            f"{', '.join(map(str, manifests))}: no rows of preset {preset} (found: {presets})"
        )
    videos = [_video_tokens(where, base, row) for where, base, row in chosen]
    kinds = {}
    for video in videos:
        kinds.setdefault((video.family, video.kind, video.factors, video.codec, video.codebooks), video)
    if len(kinds) > 1:
        described = [
            f"{v.where} is {v.family} {v.kind}{v.factors[0]}x{v.factors[1]}x{v.factors[1]} with "
            f"{v.codebooks} codebooks of {v.codec}"
            for v in kinds.values()
        ]
        raise AvTokensError("one dataset needs one kind of tokens, but " + " and ".join(described))
    remote = [path for video in videos for path in (video.visual, video.audio) if is_url(path)]
    sizes = object_sizes(remote, storage_options) if remote and verify != "none" else {}
    problems = [
        p
        for video, (_, _, row) in zip(videos, chosen, strict=True)
        for p in _file_problems(video, row, verify, sizes, storage_options)
    ]
    if problems:
        raise AvTokensError(f"{len(problems)} token file(s) missing or changed since the manifest was "
                            "written (rerun the workflow):\n" + "\n".join(problems))  # fmt: skip
    return videos


def _video_tokens(where: str, base: Path | str, row: dict) -> VideoTokens:
    # A manifest written before codecs were plug-ins has neither family nor codec: Cosmos and
    # DAC as they were then, not today's defaults.
    row = {"family": LEGACY_FAMILY, **LEGACY_CODEC_ROW, **row}
    try:
        return VideoTokens(
            where=where, video=row["video"], preset=row["preset"], family=row["family"],
            kind=row["kind"],
            factors=(row["temporal"], row["spatial"]), window=row["window"],
            visual=joined(base, row["visual_tokens"]), audio=joined(base, row["audio_tokens"]),
            latent_frames=row["latent_frames"], fps=Fraction(row["fps"]),
            codec=row["audio_codec"], codebooks=row["audio_codebooks"],
            codebook_size=row["audio_codebook_size"], code_clock=(row["audio_sample_rate"], row["audio_hop"]),
            latent_size=(row["latent_height"], row["latent_width"]), bucket=row.get("bucket"),
            first_tick=row.get("first_tick", 0),
            content=latent_rect(row.get("picture_rect"), row["spatial"]),
            source_sha256=row.get("source_sha256"), release=row.get("release", ""),
        )  # fmt: skip
    except KeyError as err:
        raise AvTokensError(f"{where}: the row has no {err.args[0]!r}; write the manifest again with "
                            "this version (snakemake --forcerun manifest)") from None  # fmt: skip


def latent_rect(rect: list[int] | None, spatial: int) -> tuple[int, int, int, int] | None:
    """The latent positions a picture rectangle (pixels) touches."""
    if rect is None:
        return None
    x, y, width, height = rect
    left, top = x // spatial, y // spatial
    return left, top, -(-(x + width) // spatial) - left, -(-(y + height) // spatial) - top


def _file_problems(video: VideoTokens, row: dict, verify: str, object_sizes: dict[str, int],
                   storage_options: dict | None) -> list[str]:  # fmt: skip
    """What is wrong with a row's files; `object_sizes`: the sizes of the objects among them."""
    problems = []
    if verify == "none":
        return problems
    for part, path in (("visual_tokens", video.visual), ("audio_tokens", video.audio)):
        if is_url(path):
            size = object_sizes.get(path)
        else:
            size = path.stat().st_size if path.is_file() else None
        if size is None:
            problems.append(f"{video.where}: {path}: no such file")
        elif size != row[f"{part}_bytes"]:
            problems.append(f"{video.where}: {path}: {size} bytes, the manifest says {row[f'{part}_bytes']}")
        elif verify == "sha256" and sha256_of(path, storage_options=storage_options) != row[f"{part}_sha256"]:
            problems.append(f"{video.where}: {path}: its sha256 differs from the manifest's")
    return problems
