"""The training-data side: clips of aligned latent frames read from the workflow's token files."""

import contextlib
import gc
import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from helpers import REPO, make_clip, planned_jobs, run_workflow, tar_samples, token_slice, whole_account
from torch.utils.data import DataLoader

import avtokens.audio_codecs
import avtokens.visual_tokenizers
from avtokens import AvTokensError, load_tokens
from avtokens.alignment import fixed_size_blocks
from avtokens.data import (
    AlignedClips,
    AlignedClipStream,
    ClipSampler,
    JointVocabulary,
    collate_clips,
    collate_padded,
    rank_share,
    read_manifests,
)
from avtokens.data.manifests import latent_rect
from avtokens.data.packed_sample import decode_sample
from avtokens.packing import PackSettings, check_pack, pack_part, write_dataset
from avtokens.shards import manifest_runs

PRESETS = {
    "CV8x8x8": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17},
    "DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17},
}
# Packed clips of 2 latent frames, a few a tar; seed 2 puts video "short" (only) in val.
PACK = {"clip_latent_frames": 2, "shard_bytes": 8_000, "val_fraction": 0.34, "seed": 2}
VIDEOS = {"long": (64, 48, 200), "short": (48, 32, 30), "tiny": (48, 32, 9)}  # width, height, frames


@pytest.fixture(scope="module")
def data_run(tmp_path_factory):
    """The workflow's token files and manifest for three videos x two presets (results under
    results/example, as `make run` writes them, so the README's example runs as written), made
    in one shard: the same files as per-video jobs (test_shards), from fewer processes."""
    root = tmp_path_factory.mktemp("data")
    sheet = root / "videos.tsv"
    rows = [
        f"{name}\t{make_clip(root / f'{name}.mp4', w, h, n, rate='25')}" for name, (w, h, n) in VIDEOS.items()
    ]
    sheet.write_text("name\tpath\n" + "\n".join(rows) + "\n")
    overlay = {"videos": str(sheet), "weights": "demo", "presets": PRESETS, "run": list(PRESETS),
               "results": "results/example", "shard_size": len(VIDEOS), "pack": PACK}  # fmt: skip
    run_workflow(root / "w", overlay, "results/example/manifest.jsonl", "pack")
    return root / "w"


def manifest(data_run):
    return data_run / "results" / "example" / "manifest.jsonl"


def whole(data_run, preset, video, part):
    return load_tokens(
        data_run / "results" / "example" / preset / "tokens" / f"{video}_{part}_tokens.safetensors"
    )


def latent_frames(data_run, preset):
    rows = [json.loads(line) for line in manifest(data_run).read_text().splitlines()]
    return {row["video"]: row["latent_frames"] for row in rows if row["preset"] == preset}


def test_every_latent_frame_is_seen_once_per_epoch_across_two_ranks_of_two_workers(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=3, preset="DV8x16x16", tail="short")
    expected = Counter({(v, i): 1 for v, n in latent_frames(data_run, "DV8x16x16").items() for i in range(n)})
    for epoch in (0, 1):
        streamed, sampled = Counter(), Counter()
        for rank in (0, 1):
            stream = AlignedClipStream(  # even=False: each clip once, not padded to equal shares
                clips, batch_size=2, collate=collate_padded, seed=7, rank=rank, world_size=2, even=False
            )
            stream.set_epoch(epoch)
            for batch in DataLoader(stream, batch_size=None, num_workers=2):
                for video, start, mask in zip(
                    batch["video"], batch["start"], batch["frame_mask"], strict=True
                ):
                    streamed.update((video, int(start) + i) for i in range(int(mask.sum())))
            sampler = ClipSampler(clips, seed=7, rank=rank, world_size=2, even=False)
            sampler.set_epoch(epoch)
            loader = DataLoader(
                clips, batch_size=2, sampler=sampler, num_workers=2, collate_fn=collate_padded
            )
            for batch in loader:
                for video, start, mask in zip(
                    batch["video"], batch["start"], batch["frame_mask"], strict=True
                ):
                    sampled.update((video, int(start) + i) for i in range(int(mask.sum())))
        assert streamed == expected and sampled == expected


def test_epochs_are_shuffled_by_seed_and_epoch_and_shards_differ_by_at_most_one():
    orders = {
        (seed, epoch): rank_share(101, seed, epoch, 0, 1).tolist() for seed in (0, 1) for epoch in (0, 1)
    }
    assert sorted(orders[0, 0]) == list(range(101)) and len(set(map(tuple, orders.values()))) == 4
    assert rank_share(101, 0, 0, 0, 1).tolist() == orders[0, 0]  # the same again
    shares = [rank_share(101, 3, 2, rank, 4, even=False) for rank in range(4)]
    assert sorted(i for s in shares for i in s.tolist()) == list(range(101))
    assert {len(s) for s in shares} == {25, 26}
    assert {len(rank_share(101, 3, 2, rank, 4, even="drop")) for rank in range(4)} == {25}
    assert {len(rank_share(101, 3, 2, rank, 4)) for rank in range(4)} == {26}  # padded: the default


