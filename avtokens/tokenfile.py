"""Token files: safetensors written incrementally, read with the standard library.

A safetensors file is an 8-byte header length, a JSON header (tensor dtypes, shapes and
byte ranges, plus a string-to-string metadata dictionary) and the raw tensor bytes. The
writer reserves room for the header, streams one growing tensor after it, and fills the
header in at the end, so a long video's tokens never sit in memory. Every metadata value
is stored JSON-encoded, so numbers, lists and nested records survive the round trip.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

_DTYPE_NAMES = {
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.uint16: "U16",
    torch.int32: "I32",
    torch.int64: "I64",
}
_HEADER_RESERVE = 1 << 16


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype in (torch.bfloat16, torch.uint16):
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


class TokenFileWriter:
    """Write `[1, n, *frame_shape]` tensor `name` by appending `[k, *frame_shape]` chunks.

    Small tensors given to `finish` follow the streamed one. Write to a temporary path
    (see `atomic_output`): the file is valid only once `finish` returns.
    """

    def __init__(self, path, name: str, dtype: torch.dtype, frame_shape: tuple[int, ...]):
        self.path, self.name, self.dtype = Path(path), name, dtype
        self.frame_shape = tuple(frame_shape)
        self.frames = 0
        self.data_bytes = 0
        self.file = open(self.path, "wb")
        self.file.write(b"\0" * (8 + _HEADER_RESERVE))

    def append(self, chunk: torch.Tensor) -> None:
        if tuple(chunk.shape[1:]) != self.frame_shape or chunk.dtype != self.dtype:
            raise ValueError(
                f"chunk {tuple(chunk.shape)} {chunk.dtype} does not fit [k, {self.frame_shape}] {self.dtype}"
            )
        data = _raw_bytes(chunk)
        self.file.write(data)
        self.frames += chunk.shape[0]
        self.data_bytes += len(data)

    def finish(self, metadata: dict, extra: dict[str, torch.Tensor] | None = None) -> None:
        header = {
            self.name: {
                "dtype": _DTYPE_NAMES[self.dtype],
                "shape": [1, self.frames, *self.frame_shape],
                "data_offsets": [0, self.data_bytes],
            }
        }
        offset = self.data_bytes
        for key, tensor in (extra or {}).items():
            data = _raw_bytes(tensor)
            header[key] = {
                "dtype": _DTYPE_NAMES[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + len(data)],
            }
            self.file.write(data)
            offset += len(data)
        header["__metadata__"] = {k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}
        text = json.dumps(header, separators=(",", ":")).encode()
        if len(text) <= _HEADER_RESERVE:
            # Trailing spaces are valid JSON padding, which the format allows.
            self.file.seek(0)
            self.file.write(struct.pack("<Q", _HEADER_RESERVE) + text.ljust(_HEADER_RESERVE))
            self.file.close()
        else:
            self.file.close()
            self._rewrite_with_header(text)

    def _rewrite_with_header(self, text: bytes) -> None:
        text = text.ljust(-(-len(text) // 8) * 8)
        moved = self.path.with_name(self.path.name + ".data")
        os.replace(self.path, moved)
        try:
            with open(moved, "rb") as src, open(self.path, "wb") as dst:
                dst.write(struct.pack("<Q", len(text)) + text)
                src.seek(8 + _HEADER_RESERVE)
                shutil.copyfileobj(src, dst, 1 << 22)
        finally:
            moved.unlink()


@dataclass
class Tokens:
    """A token file in memory: its tensors by name and its decoded metadata."""

    tensors: dict[str, torch.Tensor]
    metadata: dict

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]


def read_metadata(path) -> dict:
    """The metadata of a token file, without reading its tensors."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_tokens(path, device: str = "cpu") -> Tokens:
    """Load a visual or audio token file.

    Visual files hold `latents` (CV: bf16 [1, t, h, w, 16]) or `indices` (DV: uint16
    [1, t, h, w]; cast to int64 before decoding or embedding) and `frame_spans` (int64
    [t, 2]: the video frames [start, end) each latent frame stands for). Audio files hold
    `codes` (uint16 [1, n, 9], time-major) and `code_ranges` (int64 [t, 2]: the code
    frames [start, end) of each latent frame, tiling [0, n) exactly).
    """
    from safetensors.torch import load_file

    return Tokens(load_file(str(path), device=device), read_metadata(path))
