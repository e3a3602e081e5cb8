"""Numbers per video x preset (quality, token counts, bytes), per video for the audio (a codec
codes a video once, whatever the preset), and the tables across a grid."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from avtokens.alignment import audio_block_size
from avtokens.atomic import atomic_output
from avtokens.audio_distances import AudioDistances
from avtokens.media import sha256_of
from avtokens.tokenfile import TokenFileReader, read_metadata
from avtokens.visual_tokenizers import LEGACY_FAMILY
from avtokens.windows import video_latent_spans

TABLE_COLUMNS = [
    "video", "preset", "family", "codec", "duration_s", "fps", "width", "height", "bucket", "latent_frames",
    "latent_width", "latent_height", "codes_per_latent_frame", "visual_tokens", "audio_tokens",
    "total_tokens", "tokens_per_second", "token_bytes", "psnr_mean", "psnr_p5", "ssim_mean",
    "stand_in_weights",
]  # fmt: skip
AUDIO_TABLE_COLUMNS = [
    "video", "codec", "codebooks", "sample_rate", "weights", "duration_s", "code_frames", "audio_tokens",
    "audio_tokens_per_second", "token_bytes", "mel_distance", "stft_distance", "si_sdr", "stand_in_weights",
]  # fmt: skip


def _read_frame_metrics(path) -> tuple[list[float], list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [float(r["psnr"]) for r in rows], [float(r["ssim"]) for r in rows]


def _duration_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} sec"


def describe(video: str, s: dict) -> str:
    """The seed's one-line summary, e.g. "Tom and Jerry: 8 min 51 sec; 25 fps; 960x720 =>
    1,750 latent frames of 60x45 visual + 27x9 audio; 4,725,000 visual tokens & 425,250
    audio tokens = 5.15 million tokens"."""
    return (
        f"{video}: {_duration_text(s['duration_s'])}; {float(Fraction(s['fps'])):.4g} fps; "
        f"{s['width']}x{s['height']} => {s['latent_frames']:,} latent frames of "
        f"{s['latent_width']}x{s['latent_height']} visual + {s['codes_per_latent_frame']}x"
        f"{s['codebooks']} audio; {s['visual_tokens']:,} visual tokens & {s['audio_tokens']:,} "
        f"audio tokens = {s['total_tokens'] / 1e6:.2f} million tokens"
    )


def summarize(values: list[float]) -> dict:
    """mean, 5th percentile and worst value (with its frame index) of per-frame scores."""
    array = np.asarray(values, dtype=np.float64)
    worst = int(array.argmin())
    return {
        "mean": float(array.mean()),
        "p5": float(np.percentile(array, 5)),
        "worst": float(array[worst]),
        "worst_frame": worst,
    }


