"""How much of the model's own speed the workflow delivers, for any tokenizer family and audio
codec, on whatever device is present.

    python benchmarks/throughput.py                                  # Cosmos CV8x16x16 + DAC, 1280x720
    python benchmarks/throughput.py --family wan2.1 --preset CV4x8x8 --codec mimi   # Wan2.1 VAE + Mimi
    python benchmarks/throughput.py --network tiny --size 320x192 --seconds 4   # CI-sized, CPU

For one preset (`--family`, `--preset`, `--window`), codec (`--codec`, `--codebooks`) and
resolution, in one run:

- model only: frames/s of the encoder and of the decoder on synthetic input already on the
  device, as many windows of the preset's length per call as `--batch-megapixels` holds (the
  workflow's `batch_megapixels`), for each of the family's engines asked for;
- end to end, the functions the workflow's rules run: mp4 -> token file (visual_encode) and
  token file -> mp4 plus per-frame PSNR/SSIM (visual_decode);
- the upstream way, as the baseline: the loop of NVIDIA's Cosmos library, run with the
  family's model (the whole video decoded into memory, one window per call, numpy round
  trips, then the mp4 written): mp4 -> tokens -> mp4;
- the codec as real-time factors: the bare codec on noise in memory, and end to end
  (audio_encode, audio_decode);
- peak host memory (resident set, Linux) and peak device memory of each stage, each stage
  measured on its own;
- loading time of the encoder and decoder per engine and of the codec, and how much of it is
  the self-check that our network computes what the file computes (Cosmos's engines that run
  our network; "n/a" for a family without one).

Models load as the rules load them, through the registries (`avtokens.visual_tokenizers`,
`avtokens.audio_codecs`), from random weights that each family and codec writes: `--network
full` (default) is the released architecture at full size, which costs what the released
model costs; `--network tiny` is the stand-in the tests use, which makes every stage I/O-bound.
The headline is end-to-end encode / model-only encode. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
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
from avtokens import audio, media, visual  # noqa: E402
from avtokens.audio_codecs import AUDIO_CODECS, DEFAULT_CODEC  # noqa: E402
from avtokens.devices import resolve_device, runtime_record  # noqa: E402
from avtokens.media import VideoWriter, probe, read_frame_windows, run_ffmpeg  # noqa: E402
from avtokens.presets import make_audio_setting, make_preset, preset_entry  # noqa: E402
from avtokens.rule import bound_heap_growth  # noqa: E402
from avtokens.visual_tokenizers import DEFAULT_FAMILY, VISUAL_TOKENIZERS  # noqa: E402
from avtokens.windows import Window, padded_length, round_up  # noqa: E402


def _reset_peak_resident_set() -> None:
    """Start the process's peak resident set afresh (Linux: "5" to /proc/self/clear_refs), so
    each stage's figure is its own, not the peak of everything before it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_resident_set_mib() -> float:
    """Peak resident set since the last reset (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


class Stage:
    """Times a stage (synchronising the device) and records the peak memory it reached."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        _reset_peak_resident_set()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self.start
        self.host_mib = _peak_resident_set_mib()
        cuda = self.device.type == "cuda"
        self.device_mib = torch.cuda.max_memory_allocated(self.device) / 2**20 if cuda else None


def make_clip(path: Path, width: int, height: int, seconds: float, fps: int) -> Path:
    run_ffmpeg(["-y", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}",
                "-f", "lavfi", "-i", f"sine=f=330:r=48000:duration={seconds}", "-ac", "2", "-c:v", "libx264",
                "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
               "making a benchmark clip", path)  # fmt: skip
    return path


def model_only(encoder, decoder, preset, width, height, batch, repeats, device) -> dict:
    """Frames/s of the bare networks, synthetic input already on the device."""
    s = preset.spatial
    frames = (
        torch.rand(batch, 3, preset.window, round_up(height, s), round_up(width, s), device=device) * 2 - 1
    )
    with Stage(device) as warm_up:  # the first calls: compiling, cuDNN's algorithm choice
        tokens = encoder(frames)
        decoder(tokens)
    with Stage(device) as enc:
        for _ in range(repeats):
            tokens = encoder(frames)
    with Stage(device) as dec:
        for _ in range(repeats):
            decoder(tokens)
    n = batch * preset.window * repeats
    return {"encode_fps": n / enc.seconds, "decode_fps": n / dec.seconds, "device_mib": enc.device_mib,
            "warm_up_seconds": warm_up.seconds}  # fmt: skip


