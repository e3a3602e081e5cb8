"""Token files and manifests in object storage (avtokens.storage), against a local S3 server
that counts requests and body bytes server side (tests/s3_server.py): `AlignedClips` over an
`s3://` manifest gives the clips of the same files on disk, a clip costs its own byte ranges,
under torchrun with two ranks and worker processes too; failures name the object in one line.

The token files are written directly (random tokens in the workflow's layout,
benchmarks/data_loading.py) and uploaded as the workflow leaves them: the manifest beside the
presets' folders."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers import token_files_manifest, token_slice
from s3_server import S3Server

from avtokens import AvTokensError
from avtokens.data import AlignedClips
from avtokens.media import sha256_of
from avtokens.tokenfile import TokenFileReader

BUCKET, PREFIX = "avt-tokens", "runs/one/results"
MANIFEST = f"s3://{BUCKET}/{PREFIX}/manifest.jsonl"
VIDEOS = {"wide": (64, 48, 200), "small": (32, 32, 130)}
PRESETS = {
    "DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17},
    "CV8x16x16": {"kind": "CV", "temporal": 8, "spatial": 16, "window": 17, "codec": "mimi"},
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """The server, the token files on disk (`s3.local`) and the same files in the bucket."""
    local = tmp_path_factory.mktemp("tokens")
    token_files_manifest(local, PRESETS, VIDEOS)
    with S3Server() as server:
        saved = {name: os.environ.get(name) for name in server.env()}
        os.environ.update(server.env())
        client = server.client()
        client.create_bucket(Bucket=BUCKET)
        for path in local.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), BUCKET, f"{PREFIX}/{path.relative_to(local).as_posix()}")
        server.local = local
        yield server
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


@pytest.fixture(autouse=True)
def no_failure_left_over(s3):
    """A test's failures to come that its requests did not take are not the next test's."""
    yield
    s3.fail_next(0, "SlowDown")


@pytest.fixture
def few_retries(monkeypatch):
    """Two tries by s3fs of one by botocore each (5 of 5 by default, with back-off: a minute
    for a request refused every time), in filesystems made afresh: fsspec keeps one per set of
    options, and the test may change the environment (the endpoint)."""
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 2)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    yield monkeypatch
    s3fs.S3FileSystem.clear_instance_cache()


def key_of(s3, path) -> str:
    """The object key of a file of the local copy."""
    return f"{PREFIX}/{path.relative_to(s3.local).as_posix()}"


def assert_same_clip(one: dict, other: dict) -> None:
    assert one.keys() == other.keys()
    for key, value in one.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == other[key].dtype and torch.equal(value, other[key]), key
        else:
            assert value == other[key], key


@pytest.mark.parametrize("preset", list(PRESETS))
def test_clips_from_a_bucket_are_the_clips_on_disk_and_cost_their_own_bytes(s3, preset):
    local = AlignedClips(s3.local / "manifest.jsonl", clip_length=8, preset=preset)
    since = len(s3.requests)
    remote = AlignedClips(MANIFEST, clip_length=8, preset=preset)
    # The manifest is one GET (and s3fs's HEAD for its size, unless it listed the folder
    # before); the token files are checked by size with one listing of their folder, not a
    # request each.
    assert s3.counts(since) - Counter(HEAD=1) == {"GET": 1, "LIST": 1}
    assert len(remote) == len(local) == 7  # wide: 24 latent frames, small 16 (+ a window's first)
    for index in range(len(local)):
        assert_same_clip(remote[index], local[index])

    index = 2  # wide's third clip: its files are open already
    video_index, start, length = remote.clips[index]
    since = len(s3.requests)
    remote[index]
    reads = s3.requests[since:]
    assert [r.method for r in reads] == ["GET", "GET"] and all(r.range for r in reads)
    assert [r.body_bytes for r in reads] == clip_bytes(local.videos[video_index], start, length)


def clip_bytes(video, start: int, length: int) -> list[int]:
    """The bytes of a clip's frames in the visual token file and of its codes in the audio one,
    by safetensors' own reader of the local copy."""
    frames, _, codes, _ = token_slice(video.visual, video.audio, start, length)
    return [frames.nbytes, codes.nbytes]


