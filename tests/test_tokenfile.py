"""Token files: streamed safetensors that the standard library reads back exactly."""

import errno
import gc
import json
import os
import struct
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from avtokens import AvTokensError, load_tokens, tokenfile
from avtokens.atomic import atomic_output
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


# The DV8x16x16 token files of the bundled example clip (4 s at 320x180, 29.97 fps): their
# records as the workflow wrote them, and tensors of their shapes.
EXAMPLE_SOURCE = {
    "file": "example.mp4",
    "name": "example",
    "size": 283723,
    "sha256": "79ebbecf7f9b28745990afe35398576d280e70ab0fbc6b57a3c9f34d7c708e38",
}
EXAMPLE_RUNTIME = {"device": "cpu", "torch": "2.11.0+cu130"}
EXAMPLE_VISUAL = {
    "format": "avtokens-visual/1", "project_version": "0.1.0", "source": EXAMPLE_SOURCE,
    "video": {"audio_channels": 2, "audio_rate": 48000, "audio_stream": 1, "dropped_frames": 0,
              "duration": 4.004, "field_order": "progressive", "filled_frames": 0, "fps": "30000/1001",
              "frame_count": 120, "has_audio": True, "height": 180, "packet_count": 120,
              "padded_height": 192, "padded_width": 320, "primaries": None, "sample_aspect_ratio": "1:1",
              "timing_deviation": 0.0, "transfer": None, "variable_rate": False, "video_start": 0.0,
              "video_stream": 0, "video_streams": 1, "width": 320},
    "picture": {"deinterlaced": None, "display_aspect_ratio": "16:9", "filters": "",
                "frame_rate": "30000/1001", "height": 180, "pixels": "square", "sample_aspect_ratio": "1:1",
                "stored_height": 180, "stored_width": 320, "tone_mapped": None, "video_stream": 0,
                "width": 320},
    "windows": {"count": 1, "frames": 121, "last_padded_frames": 121, "last_real_frames": 120},
    "latent": {"channels": None, "frames": 16, "height": 12, "tensor": "indices", "width": 20},
    "tokenizer": {"decoder_sha256": "ab8eeecda860fa73faf40ed986e68b64265bb6bacef7776e7a2fd394a6d18822",
                  "encoder": {"dtype": "float32", "engine": "torchscript", "stand_in": True,
                              "file": "resources/demo_weights/Cosmos-0.1-Tokenizer-DV8x16x16/encoder.jit",
                              "repo": "nvidia/Cosmos-0.1-Tokenizer-DV8x16x16",
                              "sha256": "c4a1ce08c2af730fd511be3a66c2750f58cffd66ec208aa11f09f50e2d7794be"},
                  "kind": "DV", "repo": "nvidia/Cosmos-0.1-Tokenizer-DV8x16x16", "spatial": 16,
                  "temporal": 8, "weights": "demo", "window": 121},
    "stand_in_weights": True, "runtime": EXAMPLE_RUNTIME,
}  # fmt: skip
EXAMPLE_AUDIO = {
    "format": "avtokens-audio/1", "project_version": "0.1.0", "source": EXAMPLE_SOURCE,
    "audio": {"channel_policy": "downmixed to mono by ffmpeg before coding", "code_frames": 345,
              "code_rate": "44100/512", "codebook_size": 1024, "codebooks": 9, "has_audio": True, "hop": 512,
              "sample_rate": 44100, "source_channels": 2, "source_rate": 48000, "wav_samples": 176400},
    "alignment": {"audio_codes": {
                      "file": "example_codes.safetensors",
                      "sha256": "faff4cd5da1cda9d59967a871f528e8222fc4d16194519eac51d5845207f3fc3"},
                  "fps": "30000/1001", "frame_count": 120, "latent_frames": 16,
                  "rule": "code frame k belongs to the latent frame whose time span holds k*hop/sample_rate",
                  "visual_tokens": "example_visual_tokens.safetensors"},
    "codec": {"codebook_size": 1024, "codebooks": 9, "hop": 512, "stand_in": True,
              "file": "resources/demo_weights/dac/weights_44khz_8kbps_0.0.1.pth",
              "sha256": "051b705bea65612040eed9a9045ab6a1e65b3151a00cb845f90312bfd5e89bb0"},
    "stand_in_weights": True, "runtime": EXAMPLE_RUNTIME,
}  # fmt: skip


