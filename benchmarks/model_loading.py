"""How much loading a model once per shard of videos saves, on many short clips.

Makes N short clips with ffmpeg, then runs only one model step of the workflow on them
(`--step`: visual_encode, the Cosmos encoder, or audio_encode, DAC) twice: one job per video
(`shard_size: 0`) and shards of B videos per job; what the step needs first (weights, the
extracted audio) is made outside the timing. Prints a table and writes JSON. With the
demo weights (the default) the saving is the per-job start-up (a Python process, importing
torch and dac, loading the weights); with the official checkpoints each load also reads and
moves their weights (~200 MB for Cosmos, ~300 MB for DAC).

    .venv/bin/python benchmarks/model_loading.py --clips 50 --batch 10 [--step audio_encode]
                                                  [--weights official]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from avtokens.media import run_ffmpeg  # noqa: E402
from avtokens.workflow import workflow_command  # noqa: E402


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"snakemake failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--weights", choices=["demo", "official"], default="demo")
    parser.add_argument("--step", choices=["visual_encode", "audio_encode"], default="visual_encode")
    parser.add_argument("--json", type=Path, default=Path("model_loading.json"))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="avtokens-bench-"))
    try:
        sheet = work / "videos.tsv"
        rows = ["name\tpath"]
        for i in range(args.clips):
            clip = work / "clips" / f"clip{i:03d}.mp4"
            clip.parent.mkdir(exist_ok=True)
            run_ffmpeg(["-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-frames:v",
                        str(args.frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(clip)],
                       "making a clip", clip)  # fmt: skip
            rows.append(f"clip{i:03d}\t{clip}")
        sheet.write_text("\n".join(rows) + "\n")
        results = {}
        for per_job in (1, args.batch):
            workdir = work / f"per_job_{per_job}"
            shard_size = 0 if per_job == 1 else per_job
            overlay = {"videos": str(sheet), "weights": args.weights, "shard_size": shard_size,
                       "presets": {"DV8x16x16": {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17}},
                       "run": ["DV8x16x16"]}  # fmt: skip
            names = [f"clip{i:03d}" for i in range(args.clips)]
            shards = [f"shard{k:05d}" for k in range(-(-args.clips // per_job))]
            base = workflow_command(workdir, overlay, cores=args.cores)
            if args.step == "visual_encode":
                needed = ["resources/demo_weights/Cosmos-0.1-Tokenizer-DV8x16x16"]
                per_video = [f"results/DV8x16x16/tokens/{name}_visual_tokens.safetensors" for name in names]
                per_shard = [f"results/shards/DV8x16x16/{shard}/visual_encode.shard.json" for shard in shards]
            else:
                needed = ["resources/demo_weights/dac/weights_44khz_8kbps_0.0.1.pth"]
                if shard_size:
                    needed += [f"results/shards/videos/{shard}/extract_wav.shard.json" for shard in shards]
                else:
                    needed += [f"results/audio/{name}_timeline.json" for name in names]
                per_video = [f"results/audio/{args.weights}/{name}_codes.safetensors" for name in names]
                per_shard = [
                    f"results/shards/audio/{args.weights}/{shard}/audio_encode.shard.json" for shard in shards
                ]
            _run([*base, *(needed if args.weights == "demo" else needed[1:])])  # outside the timing
            start = time.perf_counter()
            _run([*base, *(per_shard if shard_size else per_video)])
            results[per_job] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, many = results[1], results[args.batch]
    print(f"{args.step}: {args.clips} clips of {args.frames} frames (320x180), DV8x16x16, "
          f"{args.weights} weights, {args.cores} cores")  # fmt: skip
    print(f"{'videos per job':>15} {'jobs':>5} {'seconds':>8} {'s/video':>8}")
    for per_job, seconds in results.items():
        jobs = -(-args.clips // per_job)
        print(f"{per_job:>15} {jobs:>5} {seconds:>8.1f} {seconds / args.clips:>8.2f}")
    print(f"speed-up: {one / many:.1f}x")
    record = {"step": args.step, "clips": args.clips, "frames": args.frames, "weights": args.weights,
              "cores": args.cores, "seconds": results, "speedup": one / many}  # fmt: skip
    args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
