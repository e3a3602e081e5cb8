"""How fast training clips come out of token files: `avtokens.data` (files kept open, each
clip read by `pread`) against loading both files with `load_tokens` per clip and slicing, on CPU.

    .venv/bin/python benchmarks/data_loading.py                       # 10-minute episodes, 960x720
    .venv/bin/python benchmarks/data_loading.py --minutes 0.5 --size 320x240 --clips 40   # CI-sized

Writes one episode's token files per preset (CV8x16x16 and DV8x16x16 by default, window 121;
random tokens with the real layout and sizes: latents or indices, frame spans, the preset's
codec's codes and code ranges aligned as the workflow aligns them) and a manifest, then fetches the same
random clips of `--clip-length` latent frames both ways in one process. Reports clips per
second, MB/s of clip tensors delivered (as stored: 2 bytes a token) and, for ours, the bytes
read per clip (counted). `load_tokens` maps the files (safetensors' default mmap backend), so
it too pages in little more than the clip; what it pays per clip is opening and mapping two
files and parsing their headers. (A loader that reads files whole, such as one built on
`torch.load`, would pay the file size per clip.) The files have just been written, so both
ways read from the page cache: the figures are the cost of reading and copying, not of the
disk. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from avtokens import load_tokens  # noqa: E402
from avtokens.alignment import code_frame_count, code_frame_ranges  # noqa: E402
from avtokens.data import AlignedClips  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset, preset_entry  # noqa: E402
from avtokens.tokenfile import TokenFileWriter  # noqa: E402
from avtokens.windows import round_up, video_latent_spans  # noqa: E402


def write_episode(folder: Path, preset, audio_setting, frames: int, fps: Fraction, width: int, height: int,
                  video: str = "episode") -> dict:  # fmt: skip
    """Token files of one episode with random tokens (the preset's codec's codes), and its
    manifest row."""
    rng = torch.Generator().manual_seed(0)
    spans = video_latent_spans(frames, preset.window, preset.temporal)
    h, w = (
        round_up(height, preset.spatial) // preset.spatial,
        round_up(width, preset.spatial) // preset.spatial,
    )
    visual, audio = (folder / f"{video}_{preset.name}_{part}.safetensors" for part in ("visual", "audio"))
    name, dtype, shape = (
        ("indices", torch.uint16, (h, w)) if preset.is_discrete else ("latents", torch.bfloat16, (h, w, 16))
    )
    writer = TokenFileWriter(visual, name, dtype, shape)
    for start in range(0, len(spans), 64):
        count = min(64, len(spans) - start)
        if preset.is_discrete:
            indices = torch.randint(0, preset.tokenizer.vocabulary, (count, *shape), generator=rng)
            writer.append(indices.to(torch.uint16))
        else:
            writer.append(torch.randn((count, *shape), generator=rng).to(torch.bfloat16))
    writer.finish({}, extra={"frame_spans": torch.tensor(spans, dtype=torch.int64)})
    codec, codebooks = audio_setting.audio_codec, audio_setting.codebooks
    codes = code_frame_count(frames, fps, codec.sample_rate, codec.hop)
    writer = TokenFileWriter(audio, "codes", torch.uint16, (codebooks,))
    writer.append(torch.randint(0, codec.codebook_size, (codes, codebooks), generator=rng).to(torch.uint16))
    ranges = code_frame_ranges(spans, fps, codec.sample_rate, codec.hop)
    writer.finish({}, extra={"code_ranges": torch.tensor(ranges, dtype=torch.int64)})
    return {
        "video": video, "preset": preset.name, "family": preset.family, "kind": preset.kind,
        "temporal": preset.temporal, "spatial": preset.spatial, "window": preset.window,
        "latent_frames": len(spans), "latent_height": h, "latent_width": w,
        "fps": f"{fps.numerator}/{fps.denominator}", "visual_tokens": visual.name, "audio_tokens": audio.name,
        "visual_tokens_bytes": visual.stat().st_size, "audio_tokens_bytes": audio.stat().st_size,
        "audio_codec": codec.name, "audio_codebooks": codebooks, "audio_codebook_size": codec.codebook_size,
        "audio_sample_rate": codec.sample_rate, "audio_hop": codec.hop,
    }  # fmt: skip


def stored_bytes(visual: torch.Tensor, codes: torch.Tensor) -> int:
    """A clip's tokens as the files store them: 2 bytes each (bf16 latents, uint16 indices
    and codes), whatever dtype they are handed out in."""
    return 2 * (visual.numel() + codes.numel())


def with_avtokens_data(clips: AlignedClips, order) -> dict:
    start, delivered, read = time.perf_counter(), 0, clips.bytes_read
    for index in order:
        clip = clips[int(index)]
        delivered += stored_bytes(clip["visual"], clip["audio_codes"])
    figures = _figures(len(order), delivered, time.perf_counter() - start)
    return figures | {"bytes_read_per_clip": (clips.bytes_read - read) / len(order)}


def with_load_tokens(clips: AlignedClips, order) -> dict:
    """What a loader written around `load_tokens` does: load both files, slice the clip."""
    start, delivered, mapped = time.perf_counter(), 0, 0
    for index in order:
        video_index, first, length = clips.clips[int(index)]
        video = clips.videos[video_index]
        visual, audio = load_tokens(video.visual), load_tokens(video.audio)
        tensor = visual[clips.layout.tensor][0, first : first + length].clone()
        ranges = audio["code_ranges"][first : first + length]
        codes = audio["codes"][0, int(ranges[0, 0]) : int(ranges[-1, 1])].clone()
        delivered += stored_bytes(tensor, codes)
        mapped += video.visual.stat().st_size + video.audio.stat().st_size
    figures = _figures(len(order), delivered, time.perf_counter() - start)
    return figures | {"bytes_mapped_per_clip": mapped / len(order)}


def _figures(count: int, delivered: int, seconds: float) -> dict:
    return {"clips_per_second": count / seconds, "mb_per_second": delivered / seconds / 1e6,
            "clip_bytes": delivered / count}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--size", default="960x720")
    parser.add_argument("--fps", default="25")
    parser.add_argument("--presets", nargs="+", default=["CV8x16x16", "DV8x16x16"])
    parser.add_argument("--window", type=int, default=121)
    parser.add_argument("--clip-length", type=int, default=16)
    parser.add_argument("--clips", type=int, default=200, help="clips fetched each way")
    parser.add_argument("--json", type=Path, default=Path("data_loading.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    fps = Fraction(args.fps)
    frames = round(args.minutes * 60 * fps)

    work = Path(tempfile.mkdtemp(prefix="avtokens-data-"))
    results = {}
    try:
        for name in args.presets:
            fields = preset_entry(name, window=args.window)
            visual, audio = make_preset(name, fields), make_audio_setting(name, fields)
            row = write_episode(work, visual, audio, frames, fps, width, height)
            manifest = work / f"{name}.jsonl"
            manifest.write_text(json.dumps(row) + "\n")
            clips = AlignedClips(manifest, clip_length=args.clip_length, stride=1)
            order = np.random.default_rng(0).integers(0, len(clips), args.clips)
            file_mb = (row["visual_tokens_bytes"] + row["audio_tokens_bytes"]) / 1e6
            results[name] = {
                "file_mb": file_mb,
                "ours": with_avtokens_data(clips, order),
                "load_tokens": with_load_tokens(clips, order),
            }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.minutes:g}-minute episode, {args.size} at {args.fps} fps, window {args.window}, clips of "
          f"{args.clip_length} latent frames, {args.clips} random clips, one process, CPU")  # fmt: skip
    print(f"{'preset':<12}{'file MB':>9}{'clip KB':>9}  {'way':<14}{'clips/s':>9}{'MB/s':>9}  per clip")
    for name, r in results.items():
        ours, loaded = r["ours"], r["load_tokens"]
        rows = (
            ("avtokens.data", ours, f"{ours['bytes_read_per_clip'] / 1e3:.1f} KB read"),
            ("load_tokens", loaded, f"{loaded['bytes_mapped_per_clip'] / 1e6:.1f} MB mapped"),
        )
        for way, f, note in rows:
            print(f"{name:<12}{r['file_mb']:>9.1f}{f['clip_bytes'] / 1e3:>9.1f}  {way:<14}"
                  f"{f['clips_per_second']:>9.1f}{f['mb_per_second']:>9.1f}  {note}")  # fmt: skip
        print(f"{'':<12}speed-up: {ours['clips_per_second'] / loaded['clips_per_second']:.1f}x")
    record = {"minutes": args.minutes, "size": args.size, "fps": args.fps, "window": args.window,
              "clip_length": args.clip_length, "clips": args.clips, "presets": results}  # fmt: skip
    args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