def codec_model_only(model, codec, seconds: float, window_seconds: float, device) -> dict:
    """Real-time factors of the bare codec (a `LoadedCodec`) on `seconds` of noise already in
    memory, in the audio jobs' windows: encode, then decode its codes."""
    generator = torch.Generator().manual_seed(0)
    samples = 0.1 * torch.randn(round(seconds * codec.sample_rate), generator=generator)
    frames, window = len(samples) // codec.hop, codec.window_frames(window_seconds)
    with Stage(device) as enc:
        codes = torch.cat(list(model.encode(lambda start, end: samples[start:end], frames, window)))
    with Stage(device) as dec:
        for _ in model.decode(codes, window):
            pass
    return {"encode_rtf": seconds / enc.seconds, "decode_rtf": seconds / dec.seconds,
            "encode_device_mib": enc.device_mib, "decode_device_mib": dec.device_mib}  # fmt: skip


def upstream_style(clip: Path, out: Path, encoder, decoder, preset, device, full_batch: int) -> None:
    """mp4 -> tokens -> mp4 as the upstream library's loop does it: the whole video in
    memory, one window per call, numpy between the steps. `full_batch`: the batch the
    compiled engine pads to, the shape `model_only` compiled (no compiling in the timing)."""
    info = probe(clip)
    video = np.concatenate(list(read_frame_windows(clip, info, 64)))  # all of it, in RAM
    s, window = preset.spatial, preset.window
    height, width = round_up(info.height, s), round_up(info.width, s)
    decoded = []
    for start in range(0, len(video), window):
        chunk = video[start : start + window]
        win = Window(start, len(chunk), padded_length(len(chunk), preset.temporal))
        x = visual.model_input([(win, chunk)], height, width, device, encoder.dtype)
        tokens = encoder(x, full_batch)
        tokens = (tokens.float() if tokens.is_floating_point() else tokens).cpu().numpy()  # numpy out...
        frames = decoder(torch.from_numpy(tokens).to(device), full_batch)[0]  # ...and takes it again
        decoded += [
            f.cpu().numpy()
            for f in visual.model_output_to_frames(frames, len(chunk), info.height, info.width)
        ]
    with VideoWriter(out, info.width, info.height, info.fps, 18, "veryfast") as writer:
        for frames in decoded:
            writer.write(frames)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default=DEFAULT_FAMILY, choices=VISUAL_TOKENIZERS,
                        help="the tokenizer family (avtokens.visual_tokenizers)")  # fmt: skip
    parser.add_argument("--preset", default="CV8x16x16",
                        help="kind and factors of one of the family's models, e.g. DV8x8x8 (another is "
                             "refused with the family's list)")  # fmt: skip
    parser.add_argument("--window", type=int, default=17, help="frames per tokenizer window")
    parser.add_argument("--codec", default=DEFAULT_CODEC, choices=AUDIO_CODECS,
                        help="the audio codec (avtokens.audio_codecs)")  # fmt: skip
    parser.add_argument("--codebooks", type=int, help="how many of the codec's codebooks (default: its own)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--seconds", type=float, default=20, help="length of the end-to-end clip")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--network", choices=["full", "tiny"], default="full",
                        help="full: the released architecture with random weights; tiny: the tests' "
                             "stand-in")  # fmt: skip
    parser.add_argument("--device", default="auto")
    by_family = "; ".join(f"{name}: {', '.join(f.engines)}" for name, f in VISUAL_TOKENIZERS.items())
    parser.add_argument("--engines", nargs="+", default=["auto"],
                        help=f"the family's engines ({by_family}): model-only figures for each; the "
                             "first one runs end to end")  # fmt: skip
    parser.add_argument("--batch-megapixels", type=float, default=64,
                        help="frames x pixels per call, in millions (config batch_megapixels)")  # fmt: skip
    parser.add_argument("--audio-window-seconds", type=float, default=60,
                        help="audio coded per codec call (config audio_window_seconds)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="model-only calls timed")
    parser.add_argument("--json", type=Path, default=Path("throughput.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    try:
        fields = preset_entry(args.preset, family=args.family, window=args.window, weights="demo",
                              codec=args.codec, codebooks=args.codebooks)  # fmt: skip
        presets = {engine: make_preset(args.preset, fields | {"engine": engine}) for engine in args.engines}
        audio_setting = make_audio_setting(args.preset, fields)
    except ValueError as err:
        parser.error(str(err))
    preset = presets[args.engines[0]]  # the one that runs end to end
    tokenizer, codec, codebooks = preset.tokenizer, audio_setting.audio_codec, audio_setting.codebooks
    device = resolve_device(args.device)
    s = preset.spatial
    batch_windows = visual.windows_per_call(args.batch_megapixels, args.window, round_up(height, s),
                                            round_up(width, s))  # fmt: skip

    work = Path(tempfile.mkdtemp(prefix="avtokens-throughput-"))
    try:
        full = args.network == "full"
        checkpoint, codec_folder = work / preset.model, work / codec.folder
        tokenizer.write_stand_in(checkpoint, preset.kind, preset.temporal, preset.spatial, full_size=full)
        codec.write_stand_in(codec_folder, full_size=full)
        engines = {}
        for engine in reversed(args.engines):  # the first one stays loaded for the baseline
            with Stage(device) as load:
                encoder = tokenizer.encoder(checkpoint, presets[engine], device, None)
                decoder = tokenizer.decoder(checkpoint, presets[engine], device, None)
            figures = model_only(encoder, decoder, preset, width, height, batch_windows, args.repeats, device)
            # Only Cosmos's loads check our own network against the file's graph (and time it).
            checked = hasattr(encoder, "self_check_seconds")
            self_check = encoder.self_check_seconds + decoder.self_check_seconds if checked else None
            engines[encoder.record["engine"]] = figures | {"load_seconds": load.seconds,
                                                          "self_check_seconds": self_check}  # fmt: skip
        engine = encoder.record["engine"]
        model = engines[engine]

        clip = make_clip(work / "clip.mp4", width, height, args.seconds, args.fps)
        frames = probe(clip).packet_count
        tokens, rec, metrics = work / "tokens.safetensors", work / "rec.mp4", work / "frames.tsv"
        megapixels = args.batch_megapixels
        with Stage(device) as enc:
            visual.encode_video_file(clip, tokens, preset, checkpoint, args.device, megapixels, "b")
        with Stage(device) as dec:
            visual.decode_token_file(tokens, rec, preset, checkpoint, args.device, megapixels, 18, "veryfast",
                                     clip, metrics)  # fmt: skip
        wav, timeline = work / "a.wav", work / "timeline.json"
        codes, wav_out = work / "codes.safetensors", work / "a_out.wav"
        media.extract_audio(clip, "b", codec.sample_rate, wav, timeline)
        bound_heap_growth()  # as the workflow's audio jobs do
        with Stage(device) as aenc:
            audio.encode_wav_files([(wav, timeline, codes)], codec.name, codebooks, codec_folder, args.device,
                                   args.audio_window_seconds)  # fmt: skip
        with Stage(device) as adec:
            audio.decode_codes_files([(codes, wav_out)], codec.name, codebooks, codec_folder, args.device,
                                     args.audio_window_seconds)  # fmt: skip
        duration = float(frames / Fraction(args.fps))
        with Stage(device) as codec_load:
            loaded_codec = codec.load(codec_folder, codebooks, device, None)
        codec_model = codec_model_only(loaded_codec, codec, duration, args.audio_window_seconds, device)
        del loaded_codec
        with Stage(device) as base:
            upstream_style(clip, work / "upstream.mp4", encoder, decoder, preset, device, batch_windows)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours_round_trip = frames / (enc.seconds + dec.seconds)
    result = {
        "family": preset.family, "preset": args.preset, "codec": codec.name, "codebooks": codebooks,
        "size": args.size, "frames": frames, "fps": args.fps,
        "network": args.network, "engine": engine, "batch_windows": batch_windows,
        "batch_megapixels": args.batch_megapixels, "audio_window_seconds": args.audio_window_seconds,
        "runtime": runtime_record(device), "model_only_by_engine": engines,
        "host": platform.node(), "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
        "model_encode_fps": model["encode_fps"], "model_decode_fps": model["decode_fps"],
        "e2e_encode_fps": frames / enc.seconds, "e2e_decode_fps": frames / dec.seconds,
        "e2e_round_trip_fps": ours_round_trip, "upstream_round_trip_fps": frames / base.seconds,
        "audio_model_encode_rtf": codec_model["encode_rtf"],
        "audio_model_decode_rtf": codec_model["decode_rtf"],
        "audio_encode_rtf": duration / aenc.seconds, "audio_decode_rtf": duration / adec.seconds,
        "codec_load_seconds": codec_load.seconds,
        "peak_host_mib": {"encode": enc.host_mib, "decode": dec.host_mib, "audio_encode": aenc.host_mib,
                          "audio_decode": adec.host_mib, "upstream_style": base.host_mib},
        "peak_device_mib": {"model_only": model["device_mib"], "encode": enc.device_mib,
                            "decode": dec.device_mib, "audio_model_encode": codec_model["encode_device_mib"],
                            "audio_model_decode": codec_model["decode_device_mib"],
                            "audio_encode": aenc.device_mib, "audio_decode": adec.device_mib,
                            "upstream_style": base.device_mib},
    }  # fmt: skip
    result["headline_encode_ratio"] = result["e2e_encode_fps"] / result["model_encode_fps"]
    result["decode_ratio"] = result["e2e_decode_fps"] / result["model_decode_fps"]
    result["round_trip_vs_upstream"] = ours_round_trip / result["upstream_round_trip_fps"]
    result["audio_encode_ratio"] = result["audio_encode_rtf"] / result["audio_model_encode_rtf"]
    result["audio_decode_ratio"] = result["audio_decode_rtf"] / result["audio_model_decode_rtf"]
    args.json.write_text(json.dumps(result, indent=2) + "\n")

    rt = result["runtime"]
    where = rt.get("gpu", rt["device"])
    print(f"{tokenizer.label} {args.preset} at {args.size}, {frames} frames, {args.network} network, engine "
          f"{engine}, batch {batch_windows} windows; {codec.label}, {codebooks} codebooks; {where}, "
          f"torch {rt['torch']}")  # fmt: skip
    ours_host = max(enc.host_mib, dec.host_mib, aenc.host_mib, adec.host_mib)
    rows = [
        ("model-only encode", f"{result['model_encode_fps']:.1f} frames/s", ""),
        ("end-to-end encode (mp4 -> tokens)", f"{result['e2e_encode_fps']:.1f} frames/s",
         f"{result['headline_encode_ratio']:.0%} of model-only"),
        ("model-only decode", f"{result['model_decode_fps']:.1f} frames/s", ""),
        ("end-to-end decode (tokens -> mp4 + metrics)", f"{result['e2e_decode_fps']:.1f} frames/s",
         f"{result['decode_ratio']:.0%} of model-only"),
        ("mp4 -> tokens -> mp4, ours", f"{ours_round_trip:.1f} frames/s",
         f"{result['round_trip_vs_upstream']:.1f}x upstream-style"),
        ("mp4 -> tokens -> mp4, upstream-style", f"{result['upstream_round_trip_fps']:.1f} frames/s", ""),
        (f"{codec.label} encode, model only", f"{result['audio_model_encode_rtf']:.3g}x real time", ""),
        (f"{codec.label} encode, end to end", f"{result['audio_encode_rtf']:.3g}x real time",
         f"{result['audio_encode_ratio']:.0%} of model-only"),
        (f"{codec.label} decode, model only", f"{result['audio_model_decode_rtf']:.3g}x real time", ""),
        (f"{codec.label} decode, end to end", f"{result['audio_decode_rtf']:.3g}x real time",
         f"{result['audio_decode_ratio']:.0%} of model-only"),
        (f"loading {codec.label}", f"{codec_load.seconds:.2f} s", ""),
        ("peak host memory, ours / upstream-style", f"{ours_host:.0f} / {base.host_mib:.0f} MiB", ""),
    ]  # fmt: skip
    if device.type == "cuda":
        peak = max(v for k, v in result["peak_device_mib"].items() if k != "upstream_style")
        rows.append(("peak device memory, ours", f"{peak:.0f} MiB", ""))
    for name, figures in engines.items():
        speeds = f"{figures['encode_fps']:.1f} / {figures['decode_fps']:.1f}"
        note = f"frames/s encode / decode; first call {figures['warm_up_seconds']:.1f} s"
        rows.append((f"model only, engine {name}", speeds, note))
        check = figures["self_check_seconds"]
        check = "self-check n/a" if check is None else f"of which self-check {check:.2f} s"
        rows.append((f"loading encoder + decoder, engine {name}", f"{figures['load_seconds']:.2f} s", check))
    for name, value, note in rows:
        print(f"  {name:<45} {value:>22}  {note}")
    print(
        f"headline: end-to-end encode runs at {result['headline_encode_ratio']:.0%} of the model's own speed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
