"""Shard mode at scale: how long Snakemake takes to plan, and what a short clip costs.

plan: a sheet of N synthetic rows (links to one short clip, so every row is a real,
readable file), two presets, and a dry run: the seconds to build the DAG and the jobs it
plans, in shard mode and (optionally, for comparison) one job per video.

    .venv/bin/python benchmarks/shards.py plan --rows 10000 100000 [--per-video 2000]

throughput: N one-second clips end to end in shard mode, against one video as long as all
of them together (the same frames and audio through the same models, per-video mode). What
the clips take beyond that one video, per clip, is the per-clip overhead: process starts and
model loads per shard, probing, opening and finishing each file, the per-video plots.

    .venv/bin/python benchmarks/shards.py throughput --clips 1000 --shard-size 500 [--sampled-reports 2]

--sampled-reports N also runs the clips with `report_videos_per_shard: N` (the comparison
videos and PSNR plots for a sample of each shard only), the setting meant for datasets.

outputs: the time to write one small output (atomic_output, as every step writes its files)
into a folder that already holds N files, as a dataset's folders do once N clips are done.

    .venv/bin/python benchmarks/shards.py outputs --files 0 10000 100000

Stand-in (demo) weights unless --weights official; prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from avtokens.atomic import atomic_output  # noqa: E402
from avtokens.media import run_ffmpeg  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset  # noqa: E402
from avtokens.run_plan import DEMO_WEIGHTS  # noqa: E402
from avtokens.workflow import workflow_command  # noqa: E402

PRESETS = {
    "DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17},
    "CV8x8x8": {"kind": "CV", "temporal": 8, "spatial": 8, "window": 17},
}


def make_clip(path: Path, seconds: float, width: int = 160, height: int = 96) -> Path:
    picture = f"testsrc2=size={width}x{height}:rate=25:duration={seconds}"
    tone = f"sine=f=330:r=48000:duration={seconds}"
    args = ["-y", "-f", "lavfi", "-i", picture, "-f", "lavfi", "-i", tone, "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)]  # fmt: skip
    run_ffmpeg(args, "making a clip", path)
    return path


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of Snakemake and every process it waited
    for: steadier than wall time on a shared machine) and Snakemake's account of one command:
    what it printed, and the complete log it names at the end (the terminal of a run shows
    progress, the log the job blocks and statistics, which a dry run prints)."""
    start, cpu_start = time.perf_counter(), children_cpu_seconds()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - start, children_cpu_seconds() - cpu_start
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    output = proc.stdout + proc.stderr
    logs = re.findall(r"^Complete log\(s\): (.+)$", output, re.MULTILINE)
    return seconds, cpu_seconds, output + "".join(Path(log).read_text() for log in logs)


def job_count(output: str) -> int:
    match = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)
    return int(match.group(1)) if match else 0


def rule_seconds(output: str) -> dict[str, float]:
    """Seconds of each rule's jobs, summed, from Snakemake's own lines: a job starts at the
    time stamp before its block ("rule <name>:" and "jobid: N", or "Job N: <message>" for a rule
    with a message), and ends at the one before "Finished jobid: N (Rule: <name>)" (whole
    seconds: the jobs here last many)."""
    starts: dict[str, float] = {}
    seconds: dict[str, float] = {}
    stamp, in_block = 0.0, False
    for line in map(str.strip, output.splitlines()):
        if match := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            stamp = time.mktime(time.strptime(match.group(1), "%a %b %d %H:%M:%S %Y"))
        elif re.fullmatch(r"(?:local)?rule \w+:", line):
            in_block = True
        elif (match := re.fullmatch(r"jobid: (\d+)", line)) and in_block:
            starts[match.group(1)], in_block = stamp, False
        elif match := re.match(r"Job (\d+): ", line):
            starts[match.group(1)] = stamp
        elif match := re.match(r"Finished jobid: (\d+) \(Rule: (\w+)\)", line):
            name = match.group(2)
            seconds[name] = seconds.get(name, 0.0) + stamp - starts.pop(match.group(1))
    return seconds


def plan(args, work: Path) -> dict:
    clip = make_clip(work / "clip.mp4", 1)
    links = work / "links"
    links.mkdir()
    rows = {}
    for n in sorted(set(args.rows) | ({args.per_video} if args.per_video else set())):
        sheet = work / f"videos_{n}.tsv"
        with open(sheet, "w") as out:
            out.write("name\tpath\n")
            for i in range(n):
                link = links / f"clip{i:07d}.mp4"
                if not link.exists():
                    link.symlink_to(clip)
                out.write(f"clip{i:07d}\t{link}\n")
        rows[n] = sheet
    figures = []
    cases = [(n, args.shard_size) for n in args.rows] + ([(args.per_video, 0)] if args.per_video else [])
    for n, shard_size in cases:
        overlay = {"videos": str(rows[n]), "weights": args.weights, "presets": PRESETS, "run": list(PRESETS),
                   "shard_size": shard_size}  # fmt: skip
        seconds, _, output = run(workflow_command(work / f"w{n}_{shard_size}", overlay, "--dry-run", cores=2))
        figures.append({"rows": n, "shard_size": shard_size, "jobs": job_count(output), "seconds": seconds})
        print(
            f"{n:>8} rows  shard_size {shard_size:>5}  {job_count(output):>8} jobs  {seconds:>7.1f} s",
            flush=True,
        )
    return {"presets": list(PRESETS), "plans": figures}


