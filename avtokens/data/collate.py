"""Clips into batches: stacked where they share a shape, padded with masks where they do not;
ragged audio and joint tokens packed with offsets."""

from __future__ import annotations

import numpy as np
import torch


def collate_clips(clips: list[dict]) -> dict:
    """A batch of clips of one shape (as `ClipBatchSampler` and `AlignedClipStream` make them):
    visual [B, L, ...] stacked; ragged audio packed (codes of all clips [N, codebooks],
    `audio_offsets` [B, L + 1] into them); blocks [B, L, block, codebooks]; joint tokens packed
    the same way. Clips of different lengths or latent sizes are refused (`collate_padded`
    takes them)."""
    shapes = {tuple(c["visual"].shape) for c in clips}
    if len(shapes) > 1:
        raise ValueError(
            f"clips of different shapes {sorted(shapes)} in one batch: batch them with ClipBatchSampler "
            "(one shape a batch) or collate them with collate_padded"
        )
    return _collate(clips)


def collate_padded(clips: list[dict]) -> dict:
    """As `collate_clips`, for clips of different lengths (`tail="short"`) or latent sizes
    (videos of different sizes): visual tokens and everything per latent frame are padded
    with zeros to the longest and largest; padded latent frames have no audio and no joint
    tokens. `frame_mask` [B, L] is True on real latent frames, `latent_mask` [B, h, w] on
    real latent positions."""
    return _collate(clips)


def _padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Tensors stacked, each padded with zeros at the end of its first dimensions to the largest."""
    size = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    out = tensors[0].new_zeros((len(tensors), *size))
    for b, tensor in enumerate(tensors):
        out[(b, *(slice(0, n) for n in tensor.shape))] = tensor
    return out


def _packed(pieces: list[torch.Tensor], offsets: list[torch.Tensor], length: int) -> tuple:
    """Concatenate ragged pieces; offsets shifted into the whole and padded with the last."""
    bases = np.cumsum([0] + [len(p) for p in pieces[:-1]])
    shifted = [
        torch.cat([o, o[-1:].expand(length + 1 - len(o))]) + int(b)
        for o, b in zip(offsets, bases, strict=True)
    ]
    return torch.cat(pieces), torch.stack(shifted)


def _collate(clips: list[dict]) -> dict:
    length = max(len(c["visual"]) for c in clips)
    batch = {
        "video": [c["video"] for c in clips],
        "preset": [c["preset"] for c in clips],
        "start": torch.tensor([c["start"] for c in clips]),
        "frame_mask": _padded([torch.ones(len(c["visual"]), dtype=torch.bool) for c in clips]),
        "latent_mask": _padded([torch.ones(c["visual"].shape[1:3], dtype=torch.bool) for c in clips]),
    }
    for key in ("visual", "frame_start", "time", "window_start"):
        batch[key] = _padded([c[key] for c in clips])
    if "audio_offsets" in clips[0]:
        batch["audio_codes"], batch["audio_offsets"] = _packed(
            [c["audio_codes"] for c in clips], [c["audio_offsets"] for c in clips], length)  # fmt: skip
    else:
        batch["audio_codes"] = _padded([c["audio_codes"] for c in clips])
    if "tokens" in clips[0]:
        batch["tokens"], batch["token_offsets"] = _packed(
            [c["tokens"] for c in clips], [c["token_offsets"] for c in clips], length)  # fmt: skip
    return batch