def test_a_clip_holds_its_latent_frames_and_exactly_their_audio(data_run):
    for preset, name in (("CV8x8x8", "latents"), ("DV8x16x16", "indices")):
        clips = AlignedClips(manifest(data_run), clip_length=4, preset=preset, stride=3)
        assert len(clips) == sum((n - 4) // 3 + 1 for n in latent_frames(data_run, preset).values() if n >= 4)
        for index in range(len(clips)):
            clip = clips[index]
            visual, audio = (
                whole(data_run, preset, clip["video"], "visual"),
                whole(data_run, preset, clip["video"], "audio"),
            )
            start, stop = clip["start"], clip["start"] + 4
            assert torch.equal(clip["visual"], visual[name][0, start:stop].to(clip["visual"].dtype))
            ranges = audio["code_ranges"][start:stop]
            codes = audio["codes"][0].to(torch.int64)
            for i, (first, last) in enumerate(ranges.tolist()):
                offsets = clip["audio_offsets"]
                assert torch.equal(clip["audio_codes"][offsets[i] : offsets[i + 1]], codes[first:last])
            assert int(clip["audio_offsets"][-1]) == int(ranges[-1, 1] - ranges[0, 0])
            spans = visual["frame_spans"][start:stop]
            assert torch.equal(clip["frame_start"], spans[:, 0])
            assert torch.allclose(clip["time"], spans[:, 0].double() / 25)
            # The first latent frame of a window stands for one video frame, every other for 8.
            assert torch.equal(clip["window_start"], spans[:, 1] - spans[:, 0] == 1)
        assert clips[0]["visual"].dtype == (torch.bfloat16 if preset == "CV8x8x8" else torch.int64)


def test_fixed_size_audio_blocks_are_the_stored_ranges_cut_or_padded(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=5, preset="CV8x8x8", audio="blocks")
    summary = json.loads(
        (manifest(data_run).parent / "CV8x8x8" / "metrics" / "long_summary.json").read_text()
    )
    assert clips.block_size == summary["codes_per_latent_frame"] == 27  # 8 frames at 25 fps: 27.6
    clip = clips[1]
    audio = whole(data_run, "CV8x8x8", clip["video"], "audio")
    ranges = audio["code_ranges"][clip["start"] : clip["start"] + 5]
    expected = fixed_size_blocks(audio["codes"][0].to(torch.int64), ranges, 27)
    assert clip["audio_codes"].shape == (5, 27, 9) and torch.equal(clip["audio_codes"], expected)


def test_a_clip_costs_its_own_bytes_not_the_file(data_run):
    """Measured by the kernel too: the bytes read() and pread() returned to this process."""

    def read_chars():
        return int(re.search(r"rchar: (\d+)", Path("/proc/self/io").read_text()).group(1))

    clips = AlignedClips(manifest(data_run), clip_length=2, preset="CV8x8x8")
    long = [i for i, (video, _, _) in enumerate(clips.clips) if clips.videos[video].video == "long"]
    clips[long[0]]  # opens the two files and reads their headers, frame spans and code ranges
    before, chars = clips.bytes_read, read_chars()
    measuring = read_chars() - chars  # reading /proc/self/io counts too
    clip = clips[long[5]]
    after = read_chars()
    expected = clip["visual"].numel() * 2 + clip["audio_codes"].shape[0] * 9 * 2  # bf16 latents, uint16 codes
    assert clips.bytes_read - before == expected
    assert 0 <= after - chars - 2 * measuring - expected < 16  # nothing else was read
    visual = whole(data_run, "CV8x8x8", "long", "visual")
    file_bytes = (
        data_run / "results" / "example" / "CV8x8x8" / "tokens" / "long_visual_tokens.safetensors"
    ).stat()
    assert expected * 10 < file_bytes.st_size and visual["latents"].shape[1] > 20


def test_joint_tokens_lay_out_each_latent_frame_in_one_vocabulary(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=3, preset="DV8x16x16", joint_tokens=True)
    vocab = clips.vocabulary  # Cosmos DV's and DAC's: the docstring's worked example
    assert (vocab.visual, vocab.audio_offset, vocab.frame, vocab.audio, vocab.size) == (
        64000, 64000, 64000 + 9 * 1024, 73217, 73218)  # fmt: skip
    clip = clips[2]
    tokens, offsets = clip["tokens"], clip["token_offsets"]
    h, w = clip["visual"].shape[1:]
    for i in range(3):
        frame = tokens[offsets[i] : offsets[i + 1]]
        codes = clip["audio_codes"][clip["audio_offsets"][i] : clip["audio_offsets"][i + 1]]
        assert len(frame) == 2 + h * w + 9 * len(codes)
        assert frame[0] == vocab.frame and frame[1 + h * w] == vocab.audio
        assert torch.equal(frame[1 : 1 + h * w], clip["visual"][i].reshape(-1))
        audio = frame[2 + h * w :].reshape(-1, 9) - 64000
        assert torch.equal(audio // 1024, torch.arange(9).expand_as(audio))  # codebook b -> its own 1024 ids
        assert torch.equal(audio % 1024, codes)
    assert int(tokens.max()) < vocab.size
    continuous = AlignedClips(manifest(data_run), clip_length=3, preset="CV8x8x8")
    assert continuous.vocabulary is None and continuous.layout.tensor == "latents"
    with pytest.raises(ValueError, match="joint_tokens needs discrete"):
        AlignedClips(manifest(data_run), clip_length=3, preset="CV8x8x8", joint_tokens=True)


# A manifest row of a video without family or codec (as rows were written before either was a
# plug-in): Cosmos DV8x16x16 and DAC's 9 codebooks; and the same tokenizer with Mimi's codes.
ROW = {
    "video": "v",
    "preset": "p",
    "kind": "DV",
    "temporal": 8,
    "spatial": 16,
    "window": 17,
    "visual_tokens": "v.safetensors",
    "audio_tokens": "a.safetensors",
    "latent_frames": 3,
    "latent_height": 2,
    "latent_width": 3,
    "fps": "25",
}
MIMI_ROW = {**ROW, "video": "w", "audio_codec": "mimi", "audio_codebooks": 8, "audio_codebook_size": 2048,
            "audio_sample_rate": 24000, "audio_hop": 1920}  # fmt: skip


def test_a_joint_vocabulary_is_the_one_its_rows_record(tmp_path):
    """Mimi's 8 codebooks of 2048 after Cosmos DV's 64,000 indices, from a Mimi row."""
    (tmp_path / "manifest.jsonl").write_text(json.dumps(MIMI_ROW) + "\n")
    clips = AlignedClips(tmp_path / "manifest.jsonl", clip_length=1, joint_tokens=True, verify="none")
    vocab = clips.vocabulary
    assert vocab == JointVocabulary.of(clips.videos[0]) == JointVocabulary(64000, 8, 2048)
    assert clips.layout.tensor == "indices"
    assert (vocab.frame, vocab.audio, vocab.size) == (64000 + 8 * 2048, 80385, 80386)
    codes = torch.tensor([[0] * 8, [2047] * 8])
    ids = vocab.frame_tokens(torch.tensor([[7, 8]]), codes)
    assert ids.tolist()[:4] == [vocab.frame, 7, 8, vocab.audio] and len(ids) == 4 + 2 * 8
    assert torch.equal(ids[4:12], 64000 + 2048 * torch.arange(8))
    assert torch.equal(ids[12:], 64000 + 2048 * torch.arange(8) + 2047)
    wan = {**MIMI_ROW, "family": "wan2.1", "kind": "CV", "temporal": 4, "spatial": 8}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(wan) + "\n")
    (video,) = read_manifests(tmp_path / "manifest.jsonl", verify="none")
    with pytest.raises(ValueError, match="manifest.jsonl:1: wan2.1 CV tokens are continuous latents"):
        JointVocabulary.of(video)


def test_a_dataset_of_two_codecs_is_refused(tmp_path, monkeypatch):
    row, mimi = ROW, dict(MIMI_ROW)  # mimi loses a field below
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(mimi) + "\n")
    mixed = "one kind of tokens, but .* with 9 codebooks of dac and .* with 8 codebooks of mimi"
    with pytest.raises(AvTokensError, match=mixed):
        read_manifests(tmp_path / "manifest.jsonl", verify="none")
    # So a dataset of them, which would need two vocabularies, is refused too.
    with pytest.raises(AvTokensError, match=mixed):
        AlignedClips(tmp_path / "manifest.jsonl", clip_length=1, joint_tokens=True, verify="none")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(mimi) + "\n")
    (video,) = read_manifests(tmp_path / "manifest.jsonl", verify="none")
    assert (video.codec, video.codebooks, video.codebook_size, video.code_clock) == (
        "mimi",
        8,
        2048,
        (24000, 1920),
    )
    # A row written before rows named their family and codec is what it was then, whatever the
    # defaults are now.
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    with monkeypatch.context() as patched:
        patched.setattr(avtokens.visual_tokenizers, "DEFAULT_FAMILY", "wan2.1")
        patched.setattr(avtokens.audio_codecs, "DEFAULT_CODEC", "mimi")
        patched.setattr(avtokens.audio_codecs.DAC, "default_codebooks", 12)
        (video,) = read_manifests(tmp_path / "manifest.jsonl", verify="none")
        assert JointVocabulary.of(video) == JointVocabulary(64000, 9, 1024)
    assert (video.family, video.codec, video.codebooks, video.codebook_size, video.code_clock) == (
        "cosmos",
        "dac",
        9,
        1024,
        (44100, 512),
    )
    del mimi["latent_width"]  # a row of an older manifest
    (tmp_path / "manifest.jsonl").write_text(json.dumps(mimi) + "\n")
    with pytest.raises(AvTokensError, match=r"manifest.jsonl:1: the row has no 'latent_width'; write the"):
        read_manifests(tmp_path / "manifest.jsonl", verify="none")


