"""Peak memory of every rule on a short and a long clip: the workflow streams, so the long
clip must not need more memory than the short one.

    python benchmarks/memory.py                        # 1 and 20 minutes of 640x480 at 30 fps
    python benchmarks/memory.py --family wan2.1 --preset CV4x8x8 --codec mimi   # the same, Wan2.1 + Mimi
    python benchmarks/memory.py --minutes 0.4 2 --fps 6 --size 320x240 --window 17 \
        --batch-megapixels 1.4 --audio-window-seconds 10             # CI-sized
    python benchmarks/memory.py ... --to-fps 24 --to-size 256x144  # with a preset's targets

Each clip (moving test pattern with a tone) goes through the whole workflow with stand-in
demo weights (built by the first run, copied into the others) and one preset (`--family`,
`--preset`, `--window`, `--codec`, `--codebooks`, checked as the workflow checks a preset);
every job logs its own peak resident memory, which this script collects per rule. It prints a
table, writes JSON, and exits 1 when a rule's peak on the longest clip exceeds `--max-ratio`
times its peak on the shortest.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
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

# Model calls in flight at once: one being read ahead, one on the model, one being written,
# and one more so that the short clip streams past them.
PIPELINE_CALLS = 4
PEAK = re.compile(r"peak memory: (\d+) MiB")


def make_clip(path: Path, minutes: float, size: str, fps: int) -> Path:
    seconds = f"{minutes * 60:g}"
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}:duration={seconds}",
                "-f", "lavfi", "-i", f"sine=f=330:r=48000:duration={seconds}", "-ac", "2",
                "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
                str(path)], "making a benchmark clip", path)  # fmt: skip
    return path


def peaks_per_rule(logs: Path) -> dict[str, int]:
    """{rule: peak MiB} from the job logs (`<video>.<rule>.log` or `<rule>.log`)."""
    peaks = {}
    for log in sorted(logs.rglob("*.log")):
        found = PEAK.findall(log.read_text(errors="replace"))
        if found:
            rule = log.name.removesuffix(".log").rsplit(".", 1)[-1]
            peaks[rule] = max(peaks.get(rule, 0), int(found[-1]))
    return peaks


def default_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def check_the_short_clip_fills_a_model_call(minutes: float, preset, args) -> None:
    """Model calls take as many windows as `batch_megapixels` holds (the codec a window of
    `audio_window_seconds`), the reader runs a call ahead and the writer one behind: a clip
    shorter than that pipeline would need less memory for that alone, and the comparison would
    measure the pipeline filling up."""
    from avtokens.visual import windows_per_call
    from avtokens.windows import round_up

    width, height = (round_up(int(v), preset.spatial) for v in args.size.split("x"))
    per_call = windows_per_call(args.batch_megapixels, preset.window, height, width)
    windows = -(-round(minutes * 60 * args.fps) // preset.window)
    if windows < PIPELINE_CALLS * per_call:
        window = preset.window
        sys.exit(f"the {minutes:g}-minute clip has {windows} windows of {window} frames, fewer than "
                 f"{PIPELINE_CALLS} model calls take at {args.size} ({per_call} each); lengthen the "
                 "short clip")  # fmt: skip
    if minutes * 60 < 2 * args.audio_window_seconds:  # the audio's overlap is measured between windows
        sys.exit(f"the {minutes:g}-minute clip holds fewer than two audio windows of "
                 f"{args.audio_window_seconds:g} s; lengthen the short clip")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 20], help="clip lengths")
    parser.add_argument("--size", default="640x480")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=VISUAL_TOKENIZERS,
                        help="the tokenizer family (avtokens.visual_tokenizers)")  # fmt: skip
    parser.add_argument("--preset", default="DV8x16x16",
                        help="kind and factors of one of the family's models")  # fmt: skip
    parser.add_argument(
        "--window",
        type=int,
        help="frames per window (default: the family's); shorter windows let a shorter clip stream many",
    )
    parser.add_argument("--codec", default=DEFAULT_CODEC, choices=AUDIO_CODECS,
                        help="the audio codec (avtokens.audio_codecs)")  # fmt: skip
    parser.add_argument("--codebooks", type=int, help="how many of the codec's codebooks (default: its own)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--batch-megapixels",
        type=float,
        help="frames x pixels per model call "
        "(default: config/config.yaml's); smaller lets a shorter clip fill a call",
    )
    parser.add_argument(
        "--audio-window-seconds",
        type=float,
        help="audio coded per codec call "
        "(default: config/config.yaml's); smaller lets a shorter clip fill a call",
    )
    parser.add_argument(
        "--to-fps", help='the preset\'s target frame rate (README, "Training clips of one shape")'
    )
    parser.add_argument("--to-size", help="the preset's target size, WIDTHxHEIGHT")
    parser.add_argument("--fit", choices=["crop", "pad"], help="to --to-size (default: crop)")
    parser.add_argument("--max-ratio", type=float, default=1.2)
    parser.add_argument("--json", type=Path, default=Path("memory.json"))
    args = parser.parse_args()
    minutes = sorted(args.minutes)
    for setting in ("batch_megapixels", "audio_window_seconds"):
        if getattr(args, setting) is None:
            setattr(args, setting, default_config()[setting])
    try:
        fields = preset_entry(args.preset, family=args.family, window=args.window, codec=args.codec,
                              codebooks=args.codebooks, fps=args.to_fps, size=args.to_size,
                              fit=args.fit)  # fmt: skip
        preset, audio_setting = make_preset(args.preset, fields), make_audio_setting(args.preset, fields)
    except ValueError as err:
        parser.error(str(err))
    check_the_short_clip_fills_a_model_call(minutes[0], preset, args)

    work = Path(tempfile.mkdtemp(prefix="avtokens-memory-"))
    runs = {}
    try:
        for length in minutes:
            clip = make_clip(work / f"clip_{length:g}min.mp4", length, args.size, args.fps)
            sheet = work / f"videos_{length:g}.tsv"
            sheet.write_text(f"name\tpath\nclip\t{clip}\n")
            workdir = work / f"run_{length:g}min"
            overlay = {"videos": str(sheet), "weights": "demo", "run": [args.preset],
                       "presets": {args.preset: fields},
                       "batch_megapixels": args.batch_megapixels,
                       "audio_window_seconds": args.audio_window_seconds}  # fmt: skip
            if runs:  # the stand-in weights the first run built (their jobs' logs are not compared)
                shutil.copytree(work / f"run_{minutes[0]:g}min" / DEMO_WEIGHTS, workdir / DEMO_WEIGHTS)
            start = time.perf_counter()
            proc = subprocess.run(workflow_command(workdir, overlay, cores=args.cores), capture_output=True,
                                  text=True)  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"the workflow failed on the {length:g}-minute clip:\n{proc.stderr[-4000:]}")
            runs[length] = {"seconds": time.perf_counter() - start,
                            "peak_mib": peaks_per_rule(workdir / "results" / "logs")}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)

    short, long = runs[minutes[0]]["peak_mib"], runs[minutes[-1]]["peak_mib"]
    ratios = {rule: long[rule] / short[rule] for rule in short}
    targets = "".join(f", to {v}" for v in (args.to_size, args.to_fps and f"{args.to_fps} fps") if v)
    print(f"Peak memory per job (MiB), {args.size} at {args.fps} fps{targets}, {preset.tokenizer.label} "
          f"{args.preset} window {preset.window}, {audio_setting.audio_codec.label} "
          f"{audio_setting.codebooks} codebooks, demo weights, {args.cores} cores, "
          f"{platform.node()}")  # fmt: skip
    print(f"{'rule':<18}" + "".join(f"{f'{m:g} min':>10}" for m in minutes) + f"{'ratio':>8}")
    for rule in sorted(short):
        cells = "".join(f"{runs[m]['peak_mib'][rule]:>10}" for m in minutes)
        print(f"{rule:<18}{cells}{ratios[rule]:>8.2f}")
    print(f"{'wall time (s)':<18}" + "".join(f"{runs[m]['seconds']:>10.0f}" for m in minutes))
    worst = max(ratios, key=ratios.get)
    flat = ratios[worst] <= args.max_ratio
    print(f"largest ratio {ratios[worst]:.2f} ({worst}): {'flat' if flat else 'NOT flat'} "
          f"(limit {args.max_ratio})")  # fmt: skip
    record = {"size": args.size, "fps": args.fps, "to_size": args.to_size, "to_fps": args.to_fps,
              "family": preset.family, "preset": args.preset,
              "codec": audio_setting.codec, "codebooks": audio_setting.codebooks, "cores": args.cores,
              "window": preset.window, "batch_megapixels": args.batch_megapixels,
              "audio_window_seconds": args.audio_window_seconds,
              "minutes": minutes, "runs": {f"{m:g}": runs[m] for m in minutes}, "ratios": ratios,
              "max_ratio": args.max_ratio, "flat": flat}  # fmt: skip
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
