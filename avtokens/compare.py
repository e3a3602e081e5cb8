"""Side-by-side comparison video: source | reconstruction, with the preset and PSNR drawn on."""

from __future__ import annotations

import csv
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from avtokens import AvTokensError
from avtokens.atomic import atomic_output
from avtokens.media import VideoWriter, read_frame_windows
from avtokens.picture import Picture
from avtokens.tokenfile import read_metadata

# Frames read and written at a time (at most 32): a chunk of 4K frames is 25 MB a frame on
# each side, and the side-by-side copy as much again.
COMPARE_PIXELS = 32_000_000


def _caption(frames: np.ndarray, x: int, text: str, font) -> None:
    """Draw `text` in a dark band at the top of frames[:, :, x:] (in place)."""
    band_height = min(frames.shape[1], font.size + 8)
    band = frames[0, :band_height, x:]
    image = Image.fromarray((band * 0.35).astype(np.uint8))
    ImageDraw.Draw(image).text((4, 3), text, fill=(255, 255, 255), font=font)
    frames[0, :band_height, x:] = np.asarray(image)


def write_comparison(
    source, reconstruction, frame_metrics, visual_tokens, dest, label: str, crf: int, x264_preset: str
) -> None:
    """Stream both videos frame by frame into `dest`, twice as wide as the frames the
    tokenizer saw (the source converted as the visual token file records), shown at the
    source's aspect ratio. The reconstruction is read at that size (not probed: a process
    per clip), so one of another size is a decoding error."""
    with open(frame_metrics, newline="") as f:
        psnr = [float(row["psnr"]) for row in csv.DictReader(f, delimiter="\t")]
    metadata = read_metadata(visual_tokens)
    picture = Picture.from_metadata(metadata["picture"])
    font = ImageFont.load_default(size=max(10, min(28, picture.height // 16)))
    chunk, done, total = max(1, min(32, COMPARE_PIXELS // (picture.width * picture.height))), 0, 0.0
    # An even height (a black bottom row if need be) keeps it 4:2:0, which browsers play inline.
    extra_row = picture.height % 2
    sources = read_frame_windows(source, picture, chunk)
    with (
        atomic_output(dest) as tmp,
        VideoWriter(
            tmp,
            2 * picture.width,
            picture.height + extra_row,
            Fraction(metadata["video"]["fps"]),
            crf,
            x264_preset,
            sample_aspect_ratio=picture.sample_aspect_ratio,
        ) as writer,
    ):
        for reconstructed in read_frame_windows(reconstruction, picture.converted, chunk):
            original = next(sources, None)
            if original is None or len(original) != len(reconstructed) or done + len(original) > len(psnr):
                raise AvTokensError(f"{reconstruction}: frame count differs from {source} or {frame_metrics}")
            side_by_side = np.concatenate([original, reconstructed], axis=2)
            for k in range(len(side_by_side)):
                total += psnr[done]
                done += 1
                frame = side_by_side[k : k + 1]
                _caption(frame, 0, "source", font)
                text = f"{label}  PSNR {psnr[done - 1]:.1f} dB  (mean {total / done:.1f})"
                _caption(frame, picture.width, text, font)
            if extra_row:
                side_by_side = np.pad(side_by_side, ((0, 0), (0, 1), (0, 0), (0, 0)))
            writer.write(side_by_side)
        if next(sources, None) is not None or done != len(psnr):
            raise AvTokensError(f"{reconstruction}: frame count differs from {source} or {frame_metrics}")