def test_an_epoch_resumes_where_it_stopped(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=2, preset="DV8x16x16")
    full = list(ClipSampler(clips, seed=3, rank=1, world_size=2))
    assert list(ClipSampler(clips, seed=3, rank=1, world_size=2, start=5)) == full[5:]
    stream = AlignedClipStream(clips, batch_size=3, collate=collate_padded, seed=3, rank=1, world_size=2)
    every = [batch["start"].tolist() for batch in DataLoader(stream, batch_size=None, num_workers=2)]
    stream.set_epoch(0, start_batch=2)
    rest = [batch["start"].tolist() for batch in DataLoader(stream, batch_size=None, num_workers=2)]
    assert len(every) > 3 and rest == every[2:]


def test_collating_equal_clips_stacks_them_and_packs_their_audio(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=3, preset="CV8x8x8")
    same_size = [clips[i] for i, (v, _, _) in enumerate(clips.clips) if clips.videos[v].video == "long"][:3]
    batch = collate_clips(same_size)
    assert batch["visual"].shape == (3, 3, 6, 8, 16) and batch["frame_mask"].all()
    for b, clip in enumerate(same_size):
        offsets = batch["audio_offsets"][b]
        assert torch.equal(batch["audio_codes"][offsets[0] : offsets[-1]], clip["audio_codes"])
    other = next(clips[i] for i, (v, _, _) in enumerate(clips.clips) if clips.videos[v].video == "short")
    with pytest.raises(ValueError, match="clips of different shapes"):
        collate_clips([same_size[0], other])
    padded = collate_padded([same_size[0], other])  # 8x6 and 6x4 latents
    h, w = other["visual"].shape[1:3]
    assert padded["visual"].shape == (2, 3, 6, 8, 16) and padded["latent_mask"][0].all()
    assert padded["latent_mask"][1].sum() == h * w and padded["latent_mask"][1, :h, :w].all()
    assert (
        torch.equal(padded["visual"][1, :, :h, :w], other["visual"]) and not padded["visual"][1, :, h:].any()
    )


