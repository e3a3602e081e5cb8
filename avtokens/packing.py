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
import hashlib
import io
import json
import logging
import shutil
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.data import AlignedClips
from avtokens.manifest import write_manifest
from avtokens.media import sha256_of
from avtokens.storage import RunStorage, as_declared
from avtokens.tokenfile import TokenFileReader

log = logging.getLogger(__name__)

PACK_FORMAT = "avtokens-pack/1"


def sample_key(video: str, preset: str, start: int) -> str:
    """A sample's key: stable, unique, and without a dot, which WebDataset reads as the start
    of a file's extension."""

    def escaped(name: str) -> str:
        return name.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")

    return f"{escaped(video)}/{escaped(preset)}/{start:06d}"


def _npy(array: np.ndarray) -> tuple[bytes, memoryview]:
    """An .npy file's bytes, as its header and the array's own memory: no copy of the data."""
    array = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue(), memoryview(array).cast("B")


def _stored(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as the token file stores it, for numpy: bfloat16 as its uint16 bits."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def sample_files(clips: AlignedClips, index: int, sources: dict[str, str] | None = None) -> dict[str, tuple]:
    """The files of clip `index`'s sample, by extension, each as the pieces of its bytes: the
    clip as `AlignedClips` cuts it (ragged audio), its tokens in the dtypes the token files store.
    `sources`: video -> its source file, as the sample sheet names it."""
    clip, video = clips[index], clips.videos[clips.clips[index][0]]
    visual = clip["visual"].to(getattr(torch, clips.layout.dtype))  # DV indices come as int64
    record = {
        "format": PACK_FORMAT,
        "video": video.video,
        "preset": video.preset,
        "start": clip["start"],
        "latent_frames": len(visual),
        # per latent frame: its first video frame, its time in seconds after the source's first
        # frame, whether it starts a tokenizer window (as AlignedClips gives them)
        "frame_start": clip["frame_start"].tolist(),
        "time": clip["time"].tolist(),
        "window_start": clip["window_start"].tolist(),
        "fps": f"{video.fps.numerator}/{video.fps.denominator}",
        "family": video.family,
        "release": video.release,
        "kind": video.kind,
        "temporal": video.factors[0],
        "spatial": video.factors[1],
        "window": video.window,
        "bucket": video.bucket,
        "content": list(video.content) if video.content else None,
        "visual": {"dtype": clips.layout.dtype, "shape": list(visual.shape)},
        "codec": video.codec,
        "codebooks": video.codebooks,
        "codebook_size": video.codebook_size,
        "code_clock": list(video.code_clock),
        "source": (sources or {}).get(video.video),
        "source_sha256": video.source_sha256,
    }
    return {
        "visual.npy": _npy(_stored(visual)),
        "audio_codes.npy": _npy(clip["audio_codes"].numpy().astype(np.uint16)),  # as stored
        "audio_offsets.npy": _npy(clip["audio_offsets"].numpy()),
        "json": (json.dumps(record, sort_keys=True).encode(),),
    }


def _member_header(name: str, size: int) -> bytes:
    """A tar member's header (POSIX.1-2001: a long name gets an extended header), with fixed
    owner, mode and time, so the same samples give the same bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def pack_clips(
    clips: AlignedClips,
    indices,
    dest: Path | str,
    name: str,
    *,
    shard_bytes: int,
    seed: int,
    sources: dict[str, str] | None = None,
) -> list[tuple[Path, int]]:
    """Write the clips `indices` of `clips`, shuffled by `seed`, into tars `<dest>/<name>-000000.tar`,
    ... of about `shard_bytes` each (a tar ends with the sample that reaches it). Samples are
    written as they are read: a job holds one clip at a time. `sources`: as `sample_files`'.
    Returns the tars in order, each with its number of samples."""
    indices = np.asarray(indices, dtype=np.int64)
    shards = _TarShards(Path(dest), name, shard_bytes)
    try:
        for index in indices[np.random.default_rng(seed).permutation(len(indices))].tolist():
            video_index, start, _ = clips.clips[index]
            key = sample_key(clips.videos[video_index].video, clips.videos[video_index].preset, start)
            try:
                files = sample_files(clips, index, sources)
            except (ValueError, IndexError, KeyError, RuntimeError, AvTokensError) as err:
                # what the token files hold cannot be cut (an OSError is the machine's: it goes on up)
                reason = f"its token files cannot be cut into clips ({err})"
                raise UnreadableVideo(clips.videos[video_index].video, reason) from err
            shards.add({f"{key}.{extension}": data for extension, data in files.items()})
        shards.close()
    finally:
        shards.abandon()
    return shards.written


class UnreadableVideo(AvTokensError):
    """A video's token files could not be cut into clips: `video`, and `reason`."""

    def __init__(self, video: str, reason: str):
        super().__init__(f"video {video}: {reason}")
        self.video, self.reason = video, reason


class _TarShards:
    """Tars `<folder>/<name>-000000.tar`, ... of about `shard_bytes` each, each written under
    a temporary name (`atomic_output`) and renamed when complete. Written here rather than with
    `tarfile.addfile`, which copies each member through a file object in 16 kB pieces: a
    member's header, then its pieces as they are, then the padding to 512-byte blocks; a tar ends
    with two zero blocks, padded to tar's 10 kB records."""

    def __init__(self, folder: Path, name: str, shard_bytes: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name, self.shard_bytes = folder, name, shard_bytes
        self.written: list[tuple[Path, int]] = []  # each tar and its number of samples
        self._stack, self._file, self._size, self._samples, self._offset = None, None, 0, 0, 0

    def add(self, files: dict[str, tuple]) -> None:
        if self._file is None:
            self._stack = contextlib.ExitStack()
            tmp = self._stack.enter_context(
                atomic_output(self.folder / f"{self.name}-{len(self.written):06d}.tar")
            )
            self._file = self._stack.enter_context(open(tmp, "wb", buffering=1 << 20))
        for member, pieces in files.items():
            size = sum(len(piece) for piece in pieces)
            self._write(_member_header(member, size), *pieces, bytes(-size % tarfile.BLOCKSIZE))
            self._size += size
        self._samples += 1
        if self._size >= self.shard_bytes:
            self.close()

    def _write(self, *pieces) -> None:
        for piece in pieces:
            self._offset += self._file.write(piece)

    def close(self) -> None:
        """End the tar being written (it takes its final name)."""
        if self._stack is not None:
            self._write(bytes(2 * tarfile.BLOCKSIZE))
            self._write(bytes(-self._offset % tarfile.RECORDSIZE))
            self._stack.close()
            self.written.append((self.folder / f"{self.name}-{len(self.written):06d}.tar", self._samples))
            self._stack, self._file, self._size, self._samples, self._offset = None, None, 0, 0, 0

    def abandon(self) -> None:
        """After a failure: the tar being written goes, its temporary file with it."""
        if self._stack is not None:
            self._stack.__exit__(AvTokensError, AvTokensError("packing stopped"), None)
            self._stack = self._file = None


# --- A packed dataset: one folder per preset, a part per shard of the sheet ------------------
#
#   packed/<preset>/<part>/train-000000.tar, ..., val-000000.tar, ...   the samples
#   packed/<preset>/<part>/manifest.jsonl   the part's videos, as the run's manifest has them
#   packed/<preset>/<part>.pack.json        what the part holds (its job's output)
#   packed/<preset>/dataset.json            every tar of each split with its samples
#   packed/<preset>/README.md               the dataset card
#   packed/<preset>/.nv-meta/               Megatron-Energon's index (`energon prepare`'s files)
#
# A part is the videos of one shard of the sheet (`all` outside shard mode): a new video
# rewrites its part's tars only. Clips are shuffled across the part's videos; a trainer
# shuffles the tars (and a buffer of samples) across parts.


@dataclass(frozen=True)
class PackSettings:
    """How a preset's videos are cut and packed (the config's `pack` section)."""

    clip_latent_frames: int
    stride: int | None = None  # latent frames from one clip's start to the next; None: the clip length
    tail: str = "drop"  # a video's last latent frames that do not fill a clip: dropped, or a "short" clip
    shard_bytes: int = 1_000_000_000  # the defaults are config/config.yaml's
    seed: int = 0
    val_fraction: float = 0.05  # of the videos (never of a video's clips), chosen by a hash of the name

    def split_of(self, video: str) -> str:
        """ "val" for about `val_fraction` of the videos, "train" for the others: by a hash of
        the video's name and the seed, so a video's split never changes when others join."""
        digest = hashlib.sha256(f"{self.seed}/{video}".encode()).digest()
        return "val" if int.from_bytes(digest[:8], "big") < self.val_fraction * 2**64 else "train"


SPLITS = ("train", "val")
# What a dataset's clips are, from its manifest rows (which one dataset shares: read_manifests).
TOKEN_FIELDS = (
    "family",
    "release",
    "kind",
    "temporal",
    "spatial",
    "window",
    "audio_codec",
    "audio_codebooks",
    "audio_codebook_size",
    "audio_sample_rate",
    "audio_hop",
)


def token_file_problem(run: dict) -> str | None:
    """Why a video x preset's token files cannot be packed (missing, unreadable, or not the
    bytes its summary describes), or None. `run`: its summary and token files (as the manifest's)."""
    try:
        summary = json.loads(Path(run["summary"]).read_text())
        for part in ("visual_tokens", "audio_tokens"):
            path = Path(run[part])
            if not path.is_file():
                return f"{path}: missing"
            if sha256_of(path) != summary["files"][part]["sha256"]:
                return f"{path}: not the file its summary describes (damaged or changed since): make it again"
            with TokenFileReader(path):  # its header, which the manifest reads
                pass
        return None
    except (OSError, ValueError, KeyError, AvTokensError) as err:
        return f"{run['summary']}: {err}"


def pack_part(
    runs: list[dict],
    folder: Path | str,
    part: str,
    settings: PackSettings,
    videos: dict[str, str] | None = None,
) -> dict:
    """Pack one part of a preset's dataset: the `runs` (one per video x preset, as
    `avtokens.manifest.write_manifest` takes them) into `<folder>/<part>/{train,val}-NNNNNN.tar`,
    replacing what was there. A video whose token files cannot be read is recorded under
    `failed` with the reason and the others are packed. `videos`: the part's videos as the
    sheet lists them (name -> source file), for the samples' records and to name those that
    came with no runs (`unfinished` upstream). Returns the part's record."""
    folder, dest = Path(folder), Path(folder) / part
    _clear(dest)
    failed, good = {}, []
    for run in runs:
        video, problem = _video_of(run), token_file_problem(run)
        if problem is None:
            good.append(run)
        else:
            failed[video] = problem
            log.error("video %s not packed: %s", video, problem)
    write_manifest(good, dest / "manifest.jsonl")
    rows = [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()]
    short = settings.tail == "drop"
    too_short = sorted(
        row["video"] for row in rows if short and row["latent_frames"] < settings.clip_latent_frames
    )
    record = {
        "format": PACK_FORMAT,
        "part": part,
        "settings": asdict(settings),
        "tars": [],
        "videos": {},
        "too_short": too_short,
        "failed": failed,
        "unfinished": sorted(set(videos or []) - {row["video"] for row in rows} - set(failed)),
    }
    while len(too_short) < len(rows):
        try:
            record.update(_pack_splits(dest, part, settings, rows, videos))
            break
        except UnreadableVideo as err:  # left out, and the part packed again without it
            failed[err.video] = err.reason
            log.error("video %s not packed: %s", err.video, err.reason)
            _clear(dest)
            good = [run for run in good if _video_of(run) != err.video]
            write_manifest(good, dest / "manifest.jsonl")
            rows = [row for row in rows if row["video"] != err.video]
    return record


def _clear(dest: Path) -> None:
    """A part's folder, without the tars of an earlier packing."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in [*dest.glob("*.tar"), *dest.glob("*.tar.idx")]:
        old.unlink()


def _pack_splits(dest: Path, part: str, settings: PackSettings, rows: list[dict], videos) -> dict:
    """Cut the videos of `dest/manifest.jsonl` (its `rows`) into clips and pack each split's into
    its tars. Returns the part record's tars, videos and what the tokens are."""
    clips = AlignedClips(
        dest / "manifest.jsonl",
        settings.clip_latent_frames,
        stride=settings.stride,
        tail=settings.tail,
        verify="none",
    )
    split = [settings.split_of(video.video) for video in clips.videos]
    packed = []
    for name in SPLITS:
        indices = [i for i, (video, _, _) in enumerate(clips.clips) if split[video] == name]
        tars = pack_clips(
            clips, indices, dest, name, shard_bytes=settings.shard_bytes, seed=settings.seed, sources=videos
        )
        packed += [
            {"path": f"{part}/{path.name}", "split": name, "samples": samples, "bytes": path.stat().st_size}
            for path, samples in tars
        ]
    counts = Counter(clips.videos[video].video for video, _, _ in clips.clips)
    return {
        "tars": packed,
        "tokens": {**{key: rows[0][key] for key in TOKEN_FIELDS},
                   "stand_in_weights": any(row["stand_in_weights"] for row in rows)},
        "videos": {video.video: {"split": split[i], "clips": counts[video.video]}
                   for i, video in enumerate(clips.videos)},
    }  # fmt: skip


def _video_of(run: dict) -> str:
    """A run's video, from its summary, or failing that from its token file's name."""
    try:
        return json.loads(Path(run["summary"]).read_text())["video"]
    except (OSError, ValueError, KeyError):
        return Path(run["visual_tokens"]).name.removesuffix("_visual_tokens.safetensors")


def write_dataset(folder: Path | str, preset: str, records: list[dict]) -> dict:
    """The index of a preset's packed dataset from its parts' records: `dataset.json` (every tar
    of each split with its samples), Megatron-Energon's `.nv-meta/` (made by Energon's own
    `prepare`, which also writes each tar's `.tar.idx`, with our sample type and loader) and the
    dataset card `README.md`. Returns the index."""
    folder = Path(folder)
    tars = [tar for record in records for tar in record["tars"]]
    index = {
        "format": PACK_FORMAT,
        "preset": preset,
        "settings": records[0]["settings"] if records else None,
        "tokens": next((record["tokens"] for record in records if "tokens" in record), None),
        "splits": {
            name: [
                {key: tar[key] for key in ("path", "samples", "bytes")}
                for tar in tars
                if tar["split"] == name
            ]
            for name in SPLITS
        },
        "videos": {name: files for record in records for name, files in sorted(record["videos"].items())},
        "too_short": sorted(video for record in records for video in record["too_short"]),
        "failed": {video: why for record in records for video, why in record["failed"].items()},
        "unfinished": sorted(video for record in records for video in record["unfinished"]),
    }
    meta = folder / ".nv-meta"
    if meta.exists():
        shutil.rmtree(meta)
    if tars:
        _prepare_for_energon(folder, [tar["path"] for tar in tars])
    with atomic_output(folder / "README.md") as tmp:
        Path(tmp).write_text(dataset_card(index))
    with atomic_output(folder / "dataset.json") as tmp:
        Path(tmp).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return index


def dataset_card(index: dict) -> str:
    """The dataset card: Hugging Face's YAML header (so `load_dataset` finds the splits' tars)
    and what the samples are, how many, and how to read them."""
    splits = {name: tars for name, tars in index["splits"].items() if tars}
    header = ["---", "configs:", "- config_name: default", "  data_files:"]
    for name, tars in splits.items():
        header += [f"  - split: {name}", "    path:", *[f"    - {tar['path']}" for tar in tars]]
    tokens, settings = index["tokens"] or {}, index["settings"] or {}
    counts = {name: sum(tar["samples"] for tar in tars) for name, tars in splits.items()}
    videos = Counter(video["split"] for video in index["videos"].values())
    lines = [*header, "---", "", f"# {index['preset']}: packed training clips", ""]
    if tokens:
        factors = f"{tokens['temporal']}x{tokens['spatial']}x{tokens['spatial']}"
        kind = f"{tokens['family']} {tokens['release']} {tokens['kind']}{factors}"
        lines += [
            f"Visual tokens of {kind.replace('  ', ' ')} (window {tokens['window']} frames); audio codes of "
            f"{tokens['audio_codec']}, {tokens['audio_codebooks']} codebooks of "
            f"{tokens['audio_codebook_size']} "
            f"at {tokens['audio_sample_rate']} Hz / hop {tokens['audio_hop']}."
        ]
        if tokens["stand_in_weights"]:
            lines += ["", "**Made with stand-in demo weights: the tokens carry no meaning.**"]
    lines += [
        "",
        f"Clips of {settings.get('clip_latent_frames')} latent frames, every "
        f"{settings.get('stride') or settings.get('clip_latent_frames')} (a video's last frames: "
        f"{settings.get('tail')}), shuffled across the videos of each part with seed {settings.get('seed')}.",
        "",
    ]
    lines += ["| split | videos | clips | tars |", "|---|---|---|---|"]
    lines += [f"| {name} | {videos[name]} | {counts[name]} | {len(tars)} |" for name, tars in splits.items()]
    lines += [
        "",
        "A sample (WebDataset: the files of one key `<video>/<preset>/<start>`):",
        "",
        "- `visual.npy`: visual tokens [L, h, w, C] (continuous: bfloat16 as its uint16 bits) or [L, h, w]",
        "- `audio_codes.npy`: the clip's audio codes [N, codebooks], uint16",
        "- `audio_offsets.npy`: [L + 1], latent frame i holds codes[offsets[i]:offsets[i + 1]]",
        "- `json`: video, source sha256, start, per-frame times, fps, tokenizer, codec, bucket",
        "",
        "Read with Megatron-Energon (`get_train_dataset` on this folder; `.nv-meta/`), webdataset, "
        "Hugging Face `datasets` or `avtokens.data.PackedClips`: the workflow's README, "
        '"Packed training shards".',
    ]
    for key, what in (
        ("failed", "not packed"),
        ("unfinished", "not finished upstream"),
        ("too_short", "shorter than a clip"),
    ):
        if index[key]:
            lines += ["", f"Videos {what}: {', '.join(sorted(index[key]))}."]
    return "\n".join(lines) + "\n"


def _prepare_for_energon(folder: Path, paths: list[str]) -> None:
    """Energon's index of the tars (`energon prepare`: .info.json, split.yaml, index.sqlite and a
    .tar.idx beside each tar), the split by the tars' names (each holds clips of one split,
    which the videos are in), and the dataset's sample type and loader."""
    from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

    # The patterns go through braceexpand, which takes a backslash as an escape: no \d or \.
    with contextlib.redirect_stdout(io.StringIO()):  # its progress, on a job's stdout
        WebdatasetPreparator.prepare_dataset(
            folder,
            paths,
            split_parts_patterns=[(name, f"^[^/]+/{name}-[0-9]+[.]tar$") for name in SPLITS],
            workers=1,
        )
    meta = folder / ".nv-meta"
    shutil.copyfile(Path(__file__).parent / "data" / "packed_sample.py", meta / "sample_loader.py")
    (meta / "dataset.yaml").write_text(ENERGON_DATASET)


ENERGON_DATASET = """\
# Megatron-Energon reads this dataset's samples as avtokens.data.energon.PackedClip
# (pip install this workflow's package beside megatron-energon), made by sample_loader.py.
sample_type:
  __module__: avtokens.data.energon
  __class__: PackedClip
sample_loader: sample_loader.py:sample_loader
part_filter: sample_loader.py:part_filter
"""


def pack_problems(indexes: dict[str, dict]) -> list[str]:
    """One line per video that a preset's packed dataset lacks (failed in packing, or not
    finished upstream) and per preset that packed nothing: what the run's end names."""
    lines = []
    for preset, index in indexes.items():
        lines += [
            f"preset {preset}: video {video} not packed: {why}" for video, why in index["failed"].items()
        ]
        lines += [
            f"preset {preset}: video {video} not packed: its token files are not finished (the run's "
            "verdict, check_run, names why)"
            for video in index["unfinished"]
        ]
        if not any(index["splits"].values()) and index["too_short"]:
            settings = index["settings"] or {}
            lines.append(
                f"preset {preset}: nothing packed: no video has {settings.get('clip_latent_frames')} "
                "latent frames (lower pack.clip_latent_frames, or tail: short keeps shorter clips)"
            )
    return lines


def write_part(
    runs: list[dict], record_path: Path | str, settings: PackSettings, videos: dict[str, str]
) -> None:
    """A pack job: the part `<preset folder>/<part>.pack.json` names, packed (`pack_part`), and
    its record written when its tars are."""
    record_path = Path(record_path)
    record = pack_part(
        runs, record_path.parent, record_path.name.removesuffix(".pack.json"), settings, videos
    )
    log.info(
        "%d clips of %d videos in %d tars; %d failed, %d shorter than a clip",
        sum(tar["samples"] for tar in record["tars"]),
        len(record["videos"]),
        len(record["tars"]),
        len(record["failed"]),
        len(record["too_short"]),
    )
    storage = RunStorage.of_run()
    if storage is not None:  # the part's tars and manifest in the bucket, and no tar of before
        _put_folder(storage, record_path.parent / record["part"])
    with atomic_output(record_path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def _put_folder(storage: RunStorage, folder: Path, pattern: str = "*") -> None:
    """Put the files of the local `folder` (those `pattern` matches) in their objects, and
    remove the objects under it that it no longer has."""
    written = {as_declared(path) for path in folder.glob(pattern) if path.is_file()}
    for path in sorted(written):
        storage.store(path)
    for stale in storage.listed(as_declared(folder)) - written:
        if Path(stale).match(pattern):
            storage.remove(stale)


def index_dataset(record_paths: list[str], index_path: Path | str, preset: str) -> None:
    """A preset's index job: its dataset (`write_dataset`) from its parts' records."""
    records = [json.loads(Path(path).read_text()) for path in record_paths]
    folder, storage = Path(index_path).parent, RunStorage.of_run()
    if storage is not None:  # Energon's `prepare` reads the tars: here, as local copies
        for record in records:
            for tar in record["tars"]:
                storage.fetch(str(folder / tar["path"]))
    index = write_dataset(folder, preset, records)
    if storage is not None:  # Energon's index and each tar's .tar.idx beside the tars
        _put_folder(storage, folder / ".nv-meta")
        for part in {Path(tar["path"]).parent for record in records for tar in record["tars"]}:
            _put_folder(storage, folder / part, "*.tar.idx")
    log.info(
        "%s",
        ", ".join(
            f"{name}: {sum(t['samples'] for t in tars)} clips in {len(tars)} tars"
            for name, tars in index["splits"].items()
        ),
    )


def check_pack(index_paths: list[str], output: Path | str) -> None:
    """The pack target's verdict: write `output` (each preset's clips per split) if every
    video was packed; otherwise fail with a line per video that was not."""
    indexes = {}
    for path in index_paths:
        index = json.loads(Path(path).read_text())
        indexes[index["preset"]] = index
    problems = pack_problems(indexes)
    if problems:
        raise AvTokensError(
            f"{len(problems)} problem(s) packing {', '.join(indexes)}: " + "; ".join(problems)
        )
    done = {
        preset: {name: sum(tar["samples"] for tar in tars) for name, tars in index["splits"].items()}
        for preset, index in indexes.items()
    }
    with atomic_output(output) as tmp:
        Path(tmp).write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