def example_files(folder):
    """The example's visual and audio token files, streamed as the workflow streams them
    (the visual one by window, here in chunks of 5 latent frames), and their tensors."""
    rng = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 64000, (16, 12, 20), generator=rng).to(torch.uint16)
    spans = torch.tensor([[0, 1]] + [[1 + 8 * j, min(9 + 8 * j, 120)] for j in range(15)])
    codes = torch.randint(0, 1024, (345, 9), generator=rng).to(torch.uint16)
    ranges = torch.tensor([[0, 3]] + [[3 + 23 * j, min(26 + 23 * j, 345)] for j in range(15)])
    visual, audio = folder / "example_visual_tokens.safetensors", folder / "example_audio_tokens.safetensors"
    writer = TokenFileWriter(visual, "indices", torch.uint16, (12, 20))
    for start in range(0, 16, 5):
        writer.append(indices[start : start + 5])
    writer.finish(EXAMPLE_VISUAL, extra={"frame_spans": spans})
    writer = TokenFileWriter(audio, "codes", torch.uint16, (9,))
    writer.append(codes)
    writer.finish(EXAMPLE_AUDIO, extra={"code_ranges": ranges})
    return {
        visual: ({"indices": indices[None], "frame_spans": spans}, EXAMPLE_VISUAL),
        audio: ({"codes": codes[None], "code_ranges": ranges}, EXAMPLE_AUDIO),
    }


def test_a_token_file_is_its_tensors_its_header_and_at_most_7_bytes_of_padding(tmp_path):
    # Issue 27: a 64 KiB header reserve made the example's files 145 KB for 14 KB of tensors.
    sizes = {}
    for path, (tensors, metadata) in example_files(tmp_path).items():
        data = path.read_bytes()
        tensor_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        header_len = struct.unpack("<Q", data[:8])[0]
        text = data[8 : 8 + header_len].rstrip(b" ")
        header = json.loads(text)
        assert text == json.dumps(header, separators=(",", ":")).encode()  # nothing but the JSON
        padding = len(data) - tensor_bytes - 8 - len(text)
        assert padding == -len(text) % 8 < 8 and header_len % 8 == 0  # the tensors 8-byte aligned
        assert {k: json.loads(v) for k, v in header["__metadata__"].items()} == metadata
        sizes[path.name] = (len(data), tensor_bytes, len(data) - tensor_bytes)

        # The size safetensors' own writer gives the same tensors and metadata, but for the
        # digits of the byte ranges (it lays the small tensors out first) and the alignment.
        reference = tmp_path / f"reference_{path.name}"
        save_file(tensors, str(reference), metadata=header["__metadata__"])
        assert abs(reference.stat().st_size - len(data)) <= 8
        # Read back by safetensors (code that is not ours) and by our reader.
        with safe_open(str(path), framework="pt") as opened:
            assert {k: json.loads(v) for k, v in opened.metadata().items()} == metadata
            for name, tensor in tensors.items():
                assert torch.equal(opened.get_tensor(name), tensor)
        with TokenFileReader(path) as reader:
            assert reader.metadata == metadata and reader.bytes_read == 8 + header_len
            for name, tensor in tensors.items():
                assert torch.equal(reader.read(name), tensor)
    # The overhead over the tensors' bytes is the header alone: its 8-byte length, the JSON
    # (2,081 and 1,397 bytes, nearly all of it the records) and 7 and 3 spaces to align the
    # tensors. It was 65,544 bytes a file (73,480 and 72,010 bytes in all).
    assert sizes == {
        "example_visual_tokens.safetensors": (7936 + 2096, 7936, 2096),
        "example_audio_tokens.safetensors": (6466 + 1408, 6466, 1408),
    }


def test_a_header_larger_than_any_reserve_is_written_at_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(tokenfile, "_MOVE_CHUNK", 1000)  # the tensor bytes move in 10 chunks
    path = tmp_path / "big.safetensors"
    codes = torch.arange(4 * 9 * 1000).view(-1, 9).remainder(65536).to(torch.uint16)  # 72,000 bytes
    writer = TokenFileWriter(path, "codes", torch.uint16, (9,))
    writer.append(codes[:1000])
    writer.append(codes[1000:])
    writer.finish({"long": "x" * 200_000}, extra={"code_ranges": torch.tensor([[0, 4000]])})
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    assert 200_000 < header_len == len(data) - 8 - 72_000 - 16 and header_len % 8 == 0
    assert data[8 + header_len - 8 : 8 + header_len].count(b" ") < 8
    tokens = load_file(str(path))
    assert torch.equal(tokens["codes"][0], codes) and tokens["code_ranges"].tolist() == [[0, 4000]]
    assert read_metadata(path) == {"long": "x" * 200_000}
    assert os.listdir(tmp_path) == ["big.safetensors"]