def test_short_tails_are_padded_with_a_mask(data_run):
    clips = AlignedClips(manifest(data_run), clip_length=5, preset="DV8x16x16", tail="short")
    tail = [clips[i] for i, (v, s, n) in enumerate(clips.clips) if clips.videos[v].video == "long"][-2:]
    n = latent_frames(data_run, "DV8x16x16")["long"] % 5  # 36 latent frames: 7 clips of 5 and 1
    assert len(tail[1]["visual"]) == n and len(tail[0]["visual"]) == 5 and 0 < n
    batch = collate_padded(tail)
    assert batch["frame_mask"][1].tolist() == [True] * n + [False] * (5 - n)
    assert not batch["visual"][1, n:].any()
    offsets = batch["audio_offsets"][1]
    assert (offsets[n:] == offsets[n]).all()  # padded latent frames carry no audio


def test_bad_manifests_and_settings_are_refused_with_one_line_each(data_run, tmp_path, caplog):
    with pytest.raises(AvTokensError, match="rows of presets CV8x8x8, DV8x16x16; choose one with preset="):
        AlignedClips(manifest(data_run), clip_length=2)
    with pytest.raises(AvTokensError, match="no rows of preset nope"):
        AlignedClips(manifest(data_run), clip_length=2, preset="nope")
    # A second manifest whose preset of the same name is another kind of tokenizer.
    rows = [json.loads(line) for line in manifest(data_run).read_text().splitlines()]
    other = tmp_path / "other.jsonl"
    renamed = [{**row, "preset": "DV8x16x16"} for row in rows if row["preset"] == "CV8x8x8"]
    other.write_text("".join(json.dumps(row) + "\n" for row in renamed))
    shutil.copytree(manifest(data_run).parent / "CV8x8x8", tmp_path / "CV8x8x8")
    with pytest.raises(
        AvTokensError,
        match=r"one kind of tokens, but .*manifest.jsonl:\d+ is cosmos DV8x16x16 .* is cosmos CV8x8x8",
    ):
        AlignedClips([manifest(data_run), other], clip_length=2, preset="DV8x16x16")
    # The same kind and factors from another tokenizer family: not one kind of tokens either.
    same_kind = [{**row, "family": "wan2.1"} for row in rows if row["preset"] == "DV8x16x16"]
    family = tmp_path / "family.jsonl"
    family.write_text("".join(json.dumps(row) + "\n" for row in same_kind))
    with pytest.raises(
        AvTokensError,
        match=r"is cosmos DV8x16x16 with 9 codebooks of dac and .*family.jsonl:1 is wan2.1 DV8x16x16 with",
    ):
        AlignedClips([manifest(data_run), family], clip_length=2, preset="DV8x16x16", verify="none")
    # Files gone or changed since the manifest was written: every one named.
    (tmp_path / "CV8x8x8" / "tokens" / "short_visual_tokens.safetensors").unlink()
    with open(tmp_path / "CV8x8x8" / "tokens" / "long_audio_tokens.safetensors", "ab") as f:
        f.write(b"\0")
    with pytest.raises(AvTokensError) as err:
        AlignedClips(other, clip_length=2)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("2 token file(s) missing or changed") and len(lines) == 3
    assert re.search(r"other.jsonl:\d+: .*short_visual_tokens.safetensors: no such file", lines[2] + lines[1])
    assert re.search(r"long_audio_tokens.safetensors: \d+ bytes, the manifest says \d+", str(err.value))
    # A video too short for a clip is left out with a warning; none long enough is an error.
    with caplog.at_level(logging.WARNING):
        clips = AlignedClips(manifest(data_run), clip_length=5, preset="DV8x16x16")
    assert "video tiny has 2 latent frames, fewer than clip_length 5: left out" in caplog.text
    assert {clips.videos[v].video for v, _, _ in clips.clips} == {"long", "short"}
    with pytest.raises(AvTokensError, match="no video has 500 latent frames"):
        AlignedClips(manifest(data_run), clip_length=500, preset="DV8x16x16")


