"""Token files: streamed safetensors that the standard library reads back exactly."""

import struct

import pytest
import torch
from safetensors.torch import load_file

from avtokens import load_tokens
from avtokens.tokenfile import TokenFileWriter, read_metadata


def test_streamed_tensor_and_metadata_round_trip(tmp_path):
    path = tmp_path / "t.safetensors"
    chunks = [torch.randn(n, 3, 5, 16).to(torch.bfloat16) for n in (3, 3, 1)]
    writer = TokenFileWriter(path, "latents", torch.bfloat16, (3, 5, 16))
    for chunk in chunks:
        writer.append(chunk)
    meta = {"fps": "30000/1001", "count": 7, "nested": {"a": [1, 2]}, "flag": True, "none": None}
    writer.finish(meta, extra={"frame_spans": torch.arange(14).view(7, 2)})

    plain = load_file(str(path))  # the reference reader accepts the file
    assert torch.equal(plain["latents"][0], torch.cat(chunks))
    tokens = load_tokens(path)
    assert tokens["latents"].shape == (1, 7, 3, 5, 16) and tokens["latents"].dtype == torch.bfloat16
    assert torch.equal(tokens["frame_spans"], torch.arange(14).view(7, 2))
    assert tokens.metadata == meta and read_metadata(path) == meta


def test_uint16_indices_keep_values_above_int16(tmp_path):
    path = tmp_path / "i.safetensors"
    values = torch.tensor([[[0, 32767], [32768, 63999]]], dtype=torch.int64)
    writer = TokenFileWriter(path, "indices", torch.uint16, (2, 2))
    writer.append(values.to(torch.uint16))
    writer.finish({})
    assert load_tokens(path)["indices"].to(torch.int64).tolist() == [values.tolist()]


def test_metadata_larger_than_the_reserved_header_is_moved_into_place(tmp_path):
    path = tmp_path / "big.safetensors"
    writer = TokenFileWriter(path, "codes", torch.uint16, (9,))
    writer.append(torch.ones(4, 9, dtype=torch.uint16))
    writer.finish({"long": "x" * 200_000})
    header_len = struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert header_len > 200_000 and header_len % 8 == 0
    assert load_tokens(path)["codes"].shape == (1, 4, 9)
    assert not list(tmp_path.glob("*.data"))


def test_chunks_of_the_wrong_shape_are_refused(tmp_path):
    writer = TokenFileWriter(tmp_path / "x.safetensors", "codes", torch.uint16, (9,))
    with pytest.raises(ValueError, match="does not fit"):
        writer.append(torch.ones(4, 8, dtype=torch.uint16))
