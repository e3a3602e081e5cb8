"""What writing a long episode's token files costs, and what their headers add to their size.

    .venv/bin/python benchmarks/token_files.py                  # 1 hour at 1920x1080, 25 fps
    .venv/bin/python benchmarks/token_files.py --minutes 1 --size 320x240 --repeats 1   # CI-sized

Writes, per preset (CV8x16x16 and DV8x16x16 by default, window 121), the visual token file
of one episode as the visual_encode job does (one append per window of latent frames, then
`finish` with the frame spans and a metadata record of the real size), and its audio token
file as align_codes does (the codes in one append, then the code ranges). Random tokens of the
real layout; one window's tensor is made before the clock starts and appended again and
again, so the figures are the writer's: converting each chunk to bytes, writing it, and
`finish`. The files go to a temporary folder (`--folder`, on the disk being measured) and are
removed after each repeat; the page cache is flushed (`sync`) before each. Reports the median
over the repeats of the append and finish times, and each file's size against its tensors'
bytes. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from avtokens.alignment import code_frame_count, code_frame_ranges  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset, preset_entry  # noqa: E402
from avtokens.tokenfile import TokenFileWriter  # noqa: E402
from avtokens.windows import plan_windows, round_up, video_latent_spans  # noqa: E402


def record(preset, frames: int, fps: Fraction, width: int, height: int) -> dict:
    """A metadata record of the size and shape of visual_encode's (about 2 KB of JSON)."""
    encoder_file = f"resources/{preset.name}/{preset.tokenizer.weights_file('encoder')}"
    return {
        "format": "avtokens-visual/1", "project_version": "0.1.0",
        "source": {"file": "episode.mp4", "name": "episode", "sha256": "0" * 64, "size": frames * 20_000},
        "video": {"audio_channels": 2, "audio_rate": 48000, "audio_stream": 1, "dropped_frames": 0,
                  "duration": float(frames / fps), "field_order": "progressive", "filled_frames": 0,
                  "fps": str(fps), "frame_count": frames, "has_audio": True, "height": height,
                  "packet_count": frames, "padded_height": round_up(height, preset.spatial),
                  "padded_width": round_up(width, preset.spatial), "primaries": "bt709",
                  "sample_aspect_ratio": "1:1", "timing_deviation": 0.0, "transfer": "bt709",
                  "variable_rate": False, "video_start": 0.0, "video_stream": 0, "video_streams": 1,
                  "width": width},
        "tokenizer": {"decoder_sha256": "0" * 64, "kind": preset.kind, "temporal": preset.temporal,
                      "spatial": preset.spatial, "window": preset.window, "weights": "official",
                      "repo": preset.repo,
                      "encoder": {"dtype": "bfloat16", "engine": "compiled", "sha256": "0" * 64,
                                  "file": encoder_file}},
        "runtime": {"device": "cuda:0", "torch": torch.__version__},
    }  # fmt: skip


def write_visual(path: Path, preset, frames: int, fps: Fraction, width: int, height: int) -> dict:
    spans = video_latent_spans(frames, preset.window, preset.temporal)
    h, w = (
        round_up(height, preset.spatial) // preset.spatial,
        round_up(width, preset.spatial) // preset.spatial,
    )
    windows = plan_windows(frames, preset.window, preset.temporal)
    per_window = [planned.latent_frames(preset.temporal) for planned in windows]
    rng = torch.Generator().manual_seed(0)
    if preset.is_discrete:
        name, dtype, shape = "indices", torch.uint16, (h, w)
        window = torch.randint(0, preset.tokenizer.vocabulary, (max(per_window), *shape), generator=rng)
        window = window.to(dtype)
    else:
        name, dtype, shape = "latents", torch.bfloat16, (h, w, 16)
        window = torch.randn((max(per_window), *shape), generator=rng).to(dtype)
    metadata = record(preset, frames, fps, width, height)
    frame_spans = torch.tensor(spans, dtype=torch.int64)
    start = time.perf_counter()
    writer = TokenFileWriter(path, name, dtype, shape)
    for count in per_window:
        writer.append(window[:count])
    appended = time.perf_counter()
    writer.finish(metadata, extra={"frame_spans": frame_spans})
    done = time.perf_counter()
    tensor_bytes = window[:1].numel() * 2 * len(spans) + frame_spans.numel() * 8
    return _figures(path, tensor_bytes, appended - start, done - appended)


