"""Token files: streamed safetensors that the standard library reads back exactly."""

import gc
import os
import struct
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from avtokens import load_tokens
from avtokens.tokenfile import TokenFileReader, TokenFileWriter, read_metadata
from avtokens.tokenfile import load_tokens as load_tokens_from_module


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


def written(path, chunks, metadata, extra):
    """A token file of bf16 latents [1, n, 3, 5, 16] streamed in `chunks`, plus `extra`."""
    writer = TokenFileWriter(path, "latents", torch.bfloat16, (3, 5, 16))
    for chunk in chunks:
        writer.append(chunk)
    writer.finish(metadata, extra=extra)
    return path


def test_small_tensors_after_the_streamed_one_each_keep_their_own_bytes(tmp_path):
    latents = torch.randn(4, 3, 5, 16).to(torch.bfloat16)
    spans = torch.tensor([[0, 1], [1, 9], [9, 17], [17, 20]])
    ranges = torch.tensor([[0, 4], [4, 32], [32, 59], [59, 70]])
    path = written(tmp_path / "t.safetensors", [latents], {}, {"frame_spans": spans, "code_ranges": ranges})
    plain = load_file(str(path))  # the reference reader
    assert torch.equal(plain["frame_spans"], spans) and torch.equal(plain["code_ranges"], ranges)
    assert torch.equal(plain["latents"][0], latents)


def test_the_header_starts_with_a_brace_as_the_format_requires(tmp_path):
    # safetensors: "The header data MUST begin with a { character"; padding goes after it.
    small = written(tmp_path / "s.safetensors", [torch.zeros(1, 3, 5, 16, dtype=torch.bfloat16)], {}, {})
    big = written(tmp_path / "b.safetensors", [torch.zeros(1, 3, 5, 16, dtype=torch.bfloat16)],
                  {"long": "x" * 100_000}, {})  # fmt: skip
    for path in (small, big):
        data = path.read_bytes()
        assert data[8:9] == b"{"
        header_len = struct.unpack("<Q", data[:8])[0]
        assert data[8 : 8 + header_len].rstrip(b" ").endswith(b"}")


def test_the_same_record_built_in_another_order_gives_the_same_bytes(tmp_path):
    # Token files are byte-identical run to run (README, Determinism): a record's keys are
    # stored sorted, however its dict was built.
    chunk = torch.ones(2, 3, 5, 16, dtype=torch.bfloat16)
    one = written(tmp_path / "1.safetensors", [chunk], {"a": 1, "b": {"x": 1, "y": {"p": 0, "q": 1}}}, {})
    two = written(tmp_path / "2.safetensors", [chunk], {"a": 1, "b": {"y": {"q": 1, "p": 0}, "x": 1}}, {})
    assert one.read_bytes() == two.read_bytes()


def test_the_reader_reads_frames_by_byte_range(tmp_path):
    latents = torch.randn(7, 3, 5, 16).to(torch.bfloat16)
    spans = torch.arange(14).view(7, 2)
    meta = {"fps": "25/1", "nested": {"a": [1, 2]}}
    path = written(tmp_path / "t.safetensors", [latents[:3], latents[3:]], meta, {"frame_spans": spans})
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    frame_bytes = 3 * 5 * 16 * 2  # bf16
    with TokenFileReader(path) as reader:
        assert reader.metadata == meta and reader.bytes_read == header
        assert reader.shape("latents") == [1, 7, 3, 5, 16] and reader.shape("frame_spans") == [7, 2]
        assert torch.equal(reader.read_frames("latents", 2, 5), latents[2:5])
        assert reader.bytes_read == header + 3 * frame_bytes
        assert torch.equal(reader.read_frames("latents", 0, 7), latents)
        assert torch.equal(reader.read_frames("latents", 6, 7), latents[6:])
        assert reader.bytes_read == header + 11 * frame_bytes
        none = reader.read_frames("latents", 7, 7)
        assert none.shape == (0, 3, 5, 16) and none.dtype == torch.bfloat16
        assert reader.bytes_read == header + 11 * frame_bytes  # nothing read for nothing
        assert torch.equal(reader.read("frame_spans"), spans)
        assert reader.bytes_read == header + 11 * frame_bytes + 14 * 8


@pytest.mark.parametrize("start, stop", [(-1, 2), (3, 2), (0, 8), (8, 8)])
def test_frames_outside_the_tensor_are_refused(tmp_path, start, stop):
    path = written(tmp_path / "t.safetensors", [torch.zeros(7, 3, 5, 16, dtype=torch.bfloat16)], {},
                   {"frame_spans": torch.zeros(7, 2, dtype=torch.int64)})  # fmt: skip
    with TokenFileReader(path) as reader, pytest.raises(IndexError, match=r"frames \[.*\) of latents"):
        reader.read_frames("latents", start, stop)