def test_the_readme_example_runs_as_written(data_run):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Training on the tokens", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # cwd: see the chdir below
    assert namespace["batch"]["visual"].shape[0] >= 1


@pytest.fixture(autouse=True)
def in_the_workdir(request, monkeypatch):
    """The README example reads results/example/manifest.jsonl from where it runs."""
    if "data_run" in request.fixturenames:
        monkeypatch.chdir(request.getfixturevalue("data_run"))


def test_a_bounded_number_of_files_stay_open_and_clips_stay_the_same(data_run):
    def token_files_open():
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sum(link.endswith("_tokens.safetensors") for link in links)

    many = AlignedClips(manifest(data_run), clip_length=2, preset="DV8x16x16")
    few = AlignedClips(manifest(data_run), clip_length=2, preset="DV8x16x16", open_files=1)
    before = token_files_open()
    for index in list(range(len(few))) * 2:  # every video's two files, in turn, twice
        a, b = many[index], few[index]
        assert torch.equal(a["visual"], b["visual"]) and torch.equal(a["audio_codes"], b["audio_codes"])
        assert token_files_open() - before <= 2 * len(many.videos) + 1
    del many
    gc.collect()
    assert token_files_open() - before <= 1


def test_a_padded_picture_is_given_in_latent_positions():
    """fit: pad records where the picture sits in the bucket (pixels); a reader gets the latent
    positions it touches: 960x720 at x 160 in 1280x720, factor 16: columns 10 to 69."""
    assert latent_rect([160, 0, 960, 720], 16) == (10, 0, 60, 45)
    assert latent_rect([0, 93, 1280, 533], 8) == (0, 11, 160, 68)  # rows 93 to 625: 11 to 78
    assert latent_rect(None, 8) is None


# --- Packed training shards (`snakemake pack`), of the same run -----------------------------


def sources(data_run) -> dict[str, str]:
    """The sheet's videos: name -> source file."""
    lines = (data_run.parent / "videos.tsv").read_text().splitlines()[1:]
    return dict(line.split("\t") for line in lines)


def packed_index(data_run, preset) -> dict:
    return json.loads((data_run / "results" / "example" / "packed" / preset / "dataset.json").read_text())


