"""DAC loading and windowed coding, on a stand-in saved in the release file's format; a
video's audio coded once and grouped by each preset's latent frames."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import soundfile
import torch
from helpers import make_clip

from avtokens import AvTokensError, load_tokens
from avtokens.audio import (
    SAMPLE_RATE,
    DacCodec,
    _read_samples,
    _windows,
    decode_codes_files,
    encode_wav_files,
)
from avtokens.audio_tokens import align_codes
from avtokens.media import extract_audio, sha256_of
from avtokens.presets import DAC_WEIGHTS_FILE, make_preset
from avtokens.visual import encode_video_file

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def codec(demo_weights):
    return DacCodec(demo_weights / "dac" / DAC_WEIGHTS_FILE, CPU)


def signal(samples, seed=0):
    t = torch.arange(samples) / SAMPLE_RATE
    noise = torch.randn(samples, generator=torch.Generator().manual_seed(seed))
    return (0.4 * torch.sin(2 * math.pi * (200 + 300 * t) * t) + 0.05 * noise).float()


def test_codes_have_nine_codebooks_of_ten_bits(codec):
    codes = codec.encode(signal(40 * codec.hop))
    assert codes.shape == (40, 9) and codec.codebooks == 9 and codec.hop == 512
    assert codes.min() >= 0 and codes.max() < 1024
    assert codec.stand_in and codec.record["stand_in"]


def test_windowed_encode_equals_whole_file_encode(codec):
    total = 300
    audio = signal(total * codec.hop)
    whole = codec.encode(audio)
    window = 37  # small, odd: many seams
    pieces = [
        codec.encode(audio[c0 * codec.hop : c1 * codec.hop])[s - c0 : e - c0]
        for s, e, c0, c1 in _windows(total, window, codec.encode_context)
    ]
    assert torch.equal(torch.cat(pieces), whole)
    # The context is what makes it exact: with too little, codes near the seams change.
    short = [
        codec.encode(audio[c0 * codec.hop : c1 * codec.hop])[s - c0 : e - c0]
        for s, e, c0, c1 in _windows(total, window, 2)
    ]
    assert not torch.equal(torch.cat(short), whole)


def test_windowed_decode_matches_whole_file_decode(codec):
    codes = codec.encode(signal(120 * codec.hop))
    whole = codec.decode(codes)
    assert whole.shape == (120 * codec.hop,)
    pieces = [
        codec.decode(codes[c0:c1])[(s - c0) * codec.hop : (e - c0) * codec.hop]
        for s, e, c0, c1 in _windows(len(codes), 25, codec.decode_context)
    ]
    torch.testing.assert_close(torch.cat(pieces), whole, atol=1e-4, rtol=0)


def test_reading_past_the_end_of_a_wav_gives_silence(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, np.full(100, 0.5, dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
    with soundfile.SoundFile(path) as wav:
        data = _read_samples(wav, 90, 130)
    assert data.shape == (40,) and torch.all(data[:10] == 0.5) and torch.all(data[10:] == 0)


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path, demo_weights):
    package = torch.load(demo_weights / "dac" / DAC_WEIGHTS_FILE, weights_only=True)
    del package["state_dict"]["decoder.model.0.weight_v"]
    broken = tmp_path / "broken.pth"
    torch.save(package, broken)
    with pytest.raises(AvTokensError, match="missing .*decoder.model.0.weight_v"):
        DacCodec(broken, CPU)


def test_missing_weights_name_the_file(tmp_path):
    with pytest.raises(AvTokensError, match=f"{tmp_path}/nope.pth are missing"):
        DacCodec(tmp_path / "nope.pth", CPU)


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory, demo_weights):
    """Two clips, each with its audio extracted and coded once, and visual token files of
    two presets that cut the frames differently."""
    folder = tmp_path_factory.mktemp("two_videos")
    presets = {
        name: make_preset(name, {"kind": "DV", "temporal": t, "spatial": 16, "window": w, "weights": "demo"})
        for name, t, w in (("w17", 8, 17), ("w9", 8, 9))
    }
    videos = {}
    for name, frames in (("a", 38), ("b", 23)):
        source = make_clip(folder / f"{name}.mp4", 48, 32, frames, rate="30000/1001", audio_channels=2)
        wav, timeline = folder / f"{name}.wav", folder / f"{name}_timeline.json"
        extract_audio(source, name, wav, timeline)
        visual = {}
        for preset in presets.values():
            model = demo_weights / preset.model
            visual[preset.name] = folder / f"{name}_{preset.name}_visual.safetensors"
            encode_video_file(source, visual[preset.name], preset, model, "cpu", 2, name)
        videos[name] = {
            "source": source,
            "wav": wav,
            "timeline": timeline,
            "frames": frames,
            "visual": visual,
            "codes": folder / f"{name}_codes.safetensors",
        }
    encode_wav_files(
        [(v["wav"], v["timeline"], v["codes"]) for v in videos.values()],
        demo_weights / "dac" / DAC_WEIGHTS_FILE,
        "cpu",
        60,
    )
    return folder, videos, presets


def test_the_timeline_holds_the_decoded_frame_count_and_the_source(two_videos):
    _, videos, _ = two_videos
    for name, video in videos.items():
        timeline = json.loads(video["timeline"].read_text())
        assert (
            timeline["video"]["frame_count"] == video["frames"] and timeline["video"]["fps"] == "30000/1001"
        )
        source = video["source"]
        assert timeline["source"] == {
            "name": name,
            "file": f"{name}.mp4",
            "size": source.stat().st_size,
            "sha256": sha256_of(source),
        }


def test_codes_equal_a_whole_file_encode_of_the_audio_under_the_video(two_videos, codec):
    """Made another way: DAC's own encode() of the wav, cut (or padded with silence) to the
    code frames that cover the video's frames."""
    _, videos, _ = two_videos
    # The code frames that cover the video, by hand: 38 frames at 30000/1001 fps are 1.268 s,
    # x 44,100 / 512 = 109.2 (up: 110); 23 frames: 66.1 (up: 67).
    for video, total in zip(videos.values(), (110, 67), strict=True):
        samples, _ = soundfile.read(video["wav"], dtype="float32")
        samples = np.pad(samples, (0, max(0, total * 512 - len(samples))))[: total * 512]
        codes = load_tokens(video["codes"])
        assert torch.equal(codes["codes"][0], codec.encode(torch.from_numpy(samples)).to(torch.uint16))
        assert codes.metadata["audio"]["code_frames"] == total


