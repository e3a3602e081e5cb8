"""The map-style dataset: clips of consecutive latent frames of one video, each with its visual
tokens and exactly its audio codes, read by byte range from the token files."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from avtokens import AvTokensError
from avtokens.alignment import fixed_size_blocks, nominal_block_size
from avtokens.data.manifests import read_manifests
from avtokens.data.vocabulary import JointVocabulary
from avtokens.tokenfile import TokenFileReader

log = logging.getLogger(__name__)


class AlignedClips(Dataset):
    """Map-style dataset of clips of `clip_length` latent frames, every `stride` (default:
    `clip_length`, so clips tile a video) latent frames of every video of a manifest.

    `tail`: what becomes of a video's last latent frames that do not fill a clip: "drop"
    (default: every clip has the same length) or "short" (a shorter last clip, so every
    latent frame is in exactly one clip; batch those with `collate_padded`).
    `audio`: "ragged" (a clip's codes [n, codebooks] with `audio_offsets` [L + 1]: latent frame i
    holds codes[offsets[i]:offsets[i + 1]]) or "blocks" ([L, block_size, codebooks], each latent
    frame's codes cut or padded by repeating its last: `fixed_size_blocks`; `block_size`
    defaults to what every full latent frame carries, 27 at 25 fps with 8x factors).
    `joint_tokens` (discrete tokens only): also a flat id sequence per clip in the dataset's
    `vocabulary`.

    `manifests` may be objects (`s3://bucket/results/manifest.jsonl`): a clip is then read with
    one ranged request per token file, its own bytes; `storage_options` go to fsspec
    (credentials and endpoint are otherwise the environment's, as boto3 finds them).

    A clip is a dict: `video`, `preset`, `start` (first latent frame), `visual` (CV bf16
    [L, h, w, 16], DV int64 [L, h, w]), the audio as above, `frame_start` (int64 [L]: the
    first video frame of each latent frame), `time` (float64 [L]: its time in seconds),
    `window_start` (bool [L]: the first latent frame of a tokenizer window, which codes one
    video frame like an image), and with joint tokens `tokens` and `token_offsets` [L + 1].

    `layout`: how the videos' family stores their kind of tokens; `vocabulary`: their
    `JointVocabulary` (None for continuous latents). A dataset holds one kind of tokens
    (`read_manifests` refuses rows of different families, kinds, factors, codecs or numbers of
    codebooks), so its rows share both.
    """

    def __init__(self, manifests, clip_length: int, preset: str | None = None, stride: int | None = None,
                 tail: str = "drop", audio: str = "ragged", block_size: int | None = None,
                 joint_tokens: bool = False, verify: str = "size", open_files: int = 64,
                 storage_options: dict | None = None):  # fmt: skip
        if clip_length < 1 or (stride is not None and stride < 1):
            raise ValueError(f"clip_length and stride must be positive, not {clip_length} and {stride}")
        if tail not in ("drop", "short") or audio not in ("ragged", "blocks"):
            raise ValueError(f"tail must be 'drop' or 'short' (not {tail!r}), audio 'ragged' or 'blocks' "
                             f"(not {audio!r})")  # fmt: skip
        self.videos = read_manifests(manifests, preset, verify, storage_options)
        self.storage_options = storage_options
        first = self.videos[0]
        self.layout = first.layout
        self.vocabulary = JointVocabulary.of(first) if self.layout.vocabulary is not None else None
        if joint_tokens and self.vocabulary is None:
            raise ValueError("joint_tokens needs discrete (DV) visual tokens; these are CV latents")
        if audio == "blocks" and block_size is None:
            sizes = {nominal_block_size(v.factors[0], v.fps, *v.code_clock) for v in self.videos}
            if len(sizes) > 1:
                raise ValueError(f"videos carry {sorted(sizes)} code frames per latent frame (different "
                                 "frame rates): give block_size")  # fmt: skip
            block_size = sizes.pop()
        self.clip_length, self.stride = clip_length, stride or clip_length
        self.tail, self.audio, self.block_size, self.joint_tokens = tail, audio, block_size, joint_tokens
        self.clips: list[tuple[int, int, int]] = []  # (video index, first latent frame, length)
        for index, video in enumerate(self.videos):
            clips = self._clips_of(video.latent_frames)
            if not clips:
                log.warning("%s: video %s has %d latent frames, fewer than clip_length %d: left out",
                            video.where, video.video, video.latent_frames, clip_length)  # fmt: skip
            self.clips += [(index, start, length) for start, length in clips]
        if not self.clips:
            raise AvTokensError(
                f"no video has {clip_length} latent frames: no clips (tail='short' keeps shorter ones)"
            )
        self._readers: OrderedDict[Path | str, TokenFileReader] = OrderedDict()
        self._open_files, self._bytes_of_closed = open_files, 0
        self._small: dict[Path | str, dict[str, torch.Tensor]] = {}
        self._readers_pid = os.getpid()

    def __getstate__(self) -> dict:
        # A worker started by spawning opens its own files.
        return {**self.__dict__, "_readers": OrderedDict()}

    def _clips_of(self, latent_frames: int) -> list[tuple[int, int]]:
        length, stride = self.clip_length, self.stride
        clips = [(start, length) for start in range(0, latent_frames - length + 1, stride)]
        covered = clips[-1][0] + length if clips else 0
        if self.tail == "short" and covered < latent_frames:
            start = clips[-1][0] + stride if clips else 0
            clips.append((start, latent_frames - start))
        return clips

    def __len__(self) -> int:
        return len(self.clips)

    def clip_shape(self, index: int) -> tuple[int, int, int]:
        """Clip `index`'s latent frames, height and width: clips batch together when they agree."""
        video_index, _, length = self.clips[index]
        return (length, *self.videos[video_index].latent_size)

    @property
    def bytes_read(self) -> int:
        """Bytes this process has read from token files."""
        return self._bytes_of_closed + sum(reader.bytes_read for reader in self._readers.values())

    def _reader(self, path: Path | str) -> TokenFileReader:
        # Opened lazily, so that each data-loader worker has its own; the least recently
        # used is closed beyond `open_files`. A forked worker leaves its parent's alone: an
        # object's reader holds a connection pool and event loop of the parent's.
        if self._readers_pid != os.getpid():
            self._readers, self._readers_pid = OrderedDict(), os.getpid()
        if path in self._readers:
            self._readers.move_to_end(path)
        else:
            self._readers[path] = TokenFileReader(path, self.storage_options)
            if len(self._readers) > self._open_files:
                closed_path, closed = self._readers.popitem(last=False)
                closed.close()
                self._bytes_of_closed += closed.bytes_read
                self._small.pop(closed_path, None)
        return self._readers[path]

    def _small_tensor(self, path: Path | str, name: str) -> torch.Tensor:
        """frame_spans and code_ranges: a few bytes per latent frame, read once per file and
        kept while it is open."""
        reader = self._reader(path)
        held = self._small.setdefault(path, {})
        if name not in held:
            held[name] = reader.read(name)
        return held[name]

    def __getitem__(self, index: int) -> dict:
        video_index, start, length = self.clips[index]
        video = self.videos[video_index]
        stop = start + length
        visual = self._reader(video.visual).read_frames(self.layout.tensor, start, stop)
        if self.vocabulary is not None:  # indices, as ids
            visual = visual.to(torch.int64)
        spans = self._small_tensor(video.visual, "frame_spans")[start:stop]
        ranges = self._small_tensor(video.audio, "code_ranges")[start:stop]
        first, last = int(ranges[0, 0]), int(ranges[-1, 1])
        codes = self._reader(video.audio).read_frames("codes", first, last).to(torch.int64)
        offsets = torch.cat([ranges[:, 0], ranges[-1:, 1]]) - first
        clip = {
            "video": video.video,
            "preset": video.preset,
            "start": start,
            "visual": visual,
            "frame_start": spans[:, 0].clone(),
            # seconds after the source's first frame (a preset's timeline may start later)
            "time": (spans[:, 0] + video.first_tick).double() * video.fps.denominator / video.fps.numerator,
            "window_start": torch.arange(start, stop) % video.latents_per_window == 0,
        }
        if self.audio == "ragged":
            clip |= {"audio_codes": codes, "audio_offsets": offsets}
        else:
            clip["audio_codes"] = fixed_size_blocks(codes, ranges - first, self.block_size)
        if self.joint_tokens:
            frames = [self.vocabulary.frame_tokens(visual[i], codes[offsets[i] : offsets[i + 1]])
                      for i in range(length)]  # fmt: skip
            clip["tokens"] = torch.cat(frames)
            clip["token_offsets"] = torch.tensor([0, *np.cumsum([len(f) for f in frames])])
        return clip
