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
from pathlib import Path

import numpy as np
import torch

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.data import AlignedClips

PACK_FORMAT = "avtokens-pack/1"


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


def sample_files(clips: AlignedClips, index: int) -> dict[str, bytes]:
    """The files of clip `index`'s sample, by extension: the clip as `AlignedClips` cuts it
    (ragged audio), its tokens in the dtypes the token files store."""
    clip, video = clips[index], clips.videos[clips.clips[index][0]]
    visual = clip["visual"].to(getattr(torch, clips.layout.dtype))  # DV indices come as int64
    record = {
        "format": PACK_FORMAT,
        "video": video.video,
        "preset": video.preset,
        "start": clip["start"],
        "latent_frames": len(visual),
        "frame_start": int(clip["frame_start"][0]),
        "time": float(clip["time"][0]),  # seconds after the source's first frame
        "fps": f"{video.fps.numerator}/{video.fps.denominator}",
        "family": video.family,
        "kind": video.kind,
        "temporal": video.factors[0],
        "spatial": video.factors[1],
        "window": video.window,
        "bucket": video.bucket,
        "visual": {"dtype": clips.layout.dtype, "shape": list(visual.shape)},
        "codec": video.codec,
        "codebooks": video.codebooks,
        "code_clock": list(video.code_clock),
        "source_sha256": video.source_sha256,
    }
    return {
        "visual.npy": _npy(_stored(visual)),
        "audio_codes.npy": _npy(clip["audio_codes"].numpy().astype(np.uint16)),  # as stored
        "audio_offsets.npy": _npy(clip["audio_offsets"].numpy()),
        "json": json.dumps(record, sort_keys=True).encode(),
    }


def _member(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_clips(manifests, preset: str, dest: Path | str, clip_latent_frames: int, *,
               stride: int | None = None, tail: str = "drop", shard_bytes: int = 1 << 30,
               seed: int = 0) -> list[Path]:  # fmt: skip
    """Cut the videos of `preset` in `manifests` into clips (`AlignedClips`: `stride`, and
    `tail` for a video's last latent frames that do not fill a clip) and write them, shuffled
    across videos by `seed`, into tars `<dest>/<preset>-000000.tar`, ... of about `shard_bytes`
    each (a tar ends with the sample that reaches it). Samples are written as they are read: a
    job holds one clip at a time. Returns the tars in order."""
    clips = AlignedClips(manifests, clip_latent_frames, preset=preset, stride=stride, tail=tail)
    shards = _TarShards(Path(dest), preset, shard_bytes)
    try:
        for index in np.random.default_rng(seed).permutation(len(clips)).tolist():
            video_index, start, _ = clips.clips[index]
            key = sample_key(clips.videos[video_index].video, preset, start)
            shards.add({f"{key}.{extension}": data for extension, data in sample_files(clips, index).items()})
        shards.close()
    finally:
        shards.abandon()
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
