"""Token files: safetensors written incrementally, read with the standard library.

A safetensors file is an 8-byte header length, a JSON header (tensor dtypes, shapes and
byte ranges, plus a string-to-string metadata dictionary) and the raw tensor bytes. Every
metadata value is stored JSON-encoded, so numbers, lists and nested records survive the round
trip.

The writer streams one growing tensor into the file from its first byte, so a long video's
tokens never sit in memory, and at `finish` moves the tensor bytes up by the header's size
(in place, last chunk first) and writes the header in front of them. The header is padded
with spaces to a multiple of 8 bytes, as safetensors' own writer pads it, so the tensors
start 8-byte aligned: a file is its tensors, 8 bytes of length, its JSON header and at most
7 spaces. (A 64 KiB reserve made the example clip's files ten times their tensors.)

The header cannot go first: its size depends on the frame count, the small tensors and the
metadata, known only at `finish`, so any reserve, however estimated, ends up padded or too
small. The move costs a second read and write of the tensor bytes, just written and in the
page cache: 0.36 s for the 3.1 GB of an hour of 1080p in CV8x16x16 (docs/benchmarks.md).
It needs no disk space beyond the finished file's and leaves no second file behind. Rather
than the alternatives:
- streaming to a side file and copying it behind the header costs the same copy (the
  kernel's copy_file_range was slower here), twice the data's disk space at the end, and a
  second file to clean up after a killed process;
- inserting or collapsing a file range (fallocate) works on some file systems only and in
  whole blocks, so the header would still be padded to a block.
The file is valid only once `finish` returns: write to a temporary path (`atomic_output`).
Files written with the earlier 64 KiB header are valid safetensors and read as before:
readers take the header's length from the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avtokens.storage import ObjectRanges, is_url

if TYPE_CHECKING:
    import torch

# torch is imported where torch tensors are made, not here: the jobs that only read metadata
# or small tensors (comparison videos, the manifest, alignment, summaries) then start without
# it, a second or two each. The writer takes numpy arrays too (every dtype but bfloat16).
_DTYPE_NAMES = {"bfloat16": "BF16", "float32": "F32", "uint16": "U16", "int32": "I32", "int64": "I64"}
_TORCH_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}
_MOVE_CHUNK = 1 << 21  # bytes moved per read and write at `finish` (a CPU cache's worth)


def _dtype_key(dtype: torch.dtype | np.dtype) -> str:
    """The same name for a torch dtype and its numpy twin ("uint16")."""
    return str(dtype).removeprefix("torch.")


def _dtype_name(dtype: torch.dtype | np.dtype) -> str:
    return _DTYPE_NAMES[_dtype_key(dtype)]


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, _TORCH_DTYPES[name])


def _raw_bytes(tensor: torch.Tensor | np.ndarray) -> bytes:
    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor).tobytes()
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    if tensor.dtype in (torch.bfloat16, torch.uint16):
        tensor = tensor.view(torch.int16)
    return tensor.numpy().tobytes()


class TokenFileWriter:
    """Write `[1, n, *frame_shape]` tensor `name` by appending `[k, *frame_shape]` chunks
    (torch tensors or numpy arrays of `dtype`, a torch or numpy dtype).

    Small tensors given to `finish` follow the streamed one. Write to a temporary path
    (see `atomic_output`): the file is valid only once `finish` returns.
    """

    def __init__(self, path, name: str, dtype: torch.dtype | np.dtype, frame_shape: tuple[int, ...]):
        self.path, self.name, self.dtype = Path(path), name, dtype
        self.frame_shape = tuple(frame_shape)
        self.frames = 0
        self.data_bytes = 0
        self.file = open(self.path, "w+b")  # the tensors from byte 0; the header goes in front at the end

    def append(self, chunk: torch.Tensor | np.ndarray) -> None:
        if tuple(chunk.shape[1:]) != self.frame_shape or _dtype_key(chunk.dtype) != _dtype_key(self.dtype):
            raise ValueError(
                f"chunk {tuple(chunk.shape)} {chunk.dtype} does not fit [k, {self.frame_shape}] {self.dtype}"
            )
        data = _raw_bytes(chunk)
        self.file.write(data)
        self.frames += chunk.shape[0]
        self.data_bytes += len(data)

    def finish(self, metadata: dict, extra: dict[str, torch.Tensor | np.ndarray] | None = None) -> None:
        try:
            header = {
                self.name: {
                    "dtype": _dtype_name(self.dtype),
                    "shape": [1, self.frames, *self.frame_shape],
                    "data_offsets": [0, self.data_bytes],
                }
            }
            offset = self.data_bytes
            for key, tensor in (extra or {}).items():
                data = _raw_bytes(tensor)
                header[key] = {
                    "dtype": _dtype_name(tensor.dtype),
                    "shape": list(tensor.shape),
                    "data_offsets": [offset, offset + len(data)],
                }
                self.file.write(data)
                offset += len(data)
            header["__metadata__"] = {k: json.dumps(v, sort_keys=True) for k, v in metadata.items()}
            text = json.dumps(header, separators=(",", ":")).encode()
            # Spaces after the JSON, as the format allows, up to a multiple of 8: the tensors
            # then start 8-byte aligned, as in files safetensors writes itself.
            text = text.ljust(-(-len(text) // 8) * 8)
            head = struct.pack("<Q", len(text)) + text
            self.file.flush()
            fd = self.file.fileno()
            _move_up(fd, offset, len(head))
            _pwrite_all(fd, head, 0)
        finally:
            self.file.close()


def _move_up(fd: int, size: int, by: int) -> None:
    """Move bytes [0, size) of file `fd` to [by, by + size), the last chunk first so that no
    chunk overwrites bytes still to be moved."""
    buffer = memoryview(bytearray(min(size, _MOVE_CHUNK)))
    end = size
    while end:
        chunk = buffer[: min(len(buffer), end)]
        start = end - len(chunk)
        if os.preadv(fd, [chunk], start) != len(chunk):
            raise OSError(f"a token file shrank while it was written (at byte {start})")
        _pwrite_all(fd, chunk, start + by)
        end = start


def _pwrite_all(fd: int, data, offset: int) -> None:
    data = memoryview(data)
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class _LocalFile:
    """Byte ranges of a local file (`os.preadv`, straight into the caller's buffer)."""

    def __init__(self, path: Path):
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read_into(self, view: memoryview, offset: int) -> int:
        return os.preadv(self._fd, [view], offset)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class TokenFileReader:
    """Parts of a token file, read by byte range: the latent frames of a clip cost their own
    bytes, however long the video. `bytes_read` counts what was read.

    `path`: a local file, or an object's URL (`s3://bucket/key`: `avtokens.storage`, each
    range one ranged request; `storage_options` go to its fsspec filesystem)."""

    def __init__(self, path, storage_options: dict | None = None):
        remote = is_url(path)
        self.path = path if remote else Path(path)
        self._file = ObjectRanges(path, storage_options) if remote else _LocalFile(self.path)
        try:
            (size,) = struct.unpack("<Q", self._read(8, 0))
            if size > self._file.size - 8:  # garbage, not a length: do not try to allocate it
                raise ValueError(f"a header of {size} bytes in a file of {self._file.size}")
            header = json.loads(self._read(size, 8))
        except (struct.error, ValueError) as err:
            self.close()
            raise ValueError(f"{self.path}: not a safetensors file ({err})") from None
        self.metadata = {k: json.loads(v) for k, v in header.pop("__metadata__", {}).items()}
        self._entries = header
        self._data_start = 8 + size
        self.bytes_read = 8 + size

    def _read(self, size: int, offset: int) -> bytearray:
        """`size` bytes from byte `offset`, read into the buffer they are returned in."""
        data, done = bytearray(size), 0
        view = memoryview(data)
        while done < size:
            count = self._file.read_into(view[done:], offset + done)
            if count == 0:
                raise ValueError(f"{self.path}: ends early ({done} of {size} bytes at {offset})")
            done += count
        return data

    def shape(self, name: str) -> list[int]:
        return list(self._entries[name]["shape"])

    def shapes(self) -> dict[str, list[int]]:
        """Every tensor's shape, by name in sorted order."""
        return {name: self.shape(name) for name in sorted(self._entries)}

    def read(self, name: str) -> torch.Tensor:
        """The whole tensor `name` (for the small ones: frame_spans, code_ranges)."""
        begin, end = self._entries[name]["data_offsets"]
        return self._tensor(name, 0, end - begin, self.shape(name))

    def array(self, name: str) -> np.ndarray:
        """The whole tensor `name` as a numpy array, without torch (not for bfloat16, which
        numpy lacks)."""
        entry = self._entries[name]
        if entry["dtype"] == "BF16":
            raise TypeError(f"{self.path}: {name} is bfloat16, which numpy cannot hold; use read()")
        begin, end = entry["data_offsets"]
        data = self._data(name, 0, end - begin)
        return np.frombuffer(data, dtype=_TORCH_DTYPES[entry["dtype"]]).reshape(entry["shape"])

    def read_frames(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Frames [start, stop) of a streamed tensor `name` ([1, n, ...] gives [stop - start, ...])."""
        shape = self.shape(name)
        if len(shape) < 2 or shape[0] != 1 or not 0 <= start <= stop <= shape[1]:
            raise IndexError(f"{self.path}: frames [{start}, {stop}) of {name} {shape}")
        frame_bytes = _torch_dtype(self._entries[name]["dtype"]).itemsize * math.prod(shape[2:])
        return self._tensor(
            name, start * frame_bytes, (stop - start) * frame_bytes, [stop - start, *shape[2:]]
        )

    def _tensor(self, name: str, offset: int, size: int, shape: list[int]) -> torch.Tensor:
        import torch

        entry = self._entries[name]
        dtype = _torch_dtype(entry["dtype"])
        if not size:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(self._data(name, offset, size), dtype=dtype).reshape(shape)

    def _data(self, name: str, offset: int, size: int) -> bytearray:
        """`size` bytes of tensor `name` from byte `offset` of its data, counted in `bytes_read`
        (a tensor or array on the buffer copies nothing)."""
        data = self._read(size, self._data_start + self._entries[name]["data_offsets"][0] + offset)
        self.bytes_read += size
        return data

    def close(self) -> None:
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

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
    with TokenFileReader(path) as reader:
        return reader.metadata


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
