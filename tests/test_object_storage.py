"""The workflow with its videos and results in object storage, the Snakemake way: a sheet of
`s3://` videos, results under `--default-storage-provider s3 --default-storage-prefix ...`
(Snakemake's S3 storage plugin), in per-video and in shard mode, against a local S3 server
that the tests start (tests/s3_server.py). The objects are a local run's files byte for byte;
a second run does nothing; a replaced video reruns its own jobs only (in shard mode: its
shard's jobs, which redo that video only)."""

import json
import shutil

import pytest
from helpers import make_clip, planned_jobs, run_workflow, stand_in_weights, whole_account
from s3_server import CREDENTIALS, S3Server

pytestmark = pytest.mark.workflow

VIDEOS, RESULTS = "avt-videos", "avt-results"
PREFIX, SHARDED = f"s3://{RESULTS}/run", f"s3://{RESULTS}/sharded"
OVERLAY = {"weights": "demo", "run": ["CV8x16x16"], "videos": "videos.tsv"}
SHARD_MODE = {**OVERLAY, "shard_size": 2, "pack": {"clip_latent_frames": 1}}
CLIPS = {"a": (64, 64, 17), "b": (96, 64, 20)}
USED_WEIGHTS = ("Cosmos-0.1-Tokenizer-CV8x16x16", "dac")  # the folders of its preset's model and codec