def packed_tars(data_run, preset, split=None) -> list[Path]:
    folder, index = data_run / "results" / "example" / "packed" / preset, packed_index(data_run, preset)
    return [
        folder / tar["path"]
        for name, tars in index["splits"].items()
        if split in (None, name)
        for tar in tars
    ]


def test_every_packed_clip_is_its_token_files_slice_and_a_video_is_in_one_split(data_run):
    rows = [json.loads(line) for line in manifest(data_run).read_text().splitlines()]
    split_of = {"long": "train", "short": "val", "tiny": "train"}  # by PACK's seed
    verdict = json.loads((data_run / "results" / "example" / "packed" / "pack_complete.json").read_text())
    for preset in PRESETS:
        expected = {
            f"{row['video']}/{preset}/{start:06d}": row
            for row in rows
            if row["preset"] == preset
            for start in range(0, row["latent_frames"] - 1, 2)
        }
        found = {split: tar_samples(packed_tars(data_run, preset, split)) for split in ("train", "val")}
        assert sorted([*found["train"], *found["val"]]) == sorted(expected)
        assert verdict[preset] == {split: len(samples) for split, samples in found.items()}
        for split, samples in found.items():
            assert {key.split("/")[0] for key in samples} == {v for v, s in split_of.items() if s == split}
            for key, files in samples.items():
                row, start = expected[key], int(key.rsplit("/", 1)[1])
                base = manifest(data_run).parent
                frames, spans, codes, offsets = token_slice(
                    base / row["visual_tokens"], base / row["audio_tokens"], start, 2
                )
                stored = np.load(io.BytesIO(files["visual.npy"]))
                if frames.dtype == torch.bfloat16:
                    stored = torch.from_numpy(stored.view(np.int16)).view(torch.bfloat16)
                assert torch.equal(torch.as_tensor(stored), frames), key
                assert np.array_equal(np.load(io.BytesIO(files["audio_codes.npy"])), codes.numpy()), key
                assert np.load(io.BytesIO(files["audio_offsets.npy"])).tolist() == offsets
                record = json.loads(files["json"])
                assert (record["video"], record["start"], record["frame_start"]) == (
                    row["video"],
                    start,
                    spans[:, 0].tolist(),
                )
                assert (record["codec"], record["source_sha256"]) == (
                    row["audio_codec"],
                    row["source_sha256"],
                )
                assert record["source"] == sources(data_run)[row["video"]]
                assert (record["family"], record["release"], record["kind"]) == (
                    row["family"],
                    row["release"],
                    row["kind"],
                )
        card = (data_run / "results" / "example" / "packed" / preset / "README.md").read_text()
        assert (
            f"| train | 2 | {len(found['train'])} |" in card and f"| val | 1 | {len(found['val'])} |" in card
        )
    # Hugging Face datasets finds both splits' tars from the card (its YAML header's data_files)
    table = datasets.load_dataset(str(data_run / "results" / "example" / "packed" / preset))
    assert {split: sorted(table[split]["__key__"]) for split in table} == {
        split: sorted(samples) for split, samples in found.items()
    }


# An epoch of the packed folder argv[1] through Energon's get_train_dataset and through
# PackedClips (a collective every step), in one process or in each rank of torchrun; what each
# saw goes to seen<rank>.json.
PACKED_EPOCH = """
import json, os, sys
import torch
import torch.distributed as dist
from megatron.energon import WorkerConfig, get_loader, get_train_dataset
from avtokens.data import PackedClips
if "WORLD_SIZE" in os.environ:
    dist.init_process_group("gloo")
config = WorkerConfig.default_worker_config(num_workers=0)
dataset = get_train_dataset(sys.argv[1], batch_size=None, worker_config=config, shuffle_buffer_size=None,
                            max_samples_per_sequence=None, repeat=False)
energon = [[clip.__key__, clip.video, clip.start, list(clip.visual.shape), str(clip.visual.dtype),
            clip.audio_codes.shape[0], int(clip.audio_offsets[-1])] for clip in get_loader(dataset)]
ours = []
for clip in PackedClips(sys.argv[1]):
    ours.append(f"{clip['video']}/{clip['preset']}/{clip['start']:06d}")
    if dist.is_initialized():  # as training does
        dist.all_reduce(torch.ones(1))
rank = dist.get_rank() if dist.is_initialized() else 0
with open(f"seen{rank}.json", "w") as out:
    json.dump({"energon": energon, "ours": ours}, out)
if dist.is_initialized():
    dist.destroy_process_group()
"""