def throughput(args, work: Path) -> dict:
    clips = work / "clips"
    clips.mkdir()
    sheet = work / "clips.tsv"
    with open(sheet, "w") as out:
        out.write("name\tpath\n")
        for i in range(args.clips):
            out.write(f"clip{i:05d}\t{make_clip(clips / f'clip{i:05d}.mp4', args.seconds)}\n")
    long_sheet = work / "long.tsv"
    long_sheet.write_text(f"name\tpath\nlong\t{make_clip(work / 'long.mp4', args.clips * args.seconds)}\n")
    preset = {"DV8x16x16": PRESETS["DV8x16x16"]}
    base = {"weights": args.weights, "presets": preset, "run": list(preset)}
    # The preset's stand-in folders, as the run plan names them.
    visual, codec = (make_preset("DV8x16x16", PRESETS["DV8x16x16"]),
                     make_audio_setting("DV8x16x16", PRESETS["DV8x16x16"]).audio_codec)  # fmt: skip
    stand_in_folders = [f"{DEMO_WEIGHTS}/{visual.model}", f"{DEMO_WEIGHTS}/{codec.folder}"]
    clip_runs = {"clips": {**base, "videos": str(sheet), "shard_size": args.shard_size}}
    if args.sampled_reports is not None:
        sampled = {**clip_runs["clips"], "report_videos_per_shard": args.sampled_reports}
        clip_runs["clips_sampled_reports"] = sampled
    figures, stand_ins = {}, None
    for name, overlay in [*clip_runs.items(), ("one_video", {**base, "videos": str(long_sheet)})]:
        workdir = work / name
        if args.weights == "demo":  # the stand-in weights are made outside the timing, once
            if stand_ins is None:
                run(workflow_command(workdir, overlay, *stand_in_folders, cores=args.cores))
                stand_ins = workdir / "resources" / "demo_weights"
            else:
                shutil.copytree(stand_ins, workdir / "resources" / "demo_weights")
        seconds, cpu_seconds, output = run(workflow_command(workdir, overlay, cores=args.cores))
        stages = rule_seconds(output)
        figures[name] = {"seconds": seconds, "cpu_seconds": cpu_seconds, "jobs": job_count(output),
                         "stages": stages}  # fmt: skip
        print(f"{name:>10}: {job_count(output):>5} jobs, {seconds:.1f} s, {cpu_seconds:.1f} CPU s",
              flush=True)  # fmt: skip
    one_video = figures["one_video"]
    overheads, cpu_overheads = {}, {}
    for name in clip_runs:
        overheads[name] = (figures[name]["seconds"] - one_video["seconds"]) / args.clips
        cpu_overheads[name] = (figures[name]["cpu_seconds"] - one_video["cpu_seconds"]) / args.clips
        print(f"\n{name}\n{'rule (job seconds)':>22} {'clips':>8} {'one video':>12} {'more per clip s':>16}")
        for rule, seconds in sorted(figures[name]["stages"].items(), key=lambda kv: -kv[1]):
            alone = one_video["stages"].get(rule.removeprefix("shard_"), 0.0)
            print(f"{rule:>22} {seconds:>8.0f} {alone:>12.0f} {(seconds - alone) / args.clips:>16.3f}")
        print(f"{args.clips} clips of {args.seconds:g} s in shards of {args.shard_size} ({name}): "
              f"{figures[name]['seconds'] / args.clips:.3f} s a clip, "
              f"{overheads[name]:.3f} s a clip more than the same frames as one video "
              f"({cpu_overheads[name]:.3f} CPU s a clip more)")  # fmt: skip
    return {"clips": args.clips, "seconds_per_clip": args.seconds, "shard_size": args.shard_size,
            "sampled_reports": args.sampled_reports, "runs": figures,
            "overhead_per_clip_s": overheads, "cpu_overhead_per_clip_s": cpu_overheads}  # fmt: skip


def outputs(args, work: Path) -> dict:
    figures = []
    for n in sorted(args.files):
        folder = work / f"files_{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"clip{i:07d}_visual_tokens.safetensors").touch()
        with atomic_output(folder / "warm_up.safetensors") as tmp:  # first-call costs out of the timing
            tmp.write_bytes(b"tokens")
        start = time.perf_counter()
        for i in range(args.writes):
            with atomic_output(folder / f"new{i:05d}_visual_tokens.safetensors") as tmp:
                tmp.write_bytes(b"tokens")
        per_output = (time.perf_counter() - start) / args.writes
        figures.append({"files_in_folder": n, "seconds_per_output": per_output})
        print(f"{n:>9} files in the folder: {per_output * 1e3:8.3f} ms an output", flush=True)
    return {"writes": args.writes, "outputs": figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", choices=["demo", "official"], default="demo")
    parser.add_argument("--json", type=Path, default=Path("shards.json"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--rows", type=int, nargs="+", default=[10000, 100000])
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--per-video", type=int, default=0, help="also plan this many rows one job per video")
    t = sub.add_parser("throughput")
    t.add_argument("--clips", type=int, default=1000)
    t.add_argument("--seconds", type=float, default=1.0)
    t.add_argument("--shard-size", type=int, default=500)
    t.add_argument("--cores", type=int, default=2)
    t.add_argument("--sampled-reports", type=int, default=None,
                   help="also run the clips with report_videos_per_shard set to this")  # fmt: skip
    o = sub.add_parser("outputs")
    o.add_argument("--files", type=int, nargs="+", default=[0, 10000, 100000])
    o.add_argument("--writes", type=int, default=200)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="avtokens-shards-"))
    try:
        record = {"plan": plan, "throughput": throughput, "outputs": outputs}[args.command](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps({"command": args.command, "weights": args.weights, **record}, indent=2))


if __name__ == "__main__":
    main()