@pytest.mark.parametrize("chunk", [1, 7, 8, 479, 480, 481, 1 << 24])
def test_the_tensors_move_behind_the_header_whatever_the_chunk_size(tmp_path, monkeypatch, chunk):
    # Frames of 480 bytes, a header of a few hundred: chunks smaller than the distance moved,
    # between it and a frame, exactly a frame, and larger than the whole file.
    latents = torch.randn(7, 3, 5, 16).to(torch.bfloat16)
    spans = torch.arange(14).view(7, 2)
    expected = written(tmp_path / "one.safetensors", [latents], {"a": 1}, {"frame_spans": spans}).read_bytes()
    monkeypatch.setattr(tokenfile, "_MOVE_CHUNK", chunk)
    path = written(tmp_path / "t.safetensors", [latents[:2], latents[2:]], {"a": 1}, {"frame_spans": spans})
    assert path.read_bytes() == expected
    plain = load_file(str(path))
    assert torch.equal(plain["latents"][0], latents) and torch.equal(plain["frame_spans"], spans)


def test_a_file_with_no_tensor_bytes_is_its_header(tmp_path):
    path = tmp_path / "empty.safetensors"
    TokenFileWriter(path, "codes", torch.uint16, (9,)).finish({"code_frames": 0})
    data = path.read_bytes()
    text = (
        b'{"codes":{"dtype":"U16","shape":[1,0,9],"data_offsets":[0,0]},"__metadata__":{"code_frames":"0"}}'
    )
    assert data == struct.pack("<Q", 104) + text.ljust(104)
    assert load_file(str(path))["codes"].shape == (1, 0, 9) and read_metadata(path) == {"code_frames": 0}


def test_writes_the_system_cuts_short_are_completed(tmp_path, monkeypatch):
    latents = torch.randn(7, 3, 5, 16).to(torch.bfloat16)
    expected = written(tmp_path / "one.safetensors", [latents], {"a": 1}, {}).read_bytes()
    pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: pwrite(fd, bytes(data)[:100], offset))
    assert written(tmp_path / "t.safetensors", [latents], {"a": 1}, {}).read_bytes() == expected


def test_a_file_cut_short_under_the_writer_is_refused_not_filled_in(tmp_path):
    writer = TokenFileWriter(tmp_path / "t.safetensors", "codes", torch.uint16, (9,))
    writer.append(torch.ones(40, 9, dtype=torch.uint16))
    writer.file.flush()
    os.truncate(writer.path, 100)  # 720 bytes written, 100 left
    with pytest.raises(OSError, match=r"a token file shrank while it was written \(at byte 0\)"):
        writer.finish({})


def test_a_failure_while_writing_leaves_no_file_and_none_open(tmp_path, monkeypatch):
    # The file is the only one ever written (no side file): in its staging folder it goes
    # with the rest when the write fails, and the writer's descriptor is closed.
    dest = tmp_path / "out" / "clip_visual_tokens.safetensors"
    dest.parent.mkdir()
    before = len(os.listdir("/proc/self/fd"))

    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(AvTokensError, match="clip_visual_tokens.safetensors: cannot be written \\(No space"):
        with atomic_output(dest) as tmp:
            writer = TokenFileWriter(tmp, "latents", torch.bfloat16, (3, 5, 16))
            writer.append(torch.ones(4, 3, 5, 16, dtype=torch.bfloat16))
            assert os.listdir(dest.parent) == [".clip_visual_tokens.safetensors.partial"]
            assert os.listdir(tmp.parent) == [tmp.name]  # the tensors so far, in the temporary file
            monkeypatch.setattr(os, "pwrite", full_disk)
            writer.finish({"a": 1})
    assert os.listdir(dest.parent) == [] and len(os.listdir("/proc/self/fd")) == before
    monkeypatch.undo()
    with pytest.raises(ValueError, match="does not fit"):  # a failure between two chunks
        with atomic_output(dest) as tmp:
            writer = TokenFileWriter(tmp, "latents", torch.bfloat16, (3, 5, 16))
            writer.append(torch.ones(4, 3, 5, 16, dtype=torch.bfloat16))
            writer.append(torch.ones(4, 3, 5, 15, dtype=torch.bfloat16))
    assert os.listdir(dest.parent) == []
    with atomic_output(dest) as tmp:
        written(tmp, [torch.ones(4, 3, 5, 16, dtype=torch.bfloat16)], {"a": 1}, {})
    assert os.listdir(dest.parent) == [dest.name] and read_metadata(dest) == {"a": 1}