def packed_epoch(folder, workdir, ranks: int, monkeypatch) -> list[dict]:
    """What each rank saw of an epoch (PACKED_EPOCH): in this process for one rank, else under
    torchrun, where a run that does not end within two minutes (a rank waiting in a collective)
    fails."""
    (workdir / "epoch.py").write_text(PACKED_EPOCH)
    if ranks == 1:
        with monkeypatch.context() as patched:
            patched.chdir(workdir)
            patched.setattr(sys, "argv", ["epoch.py", str(folder)])
            exec(compile(PACKED_EPOCH, "epoch.py", "exec"), {})
        return [json.loads((workdir / "seen0.json").read_text())]
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"] if ranks > 1 else []
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, *launcher, "epoch.py", str(folder)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads((workdir / f"seen{rank}.json").read_text()) for rank in range(ranks)]


def test_energon_and_packed_clips_read_every_train_clip_once_per_epoch_on_one_rank_and_on_two(
    data_run, tmp_path, monkeypatch
):
    """megatron-energon as installed from PyPI, on the folder as the workflow left it."""
    folder = data_run / "results" / "example" / "packed" / "CV8x8x8"
    expected = tar_samples(packed_tars(data_run, "CV8x8x8", "train"))
    (alone,) = packed_epoch(folder, tmp_path, 1, monkeypatch)
    assert sorted(key for key, *_ in alone["energon"]) == sorted(alone["ours"]) == sorted(expected)
    for key, video, start, shape, dtype, codes, last in alone["energon"]:
        decoded = decode_sample(expected[key])
        assert (video, start, shape, dtype) == (
            decoded["video"],
            decoded["start"],
            list(decoded["visual"].shape),
            "torch.bfloat16",
        )
        assert codes == len(decoded["audio_codes"]) == last
    two = packed_epoch(folder, tmp_path, 2, monkeypatch)
    shares = [[key for key, *_ in rank["energon"]] for rank in two]
    assert sorted(shares[0] + shares[1]) == sorted(expected) and shares[0] and shares[1]  # each on one rank
    assert len(two[0]["ours"]) == len(two[1]["ours"])  # PackedClips: equal steps (padded)
    assert set(two[0]["ours"]) | set(two[1]["ours"]) == set(expected)


def test_packing_again_gives_the_same_bytes(data_run, tmp_path):
    results = data_run / "results" / "example"
    records = sorted((results / "shards").rglob("summarize*.shard.json"))
    runs = manifest_runs(
        [r for r in records if r.name == "summarize.shard.json"],
        [r for r in records if r.name == "summarize_audio.shard.json"],
        {"CV8x8x8": "dac/demo", "DV8x16x16": "dac/demo"},
    )
    for preset in PRESETS:
        mine = [run for run in runs if f"/{preset}/" in run["summary"]]
        record = pack_part(mine, tmp_path / preset, "shard00000", PackSettings(**PACK), sources(data_run))
        made = json.loads((results / "packed" / preset / "shard00000.pack.json").read_text())
        assert record["tars"] == made["tars"]
        for tar in made["tars"]:
            assert (tmp_path / preset / tar["path"]).read_bytes() == (
                results / "packed" / preset / tar["path"]
            ).read_bytes()


