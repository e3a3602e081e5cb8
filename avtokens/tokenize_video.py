"""`./tokenize_video`: the original single-video command, run through the workflow.

It writes a one-row sample sheet and a config overlay into a work folder
(<output_tokens_dir>/.tokenize_video/<nickname>/), runs the same Snakemake workflow
there (so a repeated call recomputes only what is stale), then puts the results in the
places the original command used (hard links where the file system allows, else copies, so
long episodes' tokens do not take their disk space twice) and prints the original summary
sentence.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from avtokens.atomic import atomic_output
from avtokens.picture import PIXELS
from avtokens.presets import DEFAULT_WINDOW, ENGINES, make_preset
from avtokens.workflow import DEFAULT_CONFIG, REPO, workflow_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tokenize_video",
        description="Tokenize one video into Cosmos visual tokens and DAC audio tokens, "
        "and reconstruct it from them.",
    )
    p.add_argument("orig_video_dir", type=Path, help="folder of the video (the .wav goes here)")
    p.add_argument("orig_video_file", help="file name of the video inside orig_video_dir")
    p.add_argument("video_nickname", help="names the outputs")
    p.add_argument("is_discrete", choices=["0", "1"], help="1: discrete DV tokens, 0: continuous CV")
    p.add_argument("temporal_factor", type=int, choices=[4, 8])
    p.add_argument("spatial_factor", type=int, choices=[8, 16])
    p.add_argument("output_tokens_dir", type=Path)
    p.add_argument("reconstructed_dir", type=Path)
    p.add_argument("--weights", choices=["official", "demo"], default="official",
                   help="demo: tiny stand-in models, for trying it offline (default: official)")  # fmt: skip
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--cores", default="all", help="CPU cores for snakemake (default: all)")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"frames per tokenizer window, 1 + k*temporal_factor (default: {DEFAULT_WINDOW}; "
                        "NVIDIA's tool uses 17)")  # fmt: skip
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="how the Cosmos network runs (README, Engines; default: auto)")  # fmt: skip
    p.add_argument("--pixels", choices=PIXELS, default="square",
                   help="non-square pixels: resampled to square ones at the display aspect ratio "
                        "(default), or tokenized as stored")  # fmt: skip
    p.add_argument("--no-deinterlace", dest="deinterlace", action="store_false",
                   help="tokenize interlaced sources as stored (default: deinterlace, bwdif)")  # fmt: skip
    return p


def place(src: Path, dest: Path) -> None:
    """`src` at `dest` too, replacing what was there: a hard link (no second copy on disk),
    or a copy where the two places are on different file systems or links are refused."""
    with atomic_output(dest) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    kind = "DV" if args.is_discrete == "1" else "CV"
    name = f"{kind}{args.temporal_factor}x{args.spatial_factor}x{args.spatial_factor}"
    fields = {"kind": kind, "temporal": args.temporal_factor, "spatial": args.spatial_factor,
              "window": args.window, "weights": args.weights, "engine": args.engine}  # fmt: skip
    try:
        make_preset(name, fields)
    except ValueError as err:
        parser.error(str(err))
    if "/" in args.video_nickname or not args.video_nickname.strip():
        parser.error(f"video_nickname {args.video_nickname!r} must be a plain name without '/'")
    source = (args.orig_video_dir / args.orig_video_file).resolve()
    if not source.is_file():
        parser.error(f"video file {source} does not exist")
    if args.cores != "all" and not args.cores.isdigit():
        parser.error(f"--cores must be a number or 'all', not {args.cores!r}")

    workdir = (args.output_tokens_dir / ".tokenize_video" / args.video_nickname).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sheet = workdir / "videos.tsv"
    sheet.write_text(f"name\tpath\n{args.video_nickname}\t{source}\n", encoding="utf-8")
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    overlay = {
        "videos": str(sheet),
        "results": "results",
        "checkpoints": str((REPO / defaults["checkpoints"]).resolve()),
        "weights_lock": str((REPO / defaults["weights_lock"]).resolve()),
        "compile_cache": str((REPO / defaults["compile_cache"]).resolve()),
        "weights": args.weights,
        "device": args.device,
        "picture": {"pixels": args.pixels, "deinterlace": args.deinterlace},
        "presets": {name: fields},
        "run": [name],
    }
    if subprocess.run(workflow_command(workdir, overlay, cores=args.cores)).returncode != 0:
        print(f"tokenize_video: the workflow failed; logs are under {workdir}/results/logs",
              file=sys.stderr)  # fmt: skip
        return 1

    results, nick = workdir / "results", args.video_nickname
    outputs = {
        results / "audio" / f"{nick}.wav": args.orig_video_dir / f"{nick}.wav",
        **{results / name / "tokens" / f"{nick}_{part}_tokens.safetensors":
           args.output_tokens_dir / f"{nick}_{part}_tokens.safetensors" for part in ("visual", "audio")},
        **{results / name / "reconstructed" / f"{nick}_{part}":
           args.reconstructed_dir / f"{nick}_{part}" for part in ("visual.mp4", "combined.mp4")},
        results / "audio" / args.weights / f"{nick}_reconstructed.wav":
            args.reconstructed_dir / f"{nick}_audio.wav",
    }  # fmt: skip
    for src, dest in outputs.items():
        place(src, dest)
        print(dest)
    print(json.loads((results / name / "metrics" / f"{nick}_summary.json").read_text())["description"])
    if args.weights == "demo":
        print("tokenize_video: made with stand-in demo weights; the tokens carry no meaning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