def video_summary(video: str, preset: str, frame_metrics, visual_tokens, audio_tokens) -> dict:
    """Everything one video x preset is judged by, as a flat-ish dictionary; the audio's
    distances are the video's (`audio_summary`)."""
    # The visual tokens can be gigabytes: only their metadata is read. Audio tokens are small.
    meta = read_metadata(visual_tokens)
    with TokenFileReader(audio_tokens) as audio:
        audio_meta, ranges, codes_shape = audio.metadata, audio.array("code_ranges"), audio.shape("codes")
    psnr_values, ssim_values = _read_frame_metrics(frame_metrics)
    latent, tok = meta["latent"], meta["tokenizer"]
    spans = video_latent_spans(meta["video"]["frame_count"], tok["window"], tok["temporal"])
    per_latent = (ranges[:, 1] - ranges[:, 0]).tolist()
    codebooks = codes_shape[2]
    visual_count = latent["frames"] * latent["height"] * latent["width"]
    audio_count = codes_shape[1] * codebooks
    duration = meta["video"]["duration"]
    # What a data loader checks its files against (avtokens.data).
    files = {
        part: {"bytes": Path(path).stat().st_size, "sha256": sha256_of(path)}
        for part, path in (("visual_tokens", visual_tokens), ("audio_tokens", audio_tokens))
    }
    summary = {
        "video": video,
        "preset": preset,
        "duration_s": duration,
        "fps": meta["video"]["fps"],
        # The size the tokenizer saw (square pixels at the display aspect ratio by default).
        "width": meta["picture"]["width"],
        "height": meta["picture"]["height"],
        "frame_count": meta["video"]["frame_count"],
        # The preset's bucket the video went to (avtokens.shaping); "" for its own size.
        "bucket": (meta["picture"].get("geometry") or {}).get("bucket", ""),
        "latent_frames": latent["frames"],
        "latent_width": latent["width"],
        "latent_height": latent["height"],
        # What every full latent frame carries (the first of each window covers one video frame).
        "codes_per_latent_frame": audio_block_size(ranges.tolist(), spans, tok["temporal"]),
        "codes_per_latent_frame_range": [min(per_latent), max(per_latent)],
        "codebooks": codebooks,
        "visual_tokens": visual_count,
        "audio_tokens": audio_count,
        "total_tokens": visual_count + audio_count,
        "tokens_per_second": (visual_count + audio_count) / duration,
        "token_bytes": sum(f["bytes"] for f in files.values()),
        "files": files,
        "psnr": summarize(psnr_values),
        "ssim": summarize(ssim_values),
        "family": meta["tokenizer"].get("family", LEGACY_FAMILY),
        "codec": audio_meta["audio"]["codec"],
        "tokenizer": "{kind}{temporal}x{spatial}x{spatial}".format(**meta["tokenizer"]),
        "window": meta["windows"]["frames"],
        "stand_in_weights": bool(meta["stand_in_weights"] or audio_meta["stand_in_weights"]),
    }
    summary["description"] = describe(video, summary)
    return summary


def audio_summary(video: str, weights: str, codes, source_wav, reconstructed_wav) -> dict:
    """A video's audio as its codec codes it (the same for every preset with that codec setting
    and weights): code frames, tokens, bytes, and DAC's distances (`avtokens.audio_distances`)
    between the coded wav and its reconstruction."""
    meta = read_metadata(codes)
    duration, audio = meta["video"]["duration"], meta["audio"]
    tokens = audio["code_frames"] * audio["codebooks"]
    return {
        "video": video,
        "codec": audio["codec"],
        "codebooks": audio["codebooks"],
        "sample_rate": audio["sample_rate"],
        "weights": weights,
        "duration_s": duration,
        "code_frames": audio["code_frames"],
        "audio_tokens": tokens,
        "audio_tokens_per_second": tokens / duration,
        "token_bytes": Path(codes).stat().st_size,
        **AudioDistances().files(source_wav, reconstructed_wav),
        "stand_in_weights": meta["stand_in_weights"],
    }


def write_summary(dest, **kwargs) -> None:
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(video_summary(**kwargs), indent=2) + "\n")


def write_audio_summary(dest, **kwargs) -> None:
    with atomic_output(dest) as tmp:
        tmp.write_text(json.dumps(audio_summary(**kwargs), indent=2) + "\n")


def table_row(s: dict) -> dict:
    return {
        **{k: s[k] for k in TABLE_COLUMNS if k in s},
        "psnr_mean": s["psnr"]["mean"],
        "psnr_p5": s["psnr"]["p5"],
        "ssim_mean": s["ssim"]["mean"],
    }


def write_table(summaries: list[Path | str], dest) -> None:
    """One TSV row per video x preset, plus a row of totals (counts and bytes summed)."""
    rows = [table_row(json.loads(Path(p).read_text())) for p in summaries]
    summed = ("duration_s", "latent_frames", "visual_tokens", "audio_tokens", "total_tokens", "token_bytes")
    total = {"video": "TOTAL", "preset": f"{len({r['preset'] for r in rows})} presets"}
    total.update({k: sum(r[k] for r in rows) for k in summed})
    total["tokens_per_second"] = total["total_tokens"] / total["duration_s"] if total["duration_s"] else 0
    _write_tsv([*rows, total], TABLE_COLUMNS, dest)


def write_audio_table(summaries: list[Path | str], dest) -> None:
    """One TSV row per video and codec setting (and weights): the audio is coded once, whatever the preset."""
    _write_tsv([json.loads(Path(p).read_text()) for p in summaries], AUDIO_TABLE_COLUMNS, dest)


def _write_tsv(rows: list[dict], columns: list[str], dest) -> None:
    with atomic_output(dest) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