def test_a_video_whose_codes_cannot_be_cut_or_whose_file_is_missing_is_named_and_the_others_pack(
    data_run, tmp_path, caplog
):
    """A token file whose bytes its summary describes but whose code ranges point past its codes
    (as after a rerun of `summarize` on a damaged file, in per-video mode: the file is newer)
    is found as its clips are cut; the part is packed again without it."""
    results = data_run / "results" / "example"
    copied = tmp_path / "results"
    shutil.copytree(results / "CV8x8x8", copied / "CV8x8x8")
    runs = [
        {
            "summary": str(copied / "CV8x8x8" / "metrics" / f"{video}_summary.json"),
            "visual_tokens": str(copied / "CV8x8x8" / "tokens" / f"{video}_visual_tokens.safetensors"),
            "audio_tokens": str(copied / "CV8x8x8" / "tokens" / f"{video}_audio_tokens.safetensors"),
            "audio_summary": str(results / "audio" / "dac" / "demo" / f"{video}_summary.json"),
        }
        for video in VIDEOS
    ]
    garbled = Path(runs[0]["audio_tokens"])
    data = bytearray(garbled.read_bytes())
    (size,) = struct.unpack("<Q", data[:8])  # safetensors: the header's length, the header, the data
    begin = 8 + size + json.loads(data[8 : 8 + size])["code_ranges"]["data_offsets"][0]
    data[begin + 7] = 0x7F  # the first latent frame's codes start past the end of the codes
    garbled.write_bytes(bytes(data))
    summary = json.loads(Path(runs[0]["summary"]).read_text())
    summary["files"]["audio_tokens"]["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    Path(runs[0]["summary"]).write_text(json.dumps(summary))
    Path(runs[2]["visual_tokens"]).unlink()
    packed = tmp_path / "packed" / "CV8x8x8"
    record = pack_part(runs, packed, "all", PackSettings(**PACK), sources(data_run))
    assert sorted(record["failed"]) == ["long", "tiny"] and list(record["videos"]) == ["short"]
    assert record["failed"]["long"].startswith("its token files cannot be cut into clips (")
    assert record["failed"]["tiny"].endswith("tiny_visual_tokens.safetensors: missing")
    assert sorted(
        f"video {video} not packed: {record['failed'][video]}" for video in ("long", "tiny")
    ) == sorted(r.message for r in caplog.records if r.levelname == "ERROR")
    tars = [packed / tar["path"] for tar in record["tars"]]
    assert {key.split("/")[0] for key in tar_samples(tars)} == {"short"}  # nothing of long's is left
    assert sorted(p.name for p in (packed / "all").glob("*.tar")) == sorted(t.name for t in tars)
    write_dataset(packed, "CV8x8x8", [record])
    with pytest.raises(
        AvTokensError,
        match="2 problem.*preset CV8x8x8: video long not packed: .*preset CV8x8x8: "
        "video tiny not packed: .*missing",
    ):
        check_pack([packed / "dataset.json"], tmp_path / "pack_complete.json")
    assert not (tmp_path / "pack_complete.json").exists()


def test_a_new_video_packs_its_own_part_only(data_run):
    sheet = data_run / "more_videos.tsv"
    rows = (data_run.parent / "videos.tsv").read_text()
    sheet.write_text(rows + "late\t" + rows.splitlines()[1].split("\t")[1] + "\n")
    overlay = {
        "videos": str(sheet),
        "weights": "demo",
        "presets": PRESETS,
        "run": list(PRESETS),
        "results": "results/example",
        "shard_size": len(VIDEOS),
        "pack": PACK,
    }
    dry_run = run_workflow(data_run, overlay, "pack", "-n")
    jobs = planned_jobs(dry_run)
    assert jobs["pack_part"] == 2 and jobs["pack_index"] == 2 and jobs["pack"] == 1  # shard00001's, x preset
    dry = whole_account(dry_run)
    assert "output: results/example/packed/CV8x8x8/shard00001.pack.json" in dry
    assert "output: results/example/packed/CV8x8x8/shard00000.pack.json" not in dry


def test_the_pack_target_fails_naming_a_video_whose_token_file_is_damaged(data_run, tmp_path):
    """As a user runs it: a copy of the run, one token file damaged, `snakemake pack` again."""
    work = tmp_path / "w"
    shutil.copytree(data_run, work)
    damaged = work / "results" / "example" / "CV8x8x8" / "tokens" / "long_audio_tokens.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    overlay = {"videos": str(data_run.parent / "videos.tsv"), "weights": "demo", "presets": PRESETS,
               "run": list(PRESETS), "results": "results/example", "shard_size": len(VIDEOS),
               "pack": {**PACK, "presets": ["CV8x8x8"]}}  # fmt: skip
    proc = run_workflow(work, overlay, "pack", "--forcerun", "pack_part", check=False)
    assert proc.returncode != 0
    named = [line for line in proc.stderr.splitlines() if "video long not packed" in line]
    assert named and all(
        "long_audio_tokens.safetensors: not the file its summary describes" in n for n in named
    )
    packed = work / "results" / "example" / "packed"
    assert not (packed / "pack_complete.json").exists()
    index = json.loads((packed / "CV8x8x8" / "dataset.json").read_text())
    assert sorted(index["videos"]) == ["short", "tiny"] and list(index["failed"]) == ["long"]


def test_the_readmes_loops_over_packed_shards_run_as_written(data_run):
    """Energon's (3 steps of its endless stream, not 1,000), webdataset's and PackedClips', on
    the shards `snakemake pack` wrote (cwd: the run's folder, as after `make run`)."""
    section = (REPO / "README.md").read_text().split("## Packed training shards", 1)[1].split("\n## ", 1)[0]
    energon, plain, ours = re.findall(r"```python\n(.*?)```", section, re.S)
    assert energon.count("range(1000)") == 1
    for code, check in (
        (energon.replace("range(1000)", "range(3)"), lambda found: found["step"] == 2),
        (
            plain,
            lambda found: (
                found["visual"].dtype == torch.int64 and found["offsets"][-1] == len(found["codes"])
            ),
        ),
        (ours, lambda found: found["batch"]["visual"].shape[0] >= 1),
    ):
        found = {}
        exec(compile(code, "README.md", "exec"), found)
        assert check(found)