def objects(client, bucket: str) -> dict[str, bytes]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    keys = [entry["Key"] for page in pages for entry in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A local run of two clips (in one shard: the same files as a job per video, test_shards),
    and the same clips as objects tokenized into a bucket, a job per video and in shard mode."""
    root = tmp_path_factory.mktemp("object-storage")
    clips = {name: make_clip(root / "clips" / f"{name}.mp4", *size) for name, size in CLIPS.items()}
    local, remote = root / "local", root / "remote"
    for folder, paths in ((local, clips), (remote, {name: f"s3://{VIDEOS}/in/{name}.mp4" for name in clips})):
        folder.mkdir()
        (folder / "videos.tsv").write_text("name\tpath\n" + "".join(f"{n}\t{p}\n" for n, p in paths.items()))
    run_workflow(local, {**OVERLAY, "shard_size": len(clips)})  # the same files as per-video jobs, fewer jobs
    with S3Server() as s3:
        client = s3.client()
        for bucket in (VIDEOS, RESULTS):
            client.create_bucket(Bucket=bucket)
        for name, path in clips.items():
            client.upload_file(str(path), VIDEOS, f"in/{name}.mp4")
        # The stand-in weights as an earlier run left them in the bucket: the same as the local run's.
        for path in stand_in_weights().rglob("*"):
            if path.is_file() and path.relative_to(stand_in_weights()).parts[0] in USED_WEIGHTS:
                for prefix in ("run", "sharded"):
                    key = f"{prefix}/resources/demo_weights/{path.relative_to(stand_in_weights()).as_posix()}"
                    client.upload_file(str(path), RESULTS, key)
        args = ["--default-storage-provider", "s3", "--default-storage-prefix", PREFIX,
                "--storage-s3-endpoint-url", s3.url]  # fmt: skip
        since = len(s3.requests)
        first = run_workflow(remote, OVERLAY, *args, env=CREDENTIALS, built_stand_ins=False)
        requests = s3.requests[since:]
        sharded = root / "sharded"
        shutil.copytree(remote, sharded, ignore=shutil.ignore_patterns(".snakemake"))
        shard_args = [*args[:3], SHARDED, *args[4:]]
        run_workflow(sharded, SHARD_MODE, "all", "pack", *shard_args, env=CREDENTIALS, built_stand_ins=False)
        stored = objects(client, RESULTS)  # as the two runs left them
        yield {"s3": s3, "client": client, "local": local, "remote": remote, "args": args, "first": first,
               "requests": requests, "sharded": sharded, "shard_args": shard_args,
               "stored": stored}  # fmt: skip


@pytest.mark.parametrize("prefix", ["run", "sharded"])
def test_the_objects_of_a_run_from_a_bucket_are_a_local_run_s_files(runs, prefix):
    stored = runs["stored"]
    local = {
        f"{prefix}/{path.relative_to(runs['local']).as_posix()}": path.read_bytes()
        for path in (runs["local"] / "results").rglob("*")
        if path.is_file() and not {"logs", "shards"} & set(path.relative_to(runs["local"]).parts)
    }  # the logs, and the shard jobs' records (the local run's bookkeeping), left out
    assert len(local) > 30  # token files, reconstructions, metrics, report pages, the manifest
    assert {key: stored.get(key) == data for key, data in local.items()} == dict.fromkeys(local, True)
    made = {key for key in stored if key.startswith(f"{prefix}/results/") and "/logs/" not in key}
    # nothing else, nothing left behind; in shard mode the records and journals of its jobs, and
    # the packed dataset
    bookkeeping = (f"{prefix}/results/shards/", f"{prefix}/results/packed/")
    assert {key for key in made - set(local) if not key.startswith(bookkeeping)} == set()
    if prefix == "sharded":  # packed too: the tars, their Energon index, the dataset's index and card
        packed = "sharded/results/packed/CV8x16x16"
        index = json.loads(stored[f"{packed}/dataset.json"])
        tars = [tar["path"] for tars in index["splits"].values() for tar in tars]
        assert tars and all(f"{packed}/{tar}" in stored and f"{packed}/{tar}.idx" in stored for tar in tars)
        assert (
            sum(tar["samples"] for tars in index["splits"].values() for tar in tars) == 3 + 4
        )  # latent frames
        assert f"{packed}/.nv-meta/index.sqlite" in stored and f"{packed}/README.md" in stored
    if prefix == "run":
        assert made == set(local)
        # The run named where its outputs are: in the bucket.
        assert f"Outputs under {PREFIX}/results/" in runs["first"].stdout
        assert f"Report: {PREFIX}/results/report/overview/index.html" in runs["first"].stdout
        # The weights were fetched once for the run, not once per job (2 videos: twice as many jobs).
        weights = [r.key for r in runs["requests"] if r.method == "GET" and "/demo_weights/" in r.key]
        assert sorted(weights) == sorted(
            key for key in stored if key.startswith("run/resources/demo_weights/")
        )


def test_a_second_run_does_nothing_and_a_replaced_video_reruns_only_its_jobs(runs, tmp_path):
    again = run_workflow(runs["remote"], OVERLAY, *runs["args"], env=CREDENTIALS, built_stand_ins=False)
    assert "Nothing to be done" in again.stderr

    replaced = make_clip(tmp_path / "b.mp4", 96, 64, 25)
    runs["client"].upload_file(str(replaced), VIDEOS, "in/b.mp4")
    dry = run_workflow(runs["remote"], OVERLAY, *runs["args"], "-n", env=CREDENTIALS, built_stand_ins=False)
    planned = planned_jobs(dry)
    per_video = {"extract_wav", "audio_encode", "audio_decode", "summarize_audio", "visual_encode",
                 "visual_decode", "align_audio", "summarize", "mux", "compare_video",
                 "plot_frame_psnr"}  # fmt: skip
    assert {rule: planned.get(rule) for rule in per_video} == dict.fromkeys(per_video, 1)
    account = whole_account(dry)
    assert "video=b" in account and "video=a" not in account

    # In shard mode the replaced video's shard reruns, and its jobs redo that video only (its
    # encode is enough to show it: the job keys each video by its objects' sizes and ETags).
    encode = "results/shards/CV8x16x16/shard00000/visual_encode.shard.json"
    args = [encode, *runs["shard_args"]]
    run_workflow(runs["sharded"], SHARD_MODE, *args, env=CREDENTIALS, built_stand_ins=False)
    log = runs["client"].get_object(
        Bucket=RESULTS, Key="sharded/results/logs/shards/CV8x16x16/shard00000.visual_encode.log"
    )
    assert "visual_encode: 2 videos, 1 to do, 1 done before" in log["Body"].read().decode()
