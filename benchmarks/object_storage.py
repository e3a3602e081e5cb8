"""What a run in object storage costs in S3 requests, against a local S3 server that counts them
server side (moto: tests/s3_server.py, a test dependency): a sheet of N `s3://` videos
tokenized into a bucket in shard mode with Snakemake's S3 storage plugin
(`--default-storage-provider s3`), then the same run again (nothing to do), and a dry run of a
larger sheet (the planning only).

    .venv/bin/python benchmarks/object_storage.py --rows 100 1000 --plan-rows 10000
    .venv/bin/python benchmarks/object_storage.py --rows 4 --shard-size 2 --plan-rows 8   # CI-sized
    .venv/bin/python benchmarks/object_storage.py --rows --plan-rows --trivial-jobs 100 200

`--trivial-jobs N`: N jobs that each copy one object to another through the plugin, with
Snakemake's scheduler as it is and as the workflow mends it (avtokens/scheduling.py), which
shows where the requests that grew with the square of the jobs came from.

Every row is the same tiny clip (0.4 s, 64x64) under its own key; one preset (DV8x16x16 with
DAC), stand-in weights (made before the timing, put in the bucket as an earlier run leaves
them), the comparison videos and PSNR plots left out (`report_videos_per_shard: 0`, as a
dataset would run), `--cores 2`. Requests per video should not grow with N: each video costs
its shard jobs' HEAD, GET and PUT per file, and Snakemake tracks one record per shard job. The
requests are counted by client too (told by User-Agent): Snakemake's S3 plugin (boto3) and the
workflow's own code in the jobs (s3fs). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the counting S3 server
from s3_server import CREDENTIALS, S3Server  # noqa: E402

from avtokens.media import run_ffmpeg  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset  # noqa: E402
from avtokens.run_plan import DEMO_WEIGHTS  # noqa: E402
from avtokens.workflow import workflow_command  # noqa: E402

PRESET = {"DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}}
VIDEOS, RESULTS = "avt-bench-videos", "avt-bench-results"
JOBS = "aiobotocore/"  # s3fs's User-Agent: the requests of the workflow's own code


def make_clip(path: Path) -> Path:
    args = ["-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=0.4", "-f", "lavfi", "-i",
            "sine=f=330:r=48000:duration=0.4", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(path)]  # fmt: skip
    run_ffmpeg(args, "making a clip", path)
    return path


def snakemake(workdir: Path, overlay: dict, *extra: str) -> tuple[float, float, str]:
    """Wall and CPU seconds (Snakemake and every process it waited for) of one run, and what it printed."""
    usage = os.times()
    start, cpu = time.perf_counter(), usage.children_user + usage.children_system
    proc = subprocess.run(workflow_command(workdir, overlay, *extra, cores=2), capture_output=True, text=True,
                          env={**os.environ, **CREDENTIALS})  # fmt: skip
    usage = os.times()
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, usage.children_user + usage.children_system - cpu, proc.stderr


TRIVIAL_SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({n}))
rule copy:
    input: "in/{{i}}.txt"
    output: "out/{{i}}.txt"
    shell: "cp {{input}} {{output}}"
"""
MENDED = f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom avtokens import scheduling\n"
MENDED += "scheduling.install()"