def write_audio(path: Path, preset, audio_setting, frames: int, fps: Fraction) -> dict:
    spans = video_latent_spans(frames, preset.window, preset.temporal)
    codec, codebooks = audio_setting.audio_codec, audio_setting.codebooks
    count = code_frame_count(frames, fps, codec.sample_rate, codec.hop)
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, codec.codebook_size, (count, codebooks), generator=generator).to(torch.uint16)
    ranges = torch.tensor(code_frame_ranges(spans, fps, codec.sample_rate, codec.hop), dtype=torch.int64)
    metadata = {"format": "avtokens-audio/1", "audio": {"code_frames": count, "hop": codec.hop},
                "alignment": {"fps": str(fps), "frame_count": frames, "latent_frames": len(spans)},
                "source": {"sha256": "0" * 64}, "codec": {"sha256": "0" * 64}}  # fmt: skip
    start = time.perf_counter()
    writer = TokenFileWriter(path, "codes", torch.uint16, (codebooks,))
    writer.append(codes)
    appended = time.perf_counter()
    writer.finish(metadata, extra={"code_ranges": ranges})
    done = time.perf_counter()
    return _figures(path, codes.numel() * 2 + ranges.numel() * 8, appended - start, done - appended)


def _figures(path: Path, tensor_bytes: int, append_s: float, finish_s: float) -> dict:
    size = path.stat().st_size
    path.unlink()
    return {"file_bytes": size, "tensor_bytes": tensor_bytes, "overhead_bytes": size - tensor_bytes,
            "append_s": append_s, "finish_s": finish_s, "total_s": append_s + finish_s}  # fmt: skip


def median(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--fps", default="25")
    parser.add_argument("--presets", nargs="+", default=["CV8x16x16", "DV8x16x16"])
    parser.add_argument("--window", type=int, default=121)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: the temp folder)")
    parser.add_argument("--json", type=Path, default=Path("token_files.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    fps = Fraction(args.fps)
    frames = round(args.minutes * 60 * fps)
    results = {"minutes": args.minutes, "size": args.size, "fps": args.fps, "window": args.window,
               "repeats": args.repeats, "files": {}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="avtokens-token-files-", dir=args.folder) as work:
        for name in args.presets:
            fields = preset_entry(name, window=args.window)
            preset, audio_setting = make_preset(name, fields), make_audio_setting(name, fields)
            for part in ("visual", "audio"):
                runs = []
                for _ in range(args.repeats):
                    os.sync()
                    path = Path(work) / f"{name}_{part}_tokens.safetensors"
                    if part == "visual":
                        runs.append(write_visual(path, preset, frames, fps, width, height))
                    else:
                        runs.append(write_audio(path, preset, audio_setting, frames, fps))
                results["files"][f"{name} {part}"] = median(runs) | {"runs": runs}
    print(f"{args.minutes:g} min at {args.size}, {args.fps} fps, window {args.window}; "
          f"median of {args.repeats}")  # fmt: skip
    print(f"{'file':<22} {'MB':>9} {'overhead B':>11} {'append s':>9} {'finish s':>9} {'total s':>8}")
    for key, row in results["files"].items():
        print(f"{key:<22} {row['file_bytes'] / 1e6:9.1f} {row['overhead_bytes']:11,.0f} "
              f"{row['append_s']:9.3f} {row['finish_s']:9.3f} {row['total_s']:8.3f}")  # fmt: skip
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