def test_only_tensors_laid_out_as_one_sequence_of_frames_are_read_by_frame(tmp_path):
    path = tmp_path / "t.safetensors"
    writer = TokenFileWriter(path, "codes", torch.uint16, ())  # [1, n]: frames without a shape
    writer.append(torch.tensor([1, 40000, 65535], dtype=torch.uint16))
    writer.finish({}, extra={"code_ranges": torch.zeros(3, 2, dtype=torch.int64), "one": torch.ones(4)})
    with TokenFileReader(path) as reader:
        assert reader.read_frames("codes", 1, 3).to(torch.int64).tolist() == [40000, 65535]
        for name in ("code_ranges", "one"):  # [3, 2] is not [1, n, ...]; [4] has no frame axis
            with pytest.raises(IndexError):
                reader.read_frames(name, 0, 1)
        assert reader.read("one").tolist() == [1.0] * 4


def test_the_reader_reads_what_the_reference_writer_wrote(tmp_path):
    path = tmp_path / "ref.safetensors"
    tensors = {"indices": torch.arange(24, dtype=torch.int32).view(1, 4, 2, 3), "b": torch.ones(2, 2)}
    save_file(tensors, str(path), metadata={"count": "4"})
    with TokenFileReader(path) as reader:
        assert reader.metadata == {"count": 4}
        assert torch.equal(reader.read_frames("indices", 1, 3), tensors["indices"][0, 1:3])
        assert torch.equal(reader.read("b"), tensors["b"])
    save_file(tensors, str(path))  # no metadata at all
    with TokenFileReader(path) as reader:
        assert reader.metadata == {}
    save_file({}, str(path), metadata={"empty": "true"})  # a header and nothing after it
    with TokenFileReader(path) as reader:
        assert reader.metadata == {"empty": True}


def test_a_file_that_is_not_safetensors_or_is_cut_short_is_refused(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a token file at all")  # its first 8 bytes read as a length of 8e18
    with pytest.raises(ValueError, match="bad.safetensors: not a safetensors file"):
        TokenFileReader(bad)
    bad.write_bytes(struct.pack("<Q", 10) + b'{"a": 1}')  # a header 2 bytes longer than the file
    with pytest.raises(ValueError, match=r"not a safetensors file \(a header of 10 bytes in a file of 16\)"):
        TokenFileReader(bad)
    bad.write_bytes(b"\xff" * 8 + b"{}")  # the length is unsigned: 2^64 - 1, not -1
    with pytest.raises(ValueError, match=f"a header of {2**64 - 1} bytes in a file of 10"):
        TokenFileReader(bad)
    bad.write_bytes(struct.pack("<Q", 4) + b"{no}")  # the length is right, the JSON is not
    with pytest.raises(ValueError, match="not a safetensors file"):
        TokenFileReader(bad)
    bad.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="not a safetensors file"):
        TokenFileReader(bad)
    path = written(tmp_path / "t.safetensors", [torch.zeros(7, 3, 5, 16, dtype=torch.bfloat16)], {}, {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])  # the last frame loses 100 of its 480 bytes
    with TokenFileReader(path) as reader:
        assert reader.read_frames("latents", 0, 6).shape == (6, 3, 5, 16)
        with pytest.raises(ValueError, match=r"ends early \(380 of 480 bytes at"):
            reader.read_frames("latents", 6, 7)


def test_the_reader_leaves_no_file_open(tmp_path):
    path = written(tmp_path / "t.safetensors", [torch.zeros(2, 3, 5, 16, dtype=torch.bfloat16)], {}, {})
    before = len(os.listdir("/proc/self/fd"))
    with TokenFileReader(path) as reader:
        assert len(os.listdir("/proc/self/fd")) == before + 1
    assert len(os.listdir("/proc/self/fd")) == before
    reader.close()  # closing again is harmless
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ValueError):
        TokenFileReader(bad)
    assert len(os.listdir("/proc/self/fd")) == before  # a refused file is closed too


def test_a_missing_file_is_reported_once_and_cleanly(tmp_path, monkeypatch):
    gc.collect()  # other tests' garbage goes first
    unraisable = []  # errors in __del__ (a reader that never opened its file) would land here
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(FileNotFoundError):
        TokenFileReader(tmp_path / "missing.safetensors")
    gc.collect()
    assert [u for u in unraisable if "TokenFileReader" in repr(u.object)] == []


def test_the_module_loader_reads_onto_the_cpu_by_default(tmp_path):
    path = written(tmp_path / "t.safetensors", [torch.ones(2, 3, 5, 16, dtype=torch.bfloat16)], {"a": 1}, {})
    tokens = load_tokens_from_module(path)
    assert tokens["latents"].device == torch.device("cpu") and tokens.metadata == {"a": 1}