def test_a_bucket_manifest_whose_objects_changed_or_went_is_refused_naming_them(s3):
    client = s3.client()
    key = key_of(s3, s3.local / "small_DV8x16x16_audio.safetensors")
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    other = key_of(s3, s3.local / "wide_DV8x16x16_visual.safetensors")
    moved = client.get_object(Bucket=BUCKET, Key=other)["Body"].read()
    try:
        client.put_object(Bucket=BUCKET, Key=key, Body=body + b"x")
        client.delete_object(Bucket=BUCKET, Key=other)
        with pytest.raises(AvTokensError) as err:
            AlignedClips(MANIFEST, clip_length=8, preset="DV8x16x16")
        lines = str(err.value).splitlines()
        assert lines[0].startswith("2 token file(s) missing or changed")
        assert lines[1].endswith(f"s3://{BUCKET}/{other}: no such file")
        assert lines[2].endswith(f"s3://{BUCKET}/{key}: {len(body) + 1} bytes, the manifest says {len(body)}")
    finally:
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
        client.put_object(Bucket=BUCKET, Key=other, Body=moved)
    AlignedClips(MANIFEST, clip_length=8, preset="DV8x16x16")
    assert sha256_of(f"s3://{BUCKET}/{key}") == sha256_of(s3.local / "small_DV8x16x16_audio.safetensors")


@pytest.mark.parametrize(
    ("url", "failure", "message"),
    [
        (f"s3://{BUCKET}/{PREFIX}/missing.jsonl", None, "no such object"),
        ("s3://no-such-bucket/results/manifest.jsonl", None, "no such bucket"),
        (MANIFEST, ("AccessDenied", 20), "access denied (check the credentials and the bucket's policy)"),
        (MANIFEST, ("SlowDown", 20), "the store throttled the requests and still refused them after retries"),
    ],
)
def test_a_manifest_that_cannot_be_read_is_named_in_one_line(s3, few_retries, url, failure, message):
    if failure:
        s3.fail_next(failure[1], failure[0])
    with pytest.raises(AvTokensError) as err:
        AlignedClips(url, clip_length=8, preset="DV8x16x16")
    assert str(err.value).startswith(f"{url}: {message}") and "\n" not in str(err.value)


def test_throttled_requests_are_retried_with_back_off(s3):
    s3.fail_next(2, "SlowDown")
    clips = AlignedClips(MANIFEST, clip_length=8, preset="DV8x16x16")
    assert s3.failures_left() == 0 and len(clips) == 7  # refused twice, then read


def test_a_wrong_endpoint_is_named_in_one_line(s3, few_retries):
    few_retries.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(AvTokensError) as err:
        AlignedClips(MANIFEST, clip_length=8)
    assert str(err.value).startswith(f"{MANIFEST}: cannot reach the store (")
    assert "check AWS_ENDPOINT_URL" in str(err.value) and "\n" not in str(err.value)


# Run by torchrun in each rank: clips of the bucket's manifest in batches of this rank's share,
# two worker processes (forked) reading them, an all_reduce every step; rank<r>.json says which
# clips it saw, with a checksum of each.
TRAIN = r"""
import json, os, sys
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from avtokens.data import AlignedClips, ClipBatchSampler, collate_clips

dist.init_process_group("gloo")
clips = AlignedClips(sys.argv[1], clip_length=8, preset="DV8x16x16")
batches = ClipBatchSampler(clips, batch_size=1, seed=0)
seen = []
for batch in DataLoader(clips, batch_sampler=batches, num_workers=2, collate_fn=collate_clips):
    total = torch.ones(1)
    dist.all_reduce(total)
    clip = [batch["video"][0], int(batch["start"][0])]
    seen.append(clip + [int(batch["visual"].sum()), int(batch["audio_codes"].sum())])
with open(f"rank{dist.get_rank()}.json", "w") as f:
    json.dump(seen, f)
dist.destroy_process_group()
"""


