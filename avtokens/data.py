"""Training batches from token files: clips of L consecutive latent frames of one video and
preset, each latent frame with its visual tokens and exactly its audio codes.

    clips = AlignedClips("results/manifest.jsonl", clip_length=16, preset="DV8x16x16")
    batches = ClipBatchSampler(clips, batch_size=8, seed=0)  # rank and world size from torch.distributed
    loader = DataLoader(clips, batch_sampler=batches, num_workers=4, collate_fn=collate_clips)

Files are read by byte range (`TokenFileReader`), never whole. The order of an epoch is a
permutation seeded by (seed, epoch). Videos of different sizes give clips of different latent
shapes, which cannot be stacked: by default a batch holds clips of one shape (`epoch_batches`:
each shape's clips, in the epoch's order, cut into batches, and the batches ordered by their
first clip), so no batch ever mixes shapes, whatever the shuffle. Rank r of a world of n takes
every n-th batch; data-loader workers split a rank's batches (`ClipBatchSampler`: the
DataLoader hands them out; `AlignedClipStream`: batch k goes to worker k mod workers). Both
resume from a batch of the rank's epoch. The other way, clips of any shape in one batch padded
to the largest with a mask, is `ClipSampler` (clip by clip) with `collate_padded`.

Under DistributedDataParallel every rank must take as many steps in an epoch, or the last
collective of the rank with more waits for the others until the process group's timeout (30
minutes by default). So by default (`even="pad"`) every rank gets as many batches: the epoch's
batches are extended by its own first ones to a multiple of the world size (as
DistributedSampler does with clips), so every clip is seen and at most world_size - 1 batches
are repeated. `even="drop"` leaves the last few out instead, `even=False` gives shares that
differ by one (one process, or a loop that copes with uneven steps). Rank and world size come
from torch.distributed; a sampler or stream made under a launcher (WORLD_SIZE, RANK or
LOCAL_RANK saying "one of several") before `init_process_group`, without `rank=` and
`world_size=`, is refused rather than taking every clip on every rank.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from avtokens import AvTokensError
from avtokens.alignment import fixed_size_blocks, nominal_block_size
from avtokens.audio_codecs import DEFAULT_CODEC, LEGACY_CODEC_ROW, audio_codec
from avtokens.media import sha256_of
from avtokens.tokenfile import TokenFileReader
from avtokens.visual_tokenizers import DEFAULT_FAMILY, LEGACY_FAMILY, visual_tokenizer

log = logging.getLogger(__name__)
_DEFAULT_CODEC = audio_codec(DEFAULT_CODEC)


@dataclass(frozen=True)
class JointVocabulary:
    """One token vocabulary for DV visual indices and audio codes, for autoregressive models.
    A latent frame is `[FRAME, v_1 .. v_hw, AUDIO, a_1 .. a_qk]`: its visual indices row-major,
    then its k code frames, each as q codebook ids. With the defaults (Cosmos DV, DAC: q = 9
    codebooks of 1024) the ids are:

    - `[0, 64000)`: visual FSQ indices, as stored (another family's vocabulary moves the ids
      below by its size);
    - `64000 + 1024 * b + c`: code c of codebook b (b in 0..8; another codec's codebooks and
      their size change the ids below);
    - `FRAME = 73216`: a latent frame begins; `AUDIO = 73217`: its audio begins;
    - `size = 73218`.

    A latent frame of h x w visual tokens with k code frames is 2 + hw + qk ids.
    """

    visual: int = visual_tokenizer(DEFAULT_FAMILY).vocabulary
    codebooks: int = _DEFAULT_CODEC.default_codebooks
    codebook_size: int = _DEFAULT_CODEC.codebook_size

    @property
    def audio_offset(self) -> int:
        return self.visual

    @property
    def frame(self) -> int:
        return self.visual + self.codebooks * self.codebook_size

    @property
    def audio(self) -> int:
        return self.frame + 1

    @property
    def size(self) -> int:
        return self.frame + 2

    def frame_tokens(self, visual: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One latent frame: visual indices [h, w] and its codes [k, codebooks] -> ids [2 + hw + qk]."""
        offsets = self.audio_offset + self.codebook_size * torch.arange(self.codebooks)
        return torch.cat([
            torch.tensor([self.frame]), visual.reshape(-1).to(torch.int64), torch.tensor([self.audio]),
            (codes.to(torch.int64) + offsets).reshape(-1),
        ])  # fmt: skip


