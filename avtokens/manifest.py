"""The dataset manifest: one JSON line per video x preset, so training code finds every
token file, its shapes and its provenance without walking directories."""

from __future__ import annotations

import json
import os
from pathlib import Path

from avtokens.atomic import atomic_output
from avtokens.tokenfile import TokenFileReader
from avtokens.visual_tokenizers import LEGACY_FAMILY


def _header(path) -> tuple[dict, dict]:
    """A token file's metadata and its tensors' shapes, from one read of its header."""
    with TokenFileReader(path) as reader:
        return reader.metadata, reader.shapes()


def manifest_row(summary_path, visual_tokens, audio_tokens, audio_summary_path, base: Path) -> dict:
    """Paths are relative to `base` (the manifest's folder), so the dataset can move."""
    summary = json.loads(Path(summary_path).read_text())
    audio_summary = json.loads(Path(audio_summary_path).read_text())
    (visual, visual_shapes), (audio, audio_shapes) = _header(visual_tokens), _header(audio_tokens)
    tokenizer = visual["tokenizer"]
    return {
        "video": summary["video"],
        "preset": summary["preset"],
        "visual_tokens": os.path.relpath(visual_tokens, base),
        "audio_tokens": os.path.relpath(audio_tokens, base),
        "visual_shapes": visual_shapes,
        "audio_shapes": audio_shapes,
        "family": tokenizer.get("family", LEGACY_FAMILY),
        "release": tokenizer.get("release", ""),
        "kind": tokenizer["kind"],
        "temporal": tokenizer["temporal"],
        "spatial": tokenizer["spatial"],
        "window": tokenizer["window"],
        "visual_tokens_bytes": summary["files"]["visual_tokens"]["bytes"],
        "visual_tokens_sha256": summary["files"]["visual_tokens"]["sha256"],
        "audio_tokens_bytes": summary["files"]["audio_tokens"]["bytes"],
        "audio_tokens_sha256": summary["files"]["audio_tokens"]["sha256"],
        "latent_frames": summary["latent_frames"],
        "latent_height": summary["latent_height"],
        "latent_width": summary["latent_width"],
        "visual_token_count": summary["visual_tokens"],
        "audio_token_count": summary["audio_tokens"],
        "duration_s": summary["duration_s"],
        "fps": summary["fps"],  # of the frames the tokenizer saw: a preset's target rate, if it has one
        "bucket": summary.get("bucket") or None,  # a preset's size for it, or None
        # Where a preset's timeline starts: frame j shows the source at (first_tick + j) / fps s.
        "first_tick": (visual["picture"].get("timeline") or {}).get("first_tick", 0),
        # fit: pad: where the picture is in the bucket (x, y, width, height in pixels); else None.
        "picture_rect": _padded_picture(visual["picture"].get("geometry")),
        "frame_count": summary["frame_count"],
        "width": summary["width"],
        "height": summary["height"],
        "source_sha256": visual["source"]["sha256"],
        "encoder_sha256": tokenizer["encoder"]["sha256"],
        "decoder_sha256": tokenizer["decoder_sha256"],
        "audio_codec": audio["audio"]["codec"],
        "audio_codebooks": audio["audio"]["codebooks"],
        "audio_codebook_size": audio["audio"]["codebook_size"],
        "audio_sample_rate": audio["audio"]["sample_rate"],
        "audio_hop": audio["audio"]["hop"],
        "audio_codec_sha256": audio["codec"]["sha256"],
        "stand_in_weights": bool(visual["stand_in_weights"] or audio["stand_in_weights"]),
        # How much the source changed under way (broadcast captures; README, "Inputs"), so a
        # dataset can leave out the captures it distrusts. Files of older versions count none.
        "size_changes": visual["video"].get("size_changes", 0),
        "audio_format_changes": (audio["audio"].get("placement") or {}).get("format_changes", 0),
        "psnr_mean": summary["psnr"]["mean"],
        "mel_distance": audio_summary["mel_distance"],
    }


def _padded_picture(geometry: dict | None) -> list[int] | None:
    if not geometry or geometry["fit"] != "pad":
        return None
    rect = geometry["rect"]
    return [rect["x"], rect["y"], rect["width"], rect["height"]]


def write_manifest(runs: list[dict], dest) -> None:
    """`runs`: one {"summary", "visual_tokens", "audio_tokens", "audio_summary"} per video x preset."""
    base = Path(dest).resolve().parent
    with atomic_output(dest) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for run in runs:
            row = manifest_row(run["summary"], Path(run["visual_tokens"]).resolve(),
                               Path(run["audio_tokens"]).resolve(), run["audio_summary"], base)  # fmt: skip
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
