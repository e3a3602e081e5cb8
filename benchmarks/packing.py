"""How fast `snakemake pack` writes: packing a preset's token files into WebDataset tars
(`avtokens.packing.pack_clips`: clips cut by `AlignedClips`, shuffled across videos) against a
plain copy of the same bytes on the same disk, and the peak memory of a pack job.

    .venv/bin/python benchmarks/packing.py                                  # 8 videos of 5 minutes, 960x720
    .venv/bin/python benchmarks/packing.py --videos 3 --minutes 0.2 --size 320x240 --shard-mb 1   # CI-sized

Writes each video's token files (random tokens in the real layout: `data_loading.write_episode`)
and a manifest in a temporary folder (or `--dir`, to measure another disk), then, in a child
process each, packs them (its peak memory is the job's: `ru_maxrss`) and copies the tars it
wrote, file by file, to a new folder of the same disk. The token files have just been written,
so both read from the page cache; both write through it, and each ends with an fsync of what
it wrote, so the figures include getting the bytes to the disk. Goal: packing at least half
the copy's MB/s, and memory bounded by one clip (a tar is streamed, not held). Prints a table
and writes JSON.
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
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def _synced(paths) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def imports() -> None:
    """The child that only imports what packing imports: the floor of a pack job's memory."""
    import avtokens.packing  # noqa: F401

    print(json.dumps({}))


def pack(manifest: str, preset: str, dest: str, clip: str, shard_bytes: str) -> None:
    """The child: pack every clip, fsync the tars, print seconds, bytes, tars and clips."""
    from avtokens.data import AlignedClips
    from avtokens.packing import pack_clips

    started = time.perf_counter()
    clips = AlignedClips(manifest, int(clip), preset=preset)
    tars = pack_clips(clips, range(len(clips)), dest, "train", shard_bytes=int(shard_bytes), seed=0)
    packed = time.perf_counter()
    _synced(path for path, _ in tars)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sync_seconds": seconds - (packed - started),
                "tars": len(tars),
                "bytes": sum(p.stat().st_size for p, _ in tars),
                "clips": len(clips),
            }
        )
    )


def copy(source: str, dest: str) -> None:
    """The child: copy every tar of `source` into `dest`, fsync them, print seconds and bytes."""
    started = time.perf_counter()
    Path(dest).mkdir(parents=True)
    copies = [shutil.copyfile(path, Path(dest) / path.name) for path in sorted(Path(source).glob("*.tar"))]
    copied = time.perf_counter()
    _synced(copies)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                "sync_seconds": seconds - (copied - started),
                "bytes": sum(Path(p).stat().st_size for p in copies),
            }
        )
    )


def child(*args: str) -> tuple[dict, float]:
    """Run this script's `--child args` in a process of its own: its printed figures and its
    peak memory (MiB, from /usr/bin/time's account of it: RUSAGE_CHILDREN keeps the largest
    child's so far, not this one's)."""
    command = [sys.executable, __file__, "--child", *args]
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *command], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.splitlines()[-1]), int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0, help="of each video, at 25 fps")
    parser.add_argument("--size", default="960x720")
    parser.add_argument("--preset", default="CV8x16x16", help="a Cosmos preset name (window 121)")
    parser.add_argument("--clip", type=int, default=16, help="latent frames a clip")
    parser.add_argument("--shard-mb", type=float, default=256.0)
    parser.add_argument("--dir", help="where to write (default: a temporary folder)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        {"imports": imports, "pack": pack, "copy": copy}[args.child[0]](*args.child[1:])
        return

    from data_loading import write_episode

    from avtokens.presets import make_audio_setting, make_preset, preset_entry

    width, height = map(int, args.size.split("x"))
    entry = preset_entry(args.preset, window=121)
    preset, audio = make_preset(args.preset, entry), make_audio_setting(args.preset, entry)
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        root = Path(scratch)
        rows = [
            write_episode(
                root, preset, audio, round(args.minutes * 60 * 25), Fraction(25), width, height, f"video{i}"
            )
            for i in range(args.videos)
        ]
        (root / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        token_bytes = sum(
            (root / row[part]).stat().st_size for row in rows for part in ("visual_tokens", "audio_tokens")
        )
        _, floor_mib = child("imports")
        packed, pack_mib = child(
            "pack",
            str(root / "manifest.jsonl"),
            args.preset,
            str(root / "packed"),
            str(args.clip),
            str(int(args.shard_mb * 1e6)),
        )
        copied, _ = child("copy", str(root / "packed"), str(root / "copied"))
    pack_rate, copy_rate = (
        packed["bytes"] / packed["seconds"] / 1e6,
        copied["bytes"] / copied["seconds"] / 1e6,
    )
    record = {
        "videos": args.videos,
        "minutes": args.minutes,
        "size": args.size,
        "preset": args.preset,
        "clip_latent_frames": args.clip,
        "shard_mb": args.shard_mb,
        "token_files_mb": token_bytes / 1e6,
        "packed_mb": packed["bytes"] / 1e6,
        "tars": packed["tars"],
        "clips": packed["clips"],
        "pack_seconds": packed["seconds"],
        "pack_mb_s": pack_rate,
        "copy_seconds": copied["seconds"],
        "copy_mb_s": copy_rate,
        "pack_over_copy": pack_rate / copy_rate,
        "pack_peak_mib": pack_mib,
        "pack_sync_seconds": packed["sync_seconds"],
        "copy_sync_seconds": copied["sync_seconds"],
        "imports_peak_mib": floor_mib,
    }
    print(
        f"{args.videos} videos x {args.minutes} min at {args.size}, {args.preset}, clips of {args.clip} "
        "latent "
        f"frames: {record['clips']} clips, {record['packed_mb']:.1f} MB in {record['tars']} tars "
        f"of ~{args.shard_mb} MB"
    )
    for name, rate, figures in (("pack", pack_rate, packed), ("copy", copy_rate, copied)):
        print(
            f"  {name}  {rate:8.1f} MB/s   ({figures['seconds']:.2f} s, "
            f"of which fsync {figures['sync_seconds']:.2f} s)"
        )
    print(f"  pack / copy: {record['pack_over_copy']:.2f} (goal: at least 0.5)")
    print(
        f"  pack job's peak memory: {pack_mib:.0f} MiB, {pack_mib - floor_mib:.0f} MiB above its imports' "
        f"{floor_mib:.0f} MiB (tars of ~{args.shard_mb} MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
