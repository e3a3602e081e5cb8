"""How much loading a model once per shard of videos saves, on many short clips.

Makes N short clips with ffmpeg, then runs only one model step of the workflow on them
(`--step`: visual_encode, the preset's encoder, or audio_encode, its codec) twice: one job per
video (`shard_size: 0`) and shards of B videos per job; what the step needs first (weights, the
extracted audio) is made outside the timing. The preset: `--family`, `--preset` (kind and
factors), `--codec`, `--codebooks`, with 17-frame windows. Prints a table and writes JSON. With
the demo weights (the default) the saving is the per-job start-up (a Python process, importing
torch and the model library, loading the weights); with the official checkpoints each load also
reads and moves their weights (~200 MB for a Cosmos encoder, ~300 MB for DAC).

    .venv/bin/python benchmarks/model_loading.py --clips 50 --batch 10 [--step audio_encode]
                                                  [--weights official] [--family wan2.1 --preset CV4x8x8]
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
from avtokens.audio_codecs import AUDIO_CODECS, DEFAULT_CODEC  # noqa: E402
from avtokens.media import run_ffmpeg  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset, preset_entry  # noqa: E402
from avtokens.run_plan import DEMO_WEIGHTS  # noqa: E402
from avtokens.visual_tokenizers import DEFAULT_FAMILY, VISUAL_TOKENIZERS  # noqa: E402
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
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=VISUAL_TOKENIZERS)
    parser.add_argument("--preset", default="DV8x16x16", help="kind and factors of a model of the family")
    parser.add_argument("--codec", default=DEFAULT_CODEC, choices=AUDIO_CODECS)
    parser.add_argument("--codebooks", type=int, help="how many of the codec's codebooks (default: its own)")
    parser.add_argument("--json", type=Path, default=Path("model_loading.json"))
    args = parser.parse_args()
    name = args.preset
    try:
        fields = preset_entry(name, family=args.family, window=17, codec=args.codec, codebooks=args.codebooks)
        preset, audio_setting = make_preset(name, fields, args.weights), make_audio_setting(name, fields)
    except ValueError as err:
        parser.error(str(err))
    codec, setting, weights = audio_setting.audio_codec, audio_setting.name, args.weights

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
            overlay = {"videos": str(sheet), "weights": weights, "shard_size": shard_size,
                       "presets": {name: fields}, "run": [name]}  # fmt: skip
            videos = [f"clip{i:03d}" for i in range(args.clips)]
            shards = [f"shard{k:05d}" for k in range(-(-args.clips // per_job))]
            base = workflow_command(workdir, overlay, cores=args.cores)
            # Paths as rules/common.smk makes them; the stand-in folders as the run plan names them.
            if args.step == "visual_encode":
                needed = [f"{DEMO_WEIGHTS}/{preset.model}"] if weights == "demo" else []
                per_video = [f"results/{name}/tokens/{video}_visual_tokens.safetensors" for video in videos]
                per_shard = [f"results/shards/{name}/{shard}/visual_encode.shard.json" for shard in shards]
            else:
                needed = [f"{DEMO_WEIGHTS}/{codec.folder}"] if weights == "demo" else []
                audio = f"audio/{codec.sample_rate}hz"
                if shard_size:
                    needed += [f"results/shards/{audio}/{shard}/extract_wav.shard.json" for shard in shards]
                else:
                    needed += [f"results/{audio}/{video}_timeline.json" for video in videos]
                codes = f"audio/{setting}/{weights}"
                per_video = [f"results/{codes}/{video}_codes.safetensors" for video in videos]
                per_shard = [f"results/shards/{codes}/{shard}/audio_encode.shard.json" for shard in shards]
            _run([*base, *needed])  # outside the timing
            start = time.perf_counter()
            _run([*base, *(per_shard if shard_size else per_video)])
            results[per_job] = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    one, many = results[1], results[args.batch]
    model = {"visual_encode": f"{preset.tokenizer.label} {name}",
             "audio_encode": f"{codec.label}, {audio_setting.codebooks} codebooks"}[args.step]  # fmt: skip
    print(f"{args.step}: {args.clips} clips of {args.frames} frames (320x180), {model}, "
          f"{args.weights} weights, {args.cores} cores")  # fmt: skip
    print(f"{'videos per job':>15} {'jobs':>5} {'seconds':>8} {'s/video':>8}")
    for per_job, seconds in results.items():
        jobs = -(-args.clips // per_job)
        print(f"{per_job:>15} {jobs:>5} {seconds:>8.1f} {seconds / args.clips:>8.2f}")
    print(f"speed-up: {one / many:.1f}x")
    record = {"step": args.step, "family": preset.family, "preset": name, "codec": audio_setting.codec,
              "codebooks": audio_setting.codebooks, "clips": args.clips, "frames": args.frames,
              "weights": args.weights, "cores": args.cores, "seconds": results,
              "speedup": one / many}  # fmt: skip
    args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
