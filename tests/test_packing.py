"""Packed training shards, read back with `tarfile` and numpy and checked against the token
files as `safetensors` reads them: not through the packer's own code."""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from helpers import tar_samples, token_files_manifest, token_slice
from torch.utils.data import DataLoader

from avtokens.data import AlignedClips, PackedClips, collate_padded
from avtokens.data.packed_sample import decode_sample
from avtokens.packing import PackSettings, pack_clips, sample_key

PRESETS = {  # one continuous and one discrete, with DAC's and Mimi's codes
    "CV8x8x8": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17},
    "DV8x16x16-mimi": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "codec": "mimi"},
}
VIDEOS = {"a.b": (32, 32, 130), "c": (64, 48, 60), "d": (48, 32, 200)}  # width, height, frames at 25 fps
SHARD_BYTES = 4_000  # a few clips a tar


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return token_files_manifest(tmp_path_factory.mktemp("tokens"), PRESETS, VIDEOS)


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def packed(manifest, preset, dest, seed=1, stride=None, tail="drop"):
    """Every clip of `preset` packed into tars `<dest>/train-NNNNNN.tar`, and the clips."""
    clips = AlignedClips(manifest, 4, preset=preset, stride=stride, tail=tail)
    return pack_clips(clips, range(len(clips)), dest, "train", shard_bytes=SHARD_BYTES, seed=seed), clips


def write_index(folder, tars):
    """A dataset.json as the index job writes it, for PackedClips."""
    splits = {
        "train": [
            {"path": path.relative_to(folder).as_posix(), "samples": n, "bytes": path.stat().st_size}
            for path, n in tars
        ],
        "val": [],
    }
    (folder / "dataset.json").write_text(json.dumps({"splits": splits}))


def test_a_key_has_no_dot_and_tells_clips_apart():
    assert sample_key("ep.1", "CV8x8x8", 16) == "ep%2E1/CV8x8x8/000016"
    assert sample_key("ep%2E1", "CV8x8x8", 16) != sample_key("ep.1", "CV8x8x8", 16)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_packed_clip_is_the_slice_of_its_token_files(manifest, tmp_path, preset):
    tars, _ = packed(manifest, preset, tmp_path / "packed")
    assert len(tars) > 1 and [t.name for t, _ in tars] == [f"train-{i:06d}.tar" for i in range(len(tars))]
    found = tar_samples(t for t, _ in tars)
    assert [n for _, n in tars] == [len(tar_samples([t])) for t, _ in tars]  # the counts the index keeps
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    expected = {
        sample_key(row["video"], preset, start): row
        for row in rows
        if row["preset"] == preset
        for start in range(0, row["latent_frames"] - 3, 4)
    }
    assert sorted(found) == sorted(expected)  # every whole clip once, the last partial ones left out
    videos = [key.split("/")[0] for key in found]  # in the order written
    changes = sum(a != b for a, b in zip(videos, videos[1:], strict=False))
    assert changes > len(VIDEOS) - 1  # shuffled across videos, not one video after another
    for key, files in found.items():
        row = expected[key]
        record, start = json.loads(files["json"]), int(key.rsplit("/", 1)[1])
        assert (record["video"], record["preset"], record["start"], record["latent_frames"]) == (
            row["video"],
            preset,
            start,
            4,
        )
        frames, spans, codes, offsets = token_slice(
            manifest.parent / row["visual_tokens"], manifest.parent / row["audio_tokens"], start, 4
        )
        stored = from_npy(files["visual.npy"])
        if frames.dtype == torch.bfloat16:
            assert stored.dtype == np.uint16 and record["visual"]["dtype"] == "bfloat16"
            assert torch.equal(torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16), frames)
        else:
            assert np.array_equal(stored, frames.numpy())
        assert record["frame_start"] == spans[:, 0].tolist()
        assert record["time"] == [int(s) / 25 for s in spans[:, 0]]
        assert np.array_equal(from_npy(files["audio_codes.npy"]), codes.numpy())
        assert from_npy(files["audio_offsets.npy"]).tolist() == offsets


@pytest.mark.parametrize("preset", PRESETS)
def test_a_decoded_sample_is_the_clip_aligned_clips_gives(manifest, tmp_path, preset):
    tars, clips = packed(manifest, preset, tmp_path / "packed", stride=3, tail="short")
    by_key = {
        sample_key(clip["video"], preset, clip["start"]): clip
        for clip in map(clips.__getitem__, range(len(clips)))
    }
    found = tar_samples(t for t, _ in tars)
    assert sorted(found) == sorted(by_key)
    for key, files in found.items():
        clip, decoded = by_key[key], decode_sample(files)
        assert decoded.pop("record")["video"] == clip["video"]
        assert decoded.keys() == clip.keys()
        for name, value in clip.items():
            assert (
                torch.equal(decoded[name], value)
                if isinstance(value, torch.Tensor)
                else decoded[name] == value
            )
            if isinstance(value, torch.Tensor):
                assert decoded[name].dtype == value.dtype, name