def test_files_with_the_earlier_64_kib_header_still_read(tmp_path):
    # Token files written before issue 27 reserved 65,536 bytes for the header and padded
    # it with spaces: valid safetensors, read as before.
    latents = torch.randn(3, 3, 5, 16).to(torch.bfloat16)
    spans = torch.arange(6).view(3, 2)
    text = json.dumps({
        "latents": {"dtype": "BF16", "shape": [1, 3, 3, 5, 16], "data_offsets": [0, 1440]},
        "frame_spans": {"dtype": "I64", "shape": [3, 2], "data_offsets": [1440, 1488]},
        "__metadata__": {"fps": json.dumps("25/1")},
    }, separators=(",", ":")).encode()  # fmt: skip
    path = tmp_path / "old.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 16) + text.ljust(1 << 16) + raw(latents) + raw(spans))
    tokens = load_tokens(path)
    assert torch.equal(tokens["latents"][0], latents) and torch.equal(tokens["frame_spans"], spans)
    assert tokens.metadata == {"fps": "25/1"}
    with TokenFileReader(path) as reader:
        assert torch.equal(reader.read_frames("latents", 1, 3), latents[1:])
        assert reader.bytes_read == 8 + (1 << 16) + 2 * 480


def raw(tensor):
    return (
        tensor.view(torch.int16).numpy().tobytes()
        if tensor.dtype == torch.bfloat16
        else tensor.numpy().tobytes()
    )


def test_chunks_of_the_wrong_shape_are_refused(tmp_path):
    writer = TokenFileWriter(tmp_path / "x.safetensors", "codes", torch.uint16, (9,))
    with pytest.raises(ValueError, match="does not fit"):
        writer.append(torch.ones(4, 8, dtype=torch.uint16))


def test_numpy_arrays_are_written_as_the_same_torch_tensors_would_be(tmp_path):
    # What the align_audio job writes without importing torch.
    codes = torch.randint(0, 2**16, (7, 9), dtype=torch.int32).to(torch.uint16)
    ranges = torch.tensor([[0, 1], [1, 4], [4, 7]])
    files = {}
    for kind, (chunk, extra, dtype) in {
        "torch": (codes, ranges, torch.uint16),
        "numpy": (codes.numpy(), ranges.numpy(), np.dtype("uint16")),
    }.items():
        writer = TokenFileWriter(tmp_path / f"{kind}.safetensors", "codes", dtype, (9,))
        writer.append(chunk[:3])
        writer.append(chunk[3:])
        writer.finish({"n": 7}, extra={"code_ranges": extra})
        files[kind] = (tmp_path / f"{kind}.safetensors").read_bytes()
    assert files["numpy"] == files["torch"]
    plain = load_file(str(tmp_path / "numpy.safetensors"))  # the reference reader
    assert torch.equal(plain["codes"][0], codes) and torch.equal(plain["code_ranges"], ranges)
    with pytest.raises(ValueError, match="does not fit"):
        TokenFileWriter(tmp_path / "x.safetensors", "codes", torch.uint16, (9,)).append(
            codes.numpy().astype(np.int16)
        )


def test_the_reader_gives_numpy_arrays_of_every_dtype_numpy_has(tmp_path):
    path = tmp_path / "ref.safetensors"
    codes = torch.arange(60_000, 60_018, dtype=torch.int32).to(torch.uint16).view(1, 2, 9)
    ranges = torch.tensor([[0, 1], [1, 2]])
    tensors = {"codes": codes, "code_ranges": ranges, "latents": torch.ones(1, 2, 16).bfloat16()}
    save_file(tensors, str(path))  # the reference writer
    with TokenFileReader(path) as reader:
        codes, ranges = reader.array("codes"), reader.array("code_ranges")
        assert codes.dtype == np.uint16 and codes.shape == (1, 2, 9) and codes[0, 1, 8] == 60_017
        assert ranges.dtype == np.int64 and ranges.tolist() == [[0, 1], [1, 2]]
        assert reader.bytes_read == 8 + struct.unpack("<Q", path.read_bytes()[:8])[0] + 36 + 32
        with pytest.raises(TypeError, match="latents is bfloat16, which numpy cannot hold"):
            reader.array("latents")


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
        assert reader.shapes() == {"b": [2, 2], "indices": [1, 4, 2, 3]}
        assert list(reader.shapes()) == ["b", "indices"]  # sorted, as safetensors lists them
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