JOINT_VOCABULARY = JointVocabulary()


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
    visual: Path
    audio: Path
    latent_frames: int
    fps: Fraction
    codec: str  # of the audio: avtokens.audio_codecs
    codebooks: int
    codebook_size: int
    code_clock: tuple[int, int]  # the codes' sample rate and hop
    latent_size: tuple[int, int]  # latent height and width

    @property
    def latents_per_window(self) -> int:
        return 1 + (self.window - 1) // self.factors[0]


def read_manifests(manifests, preset: str | None = None, verify: str = "size") -> list[VideoTokens]:
    """The rows of one or more manifest.jsonl files for one preset (`preset` may be left out
    when they hold only one), with their files checked: `verify` "size" (present, same size
    as when the manifest was written), "sha256" (also the same content: reads every file
    whole once) or "none"."""
    if verify not in ("size", "sha256", "none"):
        raise ValueError(f"verify must be 'size', 'sha256' or 'none', not {verify!r}")
    manifests = [manifests] if isinstance(manifests, (str, os.PathLike)) else list(manifests)
    rows = []
    for manifest in map(Path, manifests):
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise AvTokensError(f"{manifest}: cannot be read ({err.strerror or err})") from None
        rows += [
            (f"{manifest}:{n}", manifest.parent, json.loads(line)) for n, line in enumerate(lines, 1) if line
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
    problems = [
        p
        for video, (_, _, row) in zip(videos, chosen, strict=True)
        for p in _file_problems(video, row, verify)
    ]
    if problems:
        raise AvTokensError(f"{len(problems)} token file(s) missing or changed since the manifest was "
                            "written (rerun the workflow):\n" + "\n".join(problems))  # fmt: skip
    return videos


def _video_tokens(where: str, base: Path, row: dict) -> VideoTokens:
    # A manifest written before codecs were plug-ins has neither family nor codec: Cosmos and
    # DAC as they were then, not today's defaults.
    row = {"family": LEGACY_FAMILY, **LEGACY_CODEC_ROW, **row}
    try:
        return VideoTokens(
            where=where, video=row["video"], preset=row["preset"], family=row["family"],
            kind=row["kind"],
            factors=(row["temporal"], row["spatial"]), window=row["window"],
            visual=base / row["visual_tokens"], audio=base / row["audio_tokens"],
            latent_frames=row["latent_frames"], fps=Fraction(row["fps"]),
            codec=row["audio_codec"], codebooks=row["audio_codebooks"],
            codebook_size=row["audio_codebook_size"], code_clock=(row["audio_sample_rate"], row["audio_hop"]),
            latent_size=(row["latent_height"], row["latent_width"]),
        )  # fmt: skip
    except KeyError as err:
        raise AvTokensError(f"{where}: the row has no {err.args[0]!r}; write the manifest again with "
                            "this version (snakemake --forcerun manifest)") from None  # fmt: skip


def _file_problems(video: VideoTokens, row: dict, verify: str) -> list[str]:
    problems = []
    if verify == "none":
        return problems
    for part, path in (("visual_tokens", video.visual), ("audio_tokens", video.audio)):
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            problems.append(f"{video.where}: {path}: no such file")
        elif size != row[f"{part}_bytes"]:
            problems.append(f"{video.where}: {path}: {size} bytes, the manifest says {row[f'{part}_bytes']}")
        elif verify == "sha256" and sha256_of(path) != row[f"{part}_sha256"]:
            problems.append(f"{video.where}: {path}: its sha256 differs from the manifest's")
    return problems


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
    `joint_tokens` (DV only): also a flat id sequence per clip in a `JointVocabulary` of their
    family and codec.

    A clip is a dict: `video`, `preset`, `start` (first latent frame), `visual` (CV bf16
    [L, h, w, 16], DV int64 [L, h, w]), the audio as above, `frame_start` (int64 [L]: the
    first video frame of each latent frame), `time` (float64 [L]: its time in seconds),
    `window_start` (bool [L]: the first latent frame of a tokenizer window, which codes one
    video frame like an image), and with joint tokens `tokens` and `token_offsets` [L + 1].
    """

    def __init__(self, manifests, clip_length: int, preset: str | None = None, stride: int | None = None,
                 tail: str = "drop", audio: str = "ragged", block_size: int | None = None,
                 joint_tokens: bool = False, verify: str = "size", open_files: int = 64):  # fmt: skip
        if clip_length < 1 or (stride is not None and stride < 1):
            raise ValueError(f"clip_length and stride must be positive, not {clip_length} and {stride}")
        if tail not in ("drop", "short") or audio not in ("ragged", "blocks"):
            raise ValueError(f"tail must be 'drop' or 'short' (not {tail!r}), audio 'ragged' or 'blocks' "
                             f"(not {audio!r})")  # fmt: skip
        self.videos = read_manifests(manifests, preset, verify)
        self.kind = self.videos[0].kind
        if joint_tokens and self.kind != "DV":
            raise ValueError("joint_tokens needs discrete (DV) visual tokens; these are CV latents")
        if joint_tokens:
            first = self.videos[0]
            self.vocabulary = JointVocabulary(visual_tokenizer(first.family).vocabulary, first.codebooks,
                                              first.codebook_size)  # fmt: skip
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
        self._readers: OrderedDict[Path, TokenFileReader] = OrderedDict()
        self._open_files, self._bytes_of_closed = open_files, 0
        self._small: dict[Path, dict[str, torch.Tensor]] = {}

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

    def _reader(self, path: Path) -> TokenFileReader:
        # Opened lazily, so that each data-loader worker has its own; the least recently
        # used is closed beyond `open_files`.
        if path in self._readers:
            self._readers.move_to_end(path)
        else:
            self._readers[path] = TokenFileReader(path)
            if len(self._readers) > self._open_files:
                closed_path, closed = self._readers.popitem(last=False)
                closed.close()
                self._bytes_of_closed += closed.bytes_read
                self._small.pop(closed_path, None)
        return self._readers[path]

    def _small_tensor(self, path: Path, name: str) -> torch.Tensor:
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
        visual = self._reader(video.visual).read_frames(
            "indices" if self.kind == "DV" else "latents", start, stop
        )
        if self.kind == "DV":
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
            "time": spans[:, 0].double() * video.fps.denominator / video.fps.numerator,
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


def epoch_order(count: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of `count` clips in an epoch: a permutation seeded by (seed, epoch)."""
    if not shuffle:
        return np.arange(count)
    return np.random.default_rng([seed, epoch]).permutation(count)


# What torchrun, torch.distributed.launch and the launchers built on them set in each process.
_LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def _launched_as_one_of_several() -> str:
    """The launcher's variables, as "WORLD_SIZE=2 RANK=1", when they say that this process is
    one of several; "" otherwise."""
    values = {}
    for name in _LAUNCHER_VARIABLES:
        try:
            values[name] = int(os.environ[name])
        except (KeyError, ValueError):
            continue
    several = values.get("WORLD_SIZE", 1) > 1 or values.get("RANK", 0) > 0 or values.get("LOCAL_RANK", 0) > 0
    return " ".join(f"{name}={value}" for name, value in values.items()) if several else ""


def _rank_and_world(rank: int | None, world_size: int | None, who: str) -> tuple[int, int]:
    """Rank and world size: as given, else from torch.distributed. Without a process group,
    a process that a launcher says is one of several, or a world_size > 1 without rank=,
    is refused: taking rank 0 of 1 there would give every rank every clip in the same order."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank = torch.distributed.get_rank() if rank is None else rank
        world_size = torch.distributed.get_world_size() if world_size is None else world_size
    else:
        advice = "call torch.distributed.init_process_group() before making it, or pass rank= and world_size="
        if world_size is None:
            launched = _launched_as_one_of_several()
            if launched:
                raise RuntimeError(f"{who}: {launched} in the environment but torch.distributed is not "
                                   f"initialised, so this process's rank is unknown: {advice}")  # fmt: skip
            world_size = 1
        if rank is None:
            if world_size > 1:
                raise RuntimeError(
                    f"{who}: world_size={world_size} without rank= and torch.distributed is not "
                    f"initialised, so this process's rank is unknown: {advice}"
                )
            rank = 0
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def _even(even: str | bool) -> str | bool:
    if even is True:
        return "drop"  # what even=True meant before "pad" was the default
    if even is False or even in ("pad", "drop"):
        return even
    raise ValueError(f"even must be 'pad', 'drop' or False, not {even!r}")


def rank_share(count: int, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool = True,
               even: str | bool = "pad") -> np.ndarray:  # fmt: skip
    """Clip indices of one rank in an epoch: every world_size-th of the epoch's order.

    `even` makes the shares equal, as DistributedDataParallel needs (every rank must take as
    many steps): "pad" (default) extends the order by its own first clips to a multiple of
    world_size, so no clip is left out and at most world_size - 1 are repeated (a different
    few each epoch); "drop" (or True) leaves out the last count % world_size clips of the
    order (a different few each epoch); False gives shares that differ by at most one clip,
    every clip once."""
    even = _even(even)
    order = epoch_order(count, seed, epoch, shuffle)
    if even == "pad" and count % world_size:
        order = np.resize(order, -(-count // world_size) * world_size)  # repeats it from the start
    elif even == "drop":
        order = order[: count - count % world_size]
    return order[rank::world_size]


def epoch_batches(shapes: Sequence[Hashable], batch_size: int, seed: int, epoch: int, rank: int,
                  world_size: int, shuffle: bool = True, even: str | bool = "pad",
                  drop_last: bool = False) -> list[np.ndarray]:  # fmt: skip
    """Batches of clip indices of one rank in an epoch, each of clips of one shape
    (`shapes[i]`: clip i's; give every clip the same key to batch regardless of shape).

    Each shape's clips, in the epoch's order (`epoch_order`), are cut into batches of
    `batch_size` (a shape's last batch may be smaller; `drop_last` leaves such batches out);
    the batches follow each other in the order of their first clips, so the shapes are mixed
    through the epoch; rank r takes every world_size-th batch. `even` makes the numbers of
    batches equal, as DistributedDataParallel needs: "pad" (default) extends the epoch's
    batches by its own first ones to a multiple of world_size, "drop" (or True) leaves the
    last few out, False gives numbers that differ by at most one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, not {batch_size}")
    even = _even(even)
    order = epoch_order(len(shapes), seed, epoch, shuffle)
    by_shape: dict[Hashable, list[int]] = {}
    for index in order.tolist():
        by_shape.setdefault(shapes[index], []).append(index)
    place = np.empty(len(order), dtype=np.int64)
    place[order] = np.arange(len(order))
    batches = [
        np.array(members[start : start + batch_size])
        for members in by_shape.values()
        for start in range(0, len(members), batch_size)
        if not (drop_last and len(members) - start < batch_size)
    ]
    batches.sort(key=lambda batch: place[batch[0]])
    if even == "pad" and batches and len(batches) % world_size:
        batches = [batches[i % len(batches)] for i in range(-(-len(batches) // world_size) * world_size)]
    elif even == "drop":
        batches = batches[: len(batches) - len(batches) % world_size]
    return batches[rank::world_size]


class ClipBatchSampler(Sampler[list[int]]):
    """The batches of this rank for `AlignedClips` with a DataLoader (`batch_sampler=`), in the
    epoch's seeded order, each batch of clips of one shape (`epoch_batches`), so
    `collate_clips` stacks them whatever the sizes of the videos; `set_epoch` before each
    epoch, as with DistributedSampler, and `set_epoch(epoch, start_batch=k)` to resume after k
    batches of it.

    Rank and world size: as given, else from torch.distributed (refused under a launcher
    before `init_process_group`). `even` (see `epoch_batches`): "pad" (default) gives every
    rank as many batches, so DistributedDataParallel's collectives pair up. `same_shape=False`
    batches clips of any shape (collate them with `collate_padded`). The sampler runs in the
    main process, so `set_epoch` holds with persistent workers too."""

    def __init__(self, dataset: AlignedClips, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int | None = None, world_size: int | None = None, even: str | bool = "pad",
                 drop_last: bool = False, same_shape: bool = True, start_batch: int = 0):  # fmt: skip
        self.shapes = _batch_keys(dataset, same_shape)
        self.batch_size, self.seed, self.shuffle, self.even = batch_size, seed, shuffle, _even(even)
        self.drop_last, self.epoch, self.start_batch = drop_last, 0, start_batch
        self.rank, self.world_size = _rank_and_world(rank, world_size, "ClipBatchSampler")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _batches(self) -> list[np.ndarray]:
        batches = epoch_batches(self.shapes, self.batch_size, self.seed, self.epoch, self.rank,
                                self.world_size, self.shuffle, self.even, self.drop_last)  # fmt: skip
        return batches[self.start_batch :]

    def __iter__(self):
        return (batch.tolist() for batch in self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _batch_keys(dataset: AlignedClips, same_shape: bool) -> list[Hashable]:
    """What clips must share to be batched together: their shape, or nothing."""
    return [dataset.clip_shape(i) if same_shape else None for i in range(len(dataset))]


class ClipSampler(Sampler[int]):
    """The clips of this rank for `AlignedClips` with a DataLoader, one by one in the epoch's
    seeded order, whatever their shapes: batch them with `collate_padded` (clips of one shape
    per batch: `ClipBatchSampler`). `set_epoch` before each epoch, as with
    DistributedSampler. `start`: clips of this rank's order to skip, to resume an epoch
    (batches done x batch size).

    Rank and world size: as given, else from torch.distributed (refused under a launcher
    before `init_process_group`). `even` (see `rank_share`): "pad" (default) gives every rank
    as many clips, hence as many batches, so DistributedDataParallel's collectives pair up;
    "drop" does so by leaving clips out; False: shares may differ by one clip. The sampler
    runs in the main process, so `set_epoch` holds with persistent workers too."""

    def __init__(self, dataset, seed: int = 0, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, even: str | bool = "pad", start: int = 0):  # fmt: skip
        self.count = len(dataset)
        self.seed, self.shuffle, self.even, self.start, self.epoch = seed, shuffle, _even(even), start, 0
        self.rank, self.world_size = _rank_and_world(rank, world_size, "ClipSampler")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> np.ndarray:
        share = rank_share(
            self.count, self.seed, self.epoch, self.rank, self.world_size, self.shuffle, self.even
        )
        return share[self.start :]

    def __iter__(self):
        return iter(self._indices().tolist())

    def __len__(self) -> int:
        return len(self._indices())


class AlignedClipStream(IterableDataset):
    """`AlignedClips` as an iterable of whole batches, sharded by rank and by data-loader
    worker: batch k of this rank's epoch is made by worker k mod workers, so a DataLoader
    (batch_size=None) yields them in order and `start_batch` resumes exactly.

    The batches are those of `ClipBatchSampler` (`epoch_batches`): clips of one shape each
    unless `same_shape=False` (then collate with `collate_padded`); rank, world size, `even`
    and `drop_last` as there, so by default every rank has as many batches. The epoch and
    start batch are kept in shared memory, so `set_epoch(epoch, start_batch=k)` reaches the
    data-loader workers, persistent ones (`persistent_workers=True`, which keep their copy of
    this object from the first epoch on) and spawned ones included: each worker reads them
    when its epoch begins."""

    def __init__(self, dataset: AlignedClips, batch_size: int, collate=None, seed: int = 0,
                 shuffle: bool = True, rank: int | None = None, world_size: int | None = None,
                 even: str | bool = "pad", drop_last: bool = False, same_shape: bool = True,
                 start_batch: int = 0):  # fmt: skip
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate or collate_clips
        self.seed, self.shuffle, self.even, self.drop_last = seed, shuffle, _even(even), drop_last
        self.shapes = _batch_keys(dataset, same_shape)
        self.rank, self.world_size = _rank_and_world(rank, world_size, "AlignedClipStream")
        # [epoch, start_batch]: inherited by forked workers, passed to spawned ones as a handle
        # to the same memory (torch.multiprocessing pickles shared tensors so).
        self._position = torch.tensor([0, start_batch], dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._position[0] = epoch

    @property
    def start_batch(self) -> int:
        return int(self._position[1])

    @start_batch.setter
    def start_batch(self, start_batch: int) -> None:
        self._position[1] = start_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self._position.copy_(torch.tensor([epoch, start_batch], dtype=torch.int64))

    def batches(self) -> list[np.ndarray]:
        """This rank's batches of clip indices in this epoch, from `start_batch` on."""
        epoch, start_batch = self._position.tolist()
        batches = epoch_batches(self.shapes, self.batch_size, self.seed, epoch, self.rank, self.world_size,
                                self.shuffle, self.even, self.drop_last)  # fmt: skip
        return batches[start_batch:]

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self):
        # Read now, when this worker's epoch begins: a persistent worker is the same process
        # epoch after epoch, and only the shared memory tells it which epoch this is.
        batches = self.batches()
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        return (self.collate([self.dataset[int(i)] for i in batch]) for batch in batches[worker_id::workers])


def collate_clips(clips: list[dict]) -> dict:
    """A batch of clips of one shape (as `ClipBatchSampler` and `AlignedClipStream` make them):
    visual [B, L, ...] stacked; ragged audio packed (codes of all clips [N, codebooks],
    `audio_offsets` [B, L + 1] into them); blocks [B, L, block, codebooks]; joint tokens packed
    the same way. Clips of different lengths or latent sizes are refused (`collate_padded`
    takes them)."""
    shapes = {tuple(c["visual"].shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(
            f"clips of different shapes {sorted(shapes)} in one batch: batch them with ClipBatchSampler "
            "(one shape a batch) or collate them with collate_padded"
        )
    return _collate(clips)


def collate_padded(clips: list[dict]) -> dict:
    """As `collate_clips`, for clips of different lengths (`tail="short"`) or latent sizes
    (videos of different sizes): visual tokens and everything per latent frame are padded
    with zeros to the longest and largest; padded latent frames have no audio and no joint
    tokens. `frame_mask` [B, L] is True on real latent frames, `latent_mask` [B, h, w] on
    real latent positions."""
    return _collate(clips)


def _padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Tensors stacked, each padded with zeros at the end of its first dimensions to the largest."""
    size = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = tensors[0].new_zeros((len(tensors), *size))
    for b, tensor in enumerate(tensors):
        out[(b, *(slice(0, n) for n in tensor.shape))] = tensor
    return out


def _packed(pieces: list[torch.Tensor], offsets: list[torch.Tensor], length: int) -> tuple:
    """Concatenate ragged pieces; offsets shifted into the whole and padded with the last."""
    bases = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    shifted = [
        torch.cat([o, o[-1:].expand(length + 1 - len(o))]) + int(b)
        for o, b in zip(offsets, bases, strict=True)
    ]
    return torch.cat(pieces), torch.stack(shifted)


def _collate(clips: list[dict]) -> dict:
    length = max(len(c["visual"]) for c in clips)
    batch = {
        "video": [c["video"] for c in clips],
        "preset": [c["preset"] for c in clips],
        "start": torch.tensor([c["start"] for c in clips]),
        "frame_mask": _padded([torch.ones(len(c["visual"]), dtype=torch.bool) for c in clips]),
        "latent_mask": _padded([torch.ones(c["visual"].shape[1:3], dtype=torch.bool) for c in clips]),
    }
    for key in ("visual", "frame_start", "time", "window_start"):
        batch[key] = _padded([c[key] for c in clips])
    if "audio_offsets" in clips[0]:
        batch["audio_codes"], batch["audio_offsets"] = _packed(
            [c["audio_codes"] for c in clips], [c["audio_offsets"] for c in clips], length)  # fmt: skip
    else:
        batch["audio_codes"] = _padded([c["audio_codes"] for c in clips])
    if "tokens" in clips[0]:
        batch["tokens"], batch["token_offsets"] = _packed(
            [c["tokens"] for c in clips], [c["token_offsets"] for c in clips], length)  # fmt: skip
    return batch