def test_packing_twice_gives_the_same_bytes_and_a_seed_its_own_order(manifest, tmp_path):
    first, _ = packed(manifest, "CV8x8x8", tmp_path / "one")
    again, _ = packed(manifest, "CV8x8x8", tmp_path / "two")
    assert [t.read_bytes() for t, _ in first] == [t.read_bytes() for t, _ in again]
    other, _ = packed(manifest, "CV8x8x8", tmp_path / "three", seed=2)
    one, three = tar_samples(t for t, _ in first), tar_samples(t for t, _ in other)
    assert list(three) != list(one) and sorted(three) == sorted(one)


def test_a_failure_part_way_leaves_no_tar_that_looks_complete(manifest, tmp_path, monkeypatch):
    import avtokens.packing

    calls = []
    real = avtokens.packing.sample_files

    def failing_on_the_tenth(*args):
        calls.append(1)
        if len(calls) == 10:
            raise OSError("the disk went")
        return real(*args)

    monkeypatch.setattr(avtokens.packing, "sample_files", failing_on_the_tenth)
    with pytest.raises(OSError, match="the disk went"):
        packed(manifest, "CV8x8x8", tmp_path / "packed")
    left = sorted(p.name for p in (tmp_path / "packed").rglob("*") if p.is_file())
    complete = [name for name in left if name.endswith(".tar")]
    assert (
        complete
        and all(name.startswith("train-") for name in complete)
        and not [n for n in left if n not in complete]
    )
    for name in complete:  # the tars finished before the failure are whole
        with tarfile.open(tmp_path / "packed" / name) as tar:
            assert tar.getmembers()


def test_a_video_keeps_its_split_as_others_join():
    settings = PackSettings(clip_latent_frames=4, val_fraction=0.25, seed=3)
    names = [f"video{i}" for i in range(2000)]
    split = {name: settings.split_of(name) for name in names}
    assert 400 < sum(s == "val" for s in split.values()) < 600  # about a quarter, by a hash
    assert all(settings.split_of(name) == split[name] for name in reversed(names))  # of the name alone
    assert {PackSettings(4, val_fraction=0.0).split_of(n) for n in names} == {"train"}
    assert {PackSettings(4, val_fraction=1.0).split_of(n) for n in names} == {"val"}
    other = PackSettings(clip_latent_frames=4, val_fraction=0.25, seed=4)
    assert [other.split_of(n) for n in names] != list(split.values())


@pytest.fixture(scope="module")
def stream_folder(manifest, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    tars, clips = packed(manifest, "DV8x16x16-mimi", folder / "part", stride=2)
    write_index(folder, tars)
    return folder, tars


def keys(stream) -> list[str]:
    return [sample_key(clip["video"], clip["preset"], clip["start"]) for clip in stream]


def test_every_rank_streams_its_own_tars_and_all_of_them_cover_the_split_once(stream_folder):
    folder, tars = stream_folder
    everything = sorted(tar_samples(t for t, _ in tars))
    one = PackedClips(folder, rank=0, world_size=1, seed=5)
    assert sorted(keys(one)) == everything and len(one) == len(everything)
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            stream = PackedClips(folder, rank=rank, world_size=2, seed=5, even=False)
            stream.set_epoch(epoch)
            shares.append(keys(stream))
            assert len(shares[-1]) == len(stream)
        assert sorted(shares[0] + shares[1]) == everything  # each clip once, on one rank
    padded = [PackedClips(folder, rank=rank, world_size=2, seed=5) for rank in (0, 1)]
    assert len(padded[0]) == len(padded[1]) == len(keys(padded[0])) == len(keys(padded[1]))
    with pytest.raises(Exception, match="tar\\(s\\) for 64 ranks"):
        PackedClips(folder, rank=0, world_size=64)


def test_workers_take_whole_batches_in_turn_so_a_resume_goes_on_where_the_rank_stopped(stream_folder):
    folder, _ = stream_folder
    whole = keys(PackedClips(folder, rank=1, world_size=2, seed=5))
    stream = PackedClips(folder, batch_size=3, rank=1, world_size=2, seed=5)
    loader = DataLoader(stream, batch_size=3, num_workers=2, collate_fn=lambda clips: clips)
    assert [key for batch in loader for key in keys(batch)] == whole
    stream.set_epoch(0, start=7)
    assert [key for batch in loader for key in keys(batch)] == whole[7:]
    batch = collate_padded(list(PackedClips(folder, rank=0, world_size=1))[:3])  # as AlignedClips' clips
    assert batch["visual"].shape[0] == 3 and batch["audio_offsets"].shape[0] == 3


def test_webdataset_and_hugging_face_datasets_read_the_same_tar_samples(stream_folder):
    """The README's decoders, with the libraries as installed from PyPI."""
    import datasets
    import webdataset as wds

    folder, tars = stream_folder
    expected = tar_samples(t for t, _ in tars)
    urls = [str(t) for t, _ in tars]
    read = {}
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        clip = decode_sample(sample)
        read[sample["__key__"]] = clip
    assert sorted(read) == sorted(expected)
    for key, clip in read.items():
        assert torch.equal(clip["visual"], decode_sample(expected[key])["visual"])
    table = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train")
    assert sorted(table["__key__"]) == sorted(expected)
    row = table[0]
    clip = decode_sample(
        {key: row[key] for key in ("visual.npy", "audio_codes.npy", "audio_offsets.npy", "json")}
    )
    assert torch.equal(clip["audio_codes"], decode_sample(expected[row["__key__"]])["audio_codes"])
