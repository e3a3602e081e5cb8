"""Packed training shards, read back with `tarfile` and numpy and checked against the token
files as `safetensors` reads them: not through the packer's own code."""

import io
import json
import tarfile
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import benchmark
from safetensors import safe_open

from avtokens.packing import pack_clips, sample_key
from avtokens.presets import make_audio_setting, make_preset

PRESETS = {  # one continuous and one discrete, with DAC's and Mimi's codes
    "CV8x8x8": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17},
    "DV8x16x16-mimi": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "codec": "mimi"},
}
VIDEOS = {"a.b": (32, 32, 130), "c": (64, 48, 60), "d": (48, 32, 200)}  # width, height, frames at 25 fps
SHARD_BYTES = 4_000  # a few clips a tar


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    data_loading = benchmark("data_loading")
    folder = tmp_path_factory.mktemp("tokens")
    rows = [data_loading.write_episode(folder, make_preset(name, fields), make_audio_setting(name, fields),
                                       frames, Fraction(25), width, height, video)
            for name, fields in PRESETS.items()
            for video, (width, height, frames) in VIDEOS.items()]  # fmt: skip
    (folder / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder / "manifest.jsonl"


def samples(tars) -> dict[str, dict[str, bytes]]:
    """key -> extension -> bytes, read with tarfile; every member's key is new."""
    found = defaultdict(dict)
    for path in tars:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                folder, _, name = member.name.rpartition("/")
                stem, _, extension = name.partition(".")
                key = f"{folder}/{stem}"
                assert extension not in found[key], member.name
                found[key][extension] = tar.extractfile(member).read()
    return found


def from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_a_key_has_no_dot_and_tells_clips_apart():
    assert sample_key("ep.1", "CV8x8x8", 16) == "ep%2E1/CV8x8x8/000016"
    assert sample_key("ep%2E1", "CV8x8x8", 16) != sample_key("ep.1", "CV8x8x8", 16)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_packed_clip_is_the_slice_of_its_token_files(manifest, tmp_path, preset):
    tars = pack_clips(manifest, preset, tmp_path / "packed", 4, shard_bytes=SHARD_BYTES, seed=1)
    assert len(tars) > 1 and [t.name for t in tars] == [f"{preset}-{i:06d}.tar" for i in range(len(tars))]
    packed = samples(tars)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    expected = {sample_key(row["video"], preset, start): row
                for row in rows if row["preset"] == preset
                for start in range(0, row["latent_frames"] - 3, 4)}  # fmt: skip
    assert sorted(packed) == sorted(expected)  # every whole clip once, the last partial ones left out
    videos = [key.split("/")[0] for key in packed]  # in the order written
    changes = sum(a != b for a, b in zip(videos, videos[1:], strict=False))
    assert changes > len(VIDEOS) - 1  # shuffled across videos, not one video after another
    for key, files in packed.items():
        row = expected[key]
        record, start = json.loads(files["json"]), int(key.rsplit("/", 1)[1])
        assert (record["video"], record["preset"], record["start"], record["latent_frames"]) == (
            row["video"], preset, start, 4)  # fmt: skip
        with safe_open(str(manifest.parent / row["visual_tokens"]), framework="pt") as visual:
            name = "indices" if row["kind"] == "DV" else "latents"
            frames = visual.get_tensor(name)[0, start : start + 4]
            spans = visual.get_tensor("frame_spans")
        stored = from_npy(files["visual.npy"])
        if frames.dtype == torch.bfloat16:
            assert stored.dtype == np.uint16 and record["visual"]["dtype"] == "bfloat16"
            assert torch.equal(torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16), frames)
        else:
            assert np.array_equal(stored, frames.numpy())
        assert record["frame_start"] == int(spans[start, 0])
        assert record["time"] == int(spans[start, 0]) / 25
        with safe_open(str(manifest.parent / row["audio_tokens"]), framework="pt") as audio:
            ranges = audio.get_tensor("code_ranges")[start : start + 4]
            codes = audio.get_tensor("codes")[0, int(ranges[0, 0]) : int(ranges[-1, 1])]
        assert np.array_equal(from_npy(files["audio_codes.npy"]), codes.numpy())
        offsets = from_npy(files["audio_offsets.npy"])
        assert offsets.tolist() == [
            *(ranges[:, 0] - ranges[0, 0]).tolist(),
            int(ranges[-1, 1] - ranges[0, 0]),
        ]


def test_packing_twice_gives_the_same_bytes_and_a_seed_its_own_order(manifest, tmp_path):
    first = pack_clips(manifest, "CV8x8x8", tmp_path / "one", 4, shard_bytes=SHARD_BYTES, seed=1)
    again = pack_clips(manifest, "CV8x8x8", tmp_path / "two", 4, shard_bytes=SHARD_BYTES, seed=1)
    assert [t.read_bytes() for t in first] == [t.read_bytes() for t in again]
    other = pack_clips(manifest, "CV8x8x8", tmp_path / "three", 4, shard_bytes=SHARD_BYTES, seed=2)
    assert list(samples(other)) != list(samples(first)) and sorted(samples(other)) == sorted(samples(first))


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
        pack_clips(manifest, "CV8x8x8", tmp_path / "packed", 4, shard_bytes=SHARD_BYTES, seed=1)
    left = sorted(p.name for p in (tmp_path / "packed").rglob("*") if p.is_file())
    complete = [name for name in left if name.endswith(".tar")]
    assert all(name.startswith("CV8x8x8-") for name in complete) and not [
        n for n in left if n not in complete
    ]
    for name in complete:  # the tars finished before the failure are whole
        with tarfile.open(tmp_path / "packed" / name) as tar:
            assert tar.getmembers()
