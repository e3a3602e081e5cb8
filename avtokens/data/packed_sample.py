"""One packed sample's files (`avtokens.packing`) as a clip: the dict `AlignedClips` gives
(ragged audio), so `collate_clips` and `collate_padded` batch it.

Self-contained (numpy and torch only): the packing step copies this file into a packed
dataset's `.nv-meta/sample_loader.py`, where Megatron-Energon loads it by path, and a reader
without this package can copy it too.
"""

import io
import json

import numpy as np
import torch


def _array(value, dtype: str) -> np.ndarray:
    """An .npy file's array, from its bytes or as a decoder made it: an array (webdataset,
    Energon) or nested lists (Hugging Face datasets), which lose the stored `dtype`."""
    if isinstance(value, bytes):
        return np.load(io.BytesIO(value), allow_pickle=False)
    return np.asarray(value, dtype=dtype)


def decode_sample(files: dict) -> dict:
    """`files`: a sample's files by extension ("visual.npy", "audio_codes.npy",
    "audio_offsets.npy", "json"), as bytes or decoded (webdataset's and Energon's default
    decoders make arrays and dicts). Returns the clip: `video`, `preset`, `start`, `visual`
    (continuous latents bf16 [L, h, w, C], discrete indices int64 [L, h, w]), `audio_codes`
    int64 [N, codebooks], `audio_offsets` int64 [L + 1] (latent frame i holds
    codes[offsets[i]:offsets[i + 1]]), `frame_start`, `time` and `window_start` per latent
    frame, and `record`, the sample's JSON."""
    record = files["json"]
    record = record if isinstance(record, dict) else json.loads(record)
    stored = record["visual"]["dtype"]
    visual = torch.from_numpy(
        _array(files["visual.npy"], "uint16" if stored == "bfloat16" else stored).copy()
    )
    if stored == "bfloat16":
        visual = visual.view(torch.int16).view(torch.bfloat16)  # stored as its uint16 bits
    else:
        visual = visual.to(torch.int64)  # indices, as ids
    return {
        "video": record["video"],
        "preset": record["preset"],
        "start": record["start"],
        "visual": visual,
        "audio_codes": torch.from_numpy(_array(files["audio_codes.npy"], "uint16").astype(np.int64)),
        "audio_offsets": torch.from_numpy(_array(files["audio_offsets.npy"], "int64").astype(np.int64)),
        "frame_start": torch.tensor(record["frame_start"], dtype=torch.int64),
        "time": torch.tensor(record["time"], dtype=torch.float64),
        "window_start": torch.tensor(record["window_start"], dtype=torch.bool),
        "record": record,
    }


# Megatron-Energon's hooks (the dataset's .nv-meta/dataset.yaml names them).
def sample_loader(raw: dict) -> dict:
    """The fields of an `avtokens.data.energon.PackedClip` from a raw sample."""
    return decode_sample(raw)


def part_filter(part: str) -> bool:
    return part in ("visual.npy", "audio_codes.npy", "audio_offsets.npy", "json")