def trivial_jobs(s3: S3Server, work: Path, n: int, mended: bool) -> dict:
    """The requests of n one-input jobs in a bucket, with the scheduler mended or as it is."""
    name = f"trivial{n}-{'mended' if mended else 'as-is'}"
    workdir, client = work / name, s3.client()
    workdir.mkdir()
    (workdir / "Snakefile").write_text((MENDED if mended else "") + "\n" + TRIVIAL_SNAKEFILE.format(n=n))
    client.create_bucket(Bucket=name)
    for i in range(n):
        client.put_object(Bucket=name, Key=f"p/in/{i}.txt", Body=b"x")
    since, start = len(s3.requests), time.perf_counter()
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--default-storage-provider", "s3",
               "--default-storage-prefix", f"s3://{name}/p", "--storage-s3-endpoint-url", s3.url]  # fmt: skip
    env = {**os.environ, **CREDENTIALS}
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")
    counts, seconds = dict(s3.counts(since)), time.perf_counter() - start
    total = sum(counts.values())
    print(f"{n:>7} trivial jobs, scheduler {'mended' if mended else 'as is'}: {seconds:7.1f} s, {total:>7} "
          f"requests ({total / n:.1f} a job) {counts}", flush=True)  # fmt: skip
    return {"jobs": n, "mended": mended, "seconds": seconds, "requests": counts}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--plan-rows", type=int, nargs="*", default=[10000])
    parser.add_argument("--trivial-jobs", type=int, nargs="*", default=[])
    parser.add_argument("--json", type=Path, default=Path("object_storage.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="avtokens-object-storage-"))
    figures: dict = {"shard_size": args.shard_size, "runs": [], "plans": [], "trivial": []}
    try:
        if args.trivial_jobs:
            with S3Server() as s3:
                for n in args.trivial_jobs:
                    figures["trivial"] += [trivial_jobs(s3, work, n, mended) for mended in (False, True)]
        if args.rows or args.plan_rows:
            tokenize_runs(args, work, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps(figures, indent=2))


def tokenize_runs(args: argparse.Namespace, work: Path, figures: dict) -> None:
    """Shard-mode runs of `args.rows` videos (and a rerun each), dry runs of `args.plan_rows`."""
    clip = make_clip(work / "clip.mp4")
    base = {"weights": "demo", "presets": PRESET, "run": list(PRESET), "shard_size": args.shard_size,
            "report_videos_per_shard": 0}  # fmt: skip
    # The preset's stand-in weights, made here outside the timing.
    visual = make_preset("DV8x16x16", PRESET["DV8x16x16"])
    codec = make_audio_setting("DV8x16x16", PRESET["DV8x16x16"]).audio_codec
    folders = [f"{DEMO_WEIGHTS}/{visual.model}", f"{DEMO_WEIGHTS}/{codec.folder}"]
    (work / "weights").mkdir()
    (work / "weights" / "videos.tsv").write_text(f"name\tpath\nclip\t{clip}\n")
    snakemake(work / "weights", {**base, "videos": "videos.tsv"}, *folders)
    with S3Server() as s3:
        client = s3.client()
        for bucket in (VIDEOS, RESULTS):
            client.create_bucket(Bucket=bucket)
        for n in sorted({*args.rows, *args.plan_rows}):
            for i in range(n):  # the keys the larger sheets add
                key = f"in/clip{i:07d}.mp4"
                if i >= max((m for m in (*args.rows, *args.plan_rows) if m < n), default=0):
                    client.upload_file(str(clip), VIDEOS, key)
        for n in args.rows + [f"plan{n}" for n in args.plan_rows]:
            rows = int(str(n).removeprefix("plan"))
            workdir = work / f"w{n}"
            workdir.mkdir()
            (workdir / "videos.tsv").write_text(
                "name\tpath\n"
                + "".join(f"clip{i:07d}\ts3://{VIDEOS}/in/clip{i:07d}.mp4\n" for i in range(rows))
            )
            prefix = f"run{n}"
            for path in (work / "weights" / "resources").rglob("*"):
                if path.is_file():
                    key = f"{prefix}/{path.relative_to(work / 'weights').as_posix()}"
                    client.upload_file(str(path), RESULTS, key)
            storage = ["--default-storage-provider", "s3", "--default-storage-prefix", f"s3://{RESULTS}/{prefix}",
                       "--storage-s3-endpoint-url", s3.url]  # fmt: skip
            overlay = {**base, "videos": "videos.tsv"}
            if isinstance(n, str):  # the planning only
                since = len(s3.requests)
                seconds, cpu, _ = snakemake(workdir, overlay, *storage, "--dry-run")
                counts = dict(s3.counts(since))
                figures["plans"].append({"rows": rows, "seconds": seconds, "requests": counts,
                                         "by_jobs": dict(s3.counts(since, JOBS))})  # fmt: skip
                print(f"{rows:>7} rows, dry run: {seconds:7.1f} s, {sum(counts.values()):>7} requests "
                      f"({sum(counts.values()) / rows:.2f} a video) {counts}", flush=True)  # fmt: skip
                continue
            for what in ("run", "rerun"):
                since = len(s3.requests)
                seconds, cpu, _ = snakemake(workdir, overlay, *storage)
                counts, by_jobs = dict(s3.counts(since)), dict(s3.counts(since, JOBS))
                total, jobs = sum(counts.values()), sum(by_jobs.values())
                run = {"rows": rows, "what": what, "seconds": seconds, "cpu_seconds": cpu}
                figures["runs"].append({**run, "requests": counts, "by_jobs": by_jobs})
                print(f"{rows:>7} rows, {what:>5}: {seconds:7.1f} s ({seconds / rows:.3f} s a video, "
                      f"{cpu:.0f} CPU s), {total:>7} requests ({total / rows:.2f} a video; "
                      f"{(total - jobs) / rows:.2f} Snakemake's, {jobs / rows:.2f} the jobs') {counts}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
