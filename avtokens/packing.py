"""Packed training shards: a preset's videos cut into clips of L latent frames, each with the
audio codes of exactly those frames, shuffled across videos and written into WebDataset tars.

A sample is the files of one key in a tar (WebDataset's convention: the key is the member's
path up to the first dot of its name):

    <key>.visual.npy         the clip's visual tokens as the token file stores them: discrete
                             indices as they are, continuous bf16 latents as their uint16 bits
                             (numpy has no bfloat16; `torch.from_numpy(a).view(torch.bfloat16)`)
    <key>.audio_codes.npy    its code frames [N, codebooks], uint16
    <key>.audio_offsets.npy  where each latent frame's codes start in them, and where the last
                             ends [L + 1], int64
    <key>.json               what the clip is: video, preset, start, time, rates, tokenizer, codec

The key is `<video>/<preset>/<start>`, with dots and percent signs in names percent-encoded,
so it is unique, stable and has no dot. A tar is written under a temporary name and renamed
when complete; its members have fixed owners and times, so the same inputs give the same
bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.data.manifests import VideoTokens, read_manifests
from avtokens.tokenfile import TokenFileReader

PACK_FORMAT = "avtokens-pack/1"


@dataclass(frozen=True)
class ClipRef:
    video: int  # index into the videos packed
    start: int  # first latent frame
    length: int


def clip_starts(
    latent_frames: int, length: int, stride: int | None = None, keep_partial: bool = False
) -> list[int]:
    """Where the clips of a video of `latent_frames` start: every `stride` (default `length`)
    latent frames while a whole clip fits; with `keep_partial`, one more clip that runs to the
    end, shorter than `length`."""
    if length < 1 or (stride is not None and stride < 1):
        raise ValueError(f"clip length and stride must be at least 1, not {length} and {stride}")
    step = stride or length
    starts = list(range(0, latent_frames - length + 1, step))
    following = starts[-1] + step if starts else 0
    if keep_partial and following < latent_frames:
        starts.append(following)
    return starts


def sample_key(video: str, preset: str, start: int) -> str:
    """A sample's key: stable, unique, and without a dot, which WebDataset reads as the start
    of a file's extension."""

    def escaped(name: str) -> str:
        return name.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")

    return f"{escaped(video)}/{escaped(preset)}/{start:06d}"


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _stored(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as the token file stores it, for numpy: bfloat16 as its uint16 bits."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


class _Readers:
    """The token files of the videos packed, each opened once."""

    def __init__(self):
        self.open: dict[Path, TokenFileReader] = {}

    def __call__(self, path: Path) -> TokenFileReader:
        if path not in self.open:
            self.open[path] = TokenFileReader(path)
        return self.open[path]

    def close(self) -> None:
        for reader in self.open.values():
            reader.close()


def clip_files(video: VideoTokens, clip: ClipRef, readers: _Readers) -> dict[str, bytes]:
    """The files of one clip's sample, by extension."""
    visual, audio = readers(video.visual), readers(video.audio)
    stop = clip.start + clip.length
    frames = visual.read_frames(video.layout.tensor, clip.start, stop)
    spans = visual.read("frame_spans")[clip.start : stop]
    ranges = audio.read("code_ranges")[clip.start : stop]
    first, last = int(ranges[0, 0]), int(ranges[-1, 1])
    codes = audio.read_frames("codes", first, last)
    offsets = torch.cat([ranges[:, 0], ranges[-1:, 1]]) - first
    frame = int(spans[0, 0]) + video.first_tick
    record = {
        "format": PACK_FORMAT,
        "video": video.video,
        "preset": video.preset,
        "start": clip.start,
        "latent_frames": clip.length,
        "frame_start": int(spans[0, 0]),
        # seconds after the source's first frame (a preset's timeline may start later)
        "time": frame * video.fps.denominator / video.fps.numerator,
        "fps": f"{video.fps.numerator}/{video.fps.denominator}",
        "family": video.family,
        "kind": video.kind,
        "temporal": video.factors[0],
        "spatial": video.factors[1],
        "window": video.window,
        "bucket": video.bucket,
        "visual": {"dtype": str(frames.dtype).removeprefix("torch."), "shape": list(frames.shape)},
        "codec": video.codec,
        "codebooks": video.codebooks,
        "code_clock": list(video.code_clock),
        "source_sha256": video.source_sha256,
    }
    return {
        "visual.npy": _npy(_stored(frames)),
        "audio_codes.npy": _npy(codes.numpy()),
        "audio_offsets.npy": _npy(offsets.numpy()),
        "json": json.dumps(record, sort_keys=True).encode(),
    }


def _member(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_clips(manifests, preset: str, dest: Path | str, clip_latent_frames: int, *,
               stride: int | None = None, keep_partial: bool = False, shard_bytes: int = 1 << 30,
               seed: int = 0) -> list[Path]:  # fmt: skip
    """Cut the videos of `preset` in `manifests` into clips and write them, shuffled across
    videos by `seed`, into tars `<dest>/<preset>-000000.tar`, ... of about `shard_bytes` each
    (a tar ends with the sample that reaches it). Samples are written as they are read: a job
    holds one clip at a time. Returns the tars in order."""
    videos = read_manifests(manifests, preset=preset)
    clips = [ClipRef(v, start, min(clip_latent_frames, video.latent_frames - start))
             for v, video in enumerate(videos)
             for start in clip_starts(video.latent_frames, clip_latent_frames, stride,
                                      keep_partial)]  # fmt: skip
    if not clips:
        raise AvTokensError(f"{preset}: no video of {manifests} has {clip_latent_frames} latent frames")
    order = np.random.default_rng(seed).permutation(len(clips))
    readers, shards = _Readers(), _TarShards(Path(dest), preset, shard_bytes)
    try:
        for index in order:
            clip = clips[index]
            video = videos[clip.video]
            key = sample_key(video.video, video.preset, clip.start)
            shards.add(
                {f"{key}.{extension}": data for extension, data in clip_files(video, clip, readers).items()}
            )
        shards.close()
    finally:
        shards.abandon()
        readers.close()
    return shards.written


class _TarShards:
    """Tars `<folder>/<name>-000000.tar`, ... of about `shard_bytes` each, each written under
    a temporary name (`atomic_output`) and renamed when complete."""

    def __init__(self, folder: Path, name: str, shard_bytes: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name, self.shard_bytes = folder, name, shard_bytes
        self.written: list[Path] = []
        self._stack, self._tar, self._size = None, None, 0

    def add(self, files: dict[str, bytes]) -> None:
        if self._tar is None:
            self._stack = contextlib.ExitStack()
            tmp = self._stack.enter_context(
                atomic_output(self.folder / f"{self.name}-{len(self.written):06d}.tar")
            )
            self._tar = self._stack.enter_context(tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT))
        for member, data in files.items():
            self._tar.addfile(_member(member, data), io.BytesIO(data))
            self._size += len(data)
        if self._size >= self.shard_bytes:
            self.close()

    def close(self) -> None:
        """End the tar being written (it takes its final name)."""
        if self._stack is not None:
            self._stack.close()
            self.written.append(self.folder / f"{self.name}-{len(self.written):06d}.tar")
            self._stack, self._tar, self._size = None, None, 0

    def abandon(self) -> None:
        """After a failure: the tar being written goes, its temporary file with it."""
        if self._stack is not None:
            self._stack.__exit__(AvTokensError, AvTokensError("packing stopped"), None)
            self._stack = self._tar = None