def test_torchrun_ranks_and_their_workers_read_only_their_clips_byte_ranges(s3, tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    since = len(s3.requests)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         MANIFEST],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    local = AlignedClips(s3.local / "manifest.jsonl", clip_length=8, preset="DV8x16x16")
    expected = {
        (c["video"], c["start"]): [int(c["visual"].sum()), int(c["audio_codes"].sum())] for c in local
    }
    seen = [(video, start) for rank in ranks for video, start, *_ in rank]
    assert len(ranks[0]) == len(ranks[1]) == 4  # 7 clips: one rank's share padded with a repeat
    assert set(seen) == set(expected)
    assert all(expected[(video, start)] == sums for rank in ranks for video, start, *sums in rank)

    # Every ranged GET of a token file is its header, its frame spans or code ranges, or a
    # clip's frames or codes: those are the clips' bytes, each read once (the repeat that pads
    # a rank's share, twice).
    reads = [r for r in s3.requests[since:] if r.method == "GET" and r.key.endswith(".safetensors")]
    assert all(r.range for r in reads)
    frames = 0
    for r in reads:
        first = int(r.range.removeprefix("bytes=").split("-")[0])
        with TokenFileReader(s3.local / r.key.removeprefix(f"{PREFIX}/")) as reader:
            small = {reader._data_start + reader._entries[name]["data_offsets"][0]
                     for name in ("frame_spans", "code_ranges") if name in reader._entries}  # fmt: skip
            frames += 0 if first < reader._data_start or first in small else r.body_bytes
    by_name = {video.video: video for video in local.videos}
    assert frames == sum(sum(clip_bytes(by_name[video], start, 8)) for video, start in seen)


def test_a_sheet_s_objects_are_checked_with_a_listing_and_a_missing_one_left_out(s3, few_retries):
    import yaml

    from avtokens.run_plan import ConfigError, RunPlan
    from avtokens.workflow import DEFAULT_CONFIG

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    there = f"s3://{BUCKET}/{PREFIX}/manifest.jsonl"  # any object stands for a video here
    rows = [("there", there), ("gone", f"s3://{BUCKET}/{PREFIX}/gone.mp4")]
    since = len(s3.requests)
    plan = RunPlan(config, "videos.tsv", rows)
    assert s3.counts(since) == {"LIST": 1}
    assert plan.videos == {"there": there}
    assert plan.left_out_lines() == [
        f"s3://{BUCKET}/{PREFIX}/gone.mp4: no such object (video gone of videos.tsv); left out"
    ]

    s3.fail_next(2, "AccessDenied")
    with pytest.raises(ConfigError) as err:
        RunPlan(config, "videos.tsv", rows)
    denied = "access denied (check the credentials and the bucket's policy)"
    assert str(err.value) == f"videos.tsv: s3://{BUCKET}/{PREFIX}: {denied}"


def test_a_run_s_files_are_fetched_once_and_put_whole_or_not_at_all(s3, few_retries, tmp_path, monkeypatch):
    """Shard jobs' per-video files in the bucket (avtokens.storage.RunStorage): a local copy is
    fetched when it is not the object's content, and an upload that fails leaves no object."""
    from avtokens.storage import RunStorage

    monkeypatch.chdir(tmp_path)
    storage = RunStorage(f"s3://{BUCKET}/files", ".snakemake/storage/s3/avt-tokens/files")
    path = "results/P/tokens/v_visual_tokens.safetensors"
    local = Path(storage.local(path))
    local.parent.mkdir(parents=True)
    local.write_bytes(b"tokens" * 1000)
    storage.store(path)
    assert storage.identity(path)[1] == 6000
    since = len(s3.requests)
    assert storage.fetch(path) == str(local)  # the copy is the object's content: not fetched again
    assert s3.counts(since) == {}  # nor asked about again: `identity` just did
    local.write_bytes(b"stale")
    storage.fetch(path)
    assert local.read_bytes() == b"tokens" * 1000 and s3.counts(since) == {"HEAD": 1, "GET": 1}

    other = "results/P/tokens/w_visual_tokens.safetensors"
    Path(storage.local(other)).write_bytes(b"more tokens")
    s3.fail_next(10, "InternalError")
    with pytest.raises(AvTokensError) as err:
        storage.store(other)
    assert str(err.value).startswith(f"s3://{BUCKET}/files/{other}: ")
    s3.fail_next(0, "InternalError")
    assert not storage.exists(other)
    with pytest.raises(AvTokensError, match=f"^s3://{BUCKET}/files/{other}: no such object$"):
        storage.fetch(other)
