"""Token files: safetensors written incrementally, read with the standard library.

A safetensors file is an 8-byte header length, a JSON header (tensor dtypes, shapes and
byte ranges, plus a string-to-string metadata dictionary) and the raw tensor bytes. The
writer reserves room for the header, streams one growing tensor after it, and fills the
header in at the end, so a long video's tokens never sit in memory. Every metadata value
is stored JSON-encoded, so numbers, lists and nested records survive the round trip.
"""

from __future__ import annotations

import json
import math
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
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
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


class TokenFileReader:
    """Parts of a token file, read by byte range (`os.pread`): the latent frames of a clip
    cost their own bytes, however long the video. `bytes_read` counts what was read."""

    def __init__(self, path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            (size,) = struct.unpack("<Q", self._pread(8, 0))
            file_size = os.fstat(self._fd).st_size
            if size > file_size - 8:  # garbage, not a length: do not try to allocate it
                raise ValueError(f"a header of {size} bytes in a file of {file_size}")
            header = json.loads(self._pread(size, 8))
        except (struct.error, ValueError) as err:
            self.close()
            raise ValueError(f"{self.path}: not a safetensors file ({err})") from None
        self.metadata = {k: json.loads(v) for k, v in header.pop("__metadata__", {}).items()}
        self._entries = header
        self._data_start = 8 + size
        self.bytes_read = 8 + size

    def _pread(self, size: int, offset: int) -> bytes:
        data = os.pread(self._fd, size, offset)
        if len(data) != size:
            raise ValueError(f"{self.path}: ends early ({len(data)} of {size} bytes at {offset})")
        return data

    def shape(self, name: str) -> list[int]:
        return list(self._entries[name]["shape"])

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor `name` (for the small ones: frame_spans, code_ranges)."""
        begin, end = self._entries[name]["data_offsets"]
        return self._tensor(name, 0, end - begin, self.shape(name))

    def read_frames(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of a streamed tensor `name` ([1, n, ...] gives [stop - start, ...])."""
        shape = self.shape(name)
        if len(shape) < 2 or shape[0] != 1 or not 0 <= start <= stop <= shape[1]:
            raise IndexError(f"{self.path}: frames [{start}, {stop}) of {name} {shape}")
        frame_bytes = _DTYPES[self._entries[name]["dtype"]].itemsize * math.prod(shape[2:])
        return self._tensor(
            name, start * frame_bytes, (stop - start) * frame_bytes, [stop - start, *shape[2:]]
        )

    def _tensor(self, name: str, offset: int, size: int, shape: list[int]) -> torch.Tensor:
        entry = self._entries[name]
        dtype = _DTYPES[entry["dtype"]]
        if not size:
            return torch.empty(shape, dtype=dtype)
        data = bytearray(self._pread(size, self._data_start + entry["data_offsets"][0] + offset))
        self.bytes_read += size
        return torch.frombuffer(data, dtype=dtype).reshape(shape)

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    __del__ = close

    def __enter__(self) -> TokenFileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
