"""Which code frames of an audio codec belong to which latent frame.

Code frame k covers audio samples [k*hop, (k+1)*hop); it belongs to the latent frame
whose time span contains its start, k*hop/rate. All boundaries are computed with
integers from the exact frame rate, so the ranges tile the code stream exactly: no
drift over any length, no code frame counted twice.
"""

from __future__ import annotations

from fractions import Fraction


def first_code_frame_at(video_frame: int, fps: Fraction, sample_rate: int, hop: int) -> int:
    """Index of the first code frame starting at or after video frame `video_frame` begins."""
    # time = video_frame / fps; code frame k starts at k*hop/sample_rate; k = ceil(time*rate/hop)
    numerator = video_frame * fps.denominator * sample_rate
    denominator = fps.numerator * hop
    return -(-numerator // denominator)


def code_frame_count(frame_count: int, fps: Fraction, sample_rate: int, hop: int) -> int:
    """Code frames needed to cover `frame_count` video frames."""
    return first_code_frame_at(frame_count, fps, sample_rate, hop)


def code_frame_ranges(
    spans: list[tuple[int, int]], fps: Fraction, sample_rate: int, hop: int
) -> list[tuple[int, int]]:
    """[start, end) code frame range of each latent frame, from its video frame span."""
    return [
        (
            first_code_frame_at(start, fps, sample_rate, hop),
            first_code_frame_at(end, fps, sample_rate, hop),
        )
        for start, end in spans
    ]


def audio_block_size(ranges, spans, temporal: int) -> int:
    """The code frames every full latent frame (one standing for `temporal` video frames)
    carries at least: the "27x9 audio" of the original description (27.6 code frames per
    8 frames at 25 fps). Videos too short for a full latent frame: the largest count."""
    counts = [end - start for start, end in ranges]
    full = [n for n, (first, last) in zip(counts, spans, strict=True) if last - first == temporal]
    return min(full) if full else max(counts)


def nominal_block_size(temporal: int, fps: Fraction, sample_rate: int, hop: int) -> int:
    """The code frames every full latent frame carries at least, from the rates alone:
    floor(temporal / fps * sample_rate / hop), 27 for 8 frames at 25 fps (27.6 code frames)."""
    return int(Fraction(temporal * sample_rate) / (fps * hop))


def fixed_size_blocks(codes, ranges, block: int):
    """The "block x codebooks per latent frame" view: each latent frame's codes cut or
    right-padded (by repeating its last code frame) to exactly `block` code frames.

    `codes` is [code_frames, codebooks]; returns [latent_frames, block, codebooks].
    A derived view for models that want fixed shapes; the stored ranges are the truth.
    """
    import torch

    out = []
    for start, end in ranges.tolist() if hasattr(ranges, "tolist") else ranges:
        piece = codes[start : min(end, start + block)]
        if len(piece) < block:
            filler = piece[-1:] if len(piece) else codes.new_zeros((1, codes.shape[1]))
            piece = torch.cat([piece, filler.expand(block - len(piece), -1)])
        out.append(piece)
    return torch.stack(out)