def test_each_preset_gets_the_same_codes_grouped_by_its_latent_frames(two_videos):
    folder, videos, presets = two_videos
    for name, video in videos.items():
        codes = load_tokens(video["codes"])
        for preset in presets.values():
            dest = folder / f"{name}_{preset.name}_audio.safetensors"
            align_codes(video["codes"], video["visual"][preset.name], dest)
            audio, visual = load_tokens(dest), load_tokens(video["visual"][preset.name])
            assert audio["codes"].dtype == torch.uint16
            assert audio["codes"].numpy().tobytes() == codes["codes"].numpy().tobytes()
            # Each latent frame's codes start with the first code frame that starts at or after
            # its first video frame (code frame k starts at k x 512 / 44,100 s), and end where
            # the next latent frame's start.
            ranges, spans = audio["code_ranges"].tolist(), visual["frame_spans"].tolist()
            for (first, _), (frame, _) in zip(ranges, spans, strict=True):
                start = Fraction(frame * 1001, 30000)
                assert Fraction(first * 512, 44100) >= start > Fraction((first - 1) * 512, 44100)
            assert [end for _, end in ranges[:-1]] == [first for first, _ in ranges[1:]]
            assert ranges[0][0] == 0 and ranges[-1][1] == audio["codes"].shape[1]
            assert audio.metadata["alignment"]["audio_codes"]["sha256"] == sha256_of(video["codes"])
            assert audio.metadata["runtime"] == codes.metadata["runtime"]
        sizes = {len(load_tokens(folder / f"{name}_{p}_audio.safetensors")["code_ranges"]) for p in presets}
        assert len(sizes) == 2  # the two presets cut the same codes into different latent frames


def test_codes_of_another_video_or_a_wrong_file_are_refused(two_videos):
    folder, videos, _ = two_videos
    with pytest.raises(AvTokensError, match="describe different videos .* 38 vs 23 frames"):
        align_codes(videos["b"]["codes"], videos["a"]["visual"]["w17"], folder / "x.safetensors")
    with pytest.raises(AvTokensError, match="not a file of DAC codes"):
        align_codes(videos["a"]["visual"]["w9"], videos["a"]["visual"]["w17"], folder / "x.safetensors")
    assert not (folder / "x.safetensors").exists()


def test_batched_coding_writes_what_one_video_at_a_time_writes(two_videos, demo_weights):
    folder, videos, _ = two_videos
    weights = demo_weights / "dac" / DAC_WEIGHTS_FILE
    single = folder / "single.safetensors"
    encode_wav_files([(videos["b"]["wav"], videos["b"]["timeline"], single)], weights, "cpu", 60)
    assert single.read_bytes() == videos["b"]["codes"].read_bytes()
    wavs = [folder / "a_rec.wav", folder / "b_rec.wav"]
    decode_codes_files([(videos[n]["codes"], w) for n, w in zip("ab", wavs, strict=True)], weights, "cpu", 60)
    decode_codes_files([(single, folder / "b_alone.wav")], weights, "cpu", 60)
    assert (folder / "b_alone.wav").read_bytes() == wavs[1].read_bytes()
    for name, wav in zip("ab", wavs, strict=True):
        with soundfile.SoundFile(wav) as decoded:  # as long as the video, not the code frames
            assert decoded.frames == round(videos[name]["frames"] * SAMPLE_RATE * 1001 / 30000)
