"""Audio codecs' loading and windowed coding, on stand-ins saved in the official formats (DAC
here, Mimi's own checks against transformers in test_mimi.py); a video's audio coded once per
codec and grouped by each preset's latent frames, for every codec."""

import json
from fractions import Fraction

import numpy as np
import pytest
import soundfile
import torch
from helpers import make_clip, sample_reader, sweep

from avtokens import AvTokensError, load_tokens
from avtokens.audio import _read_samples, decode_codes_files, encode_wav_files
from avtokens.audio_codecs import AUDIO_CODECS, audio_codec
from avtokens.audio_codecs.dac import DAC, WEIGHTS_FILE
from avtokens.audio_tokens import align_codes
from avtokens.media import extract_audio, sha256_of
from avtokens.presets import make_preset
from avtokens.visual import encode_video_file

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dac(demo_weights):
    return DAC.load(demo_weights / DAC.folder, 9, CPU, None)


def signal(samples):
    return sweep(samples, DAC.sample_rate)


def encode(model, audio, window):
    frames = len(audio) // model.hop
    return torch.cat(list(model.encode(sample_reader(audio), frames, window)))


def test_dac_codes_have_nine_codebooks_of_ten_bits(dac):
    codes = encode(dac, signal(40 * dac.hop), 40)
    assert codes.shape == (40, 9) and dac.codebooks == 9 and dac.hop == 512
    assert codes.min() >= 0 and codes.max() < 1024
    assert dac.stand_in and dac.record["stand_in"] and dac.record["name"] == "dac"


def test_dac_windowed_encode_equals_whole_file_encode(dac, monkeypatch):
    """Made another way: DAC's own encode() of the whole signal."""
    total = 300
    audio = signal(total * dac.hop)
    with torch.inference_mode():
        whole = dac.model.encode(audio.view(1, 1, -1))[1][0].T
    assert torch.equal(encode(dac, audio, 37), whole)  # small, odd: many seams
    # The context is what makes it exact: with too little, codes near the seams change.
    monkeypatch.setattr(dac, "encode_context", 2)
    assert not torch.equal(encode(dac, audio, 37), whole)


def test_dac_windowed_decode_matches_whole_file_decode(dac):
    codes = encode(dac, signal(120 * dac.hop), 120)
    with torch.inference_mode():
        whole = dac.model.decode(dac.model.quantizer.from_codes(codes.T.unsqueeze(0))[0]).view(-1)
    assert whole.shape == (120 * dac.hop,)
    torch.testing.assert_close(torch.cat(list(dac.decode(codes, 25))), whole, atol=1e-4, rtol=0)


def test_reading_past_the_end_of_a_wav_gives_silence(tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, np.full(100, 0.5, dtype=np.float32), 44100, subtype="FLOAT")
    with soundfile.SoundFile(path) as wav:
        data = _read_samples(wav, 90, 130)
    assert data.shape == (40,) and torch.all(data[:10] == 0.5) and torch.all(data[10:] == 0)


def test_dac_weights_that_do_not_fit_the_model_are_refused(tmp_path, demo_weights):
    package = torch.load(demo_weights / "dac" / WEIGHTS_FILE, weights_only=True)
    del package["state_dict"]["decoder.model.0.weight_v"]
    torch.save(package, tmp_path / WEIGHTS_FILE)
    with pytest.raises(AvTokensError, match="missing .*decoder.model.0.weight_v"):
        DAC.load(tmp_path, 9, CPU, None)


def test_a_dac_of_another_rate_is_refused(tmp_path, demo_weights):
    package = torch.load(demo_weights / "dac" / WEIGHTS_FILE, weights_only=True)
    package["metadata"]["kwargs"]["sample_rate"] = 24000
    torch.save(package, tmp_path / WEIGHTS_FILE)
    with pytest.raises(
        AvTokensError, match="a DAC of 24000 Hz, hop 512, 9 codebooks of 1024; the DAC 44.1 kHz"
    ):
        DAC.load(tmp_path, 9, CPU, None)


def test_missing_dac_weights_name_the_file(tmp_path):
    with pytest.raises(
        AvTokensError, match=f"{tmp_path}: the DAC 44.1 kHz checkpoint is missing {WEIGHTS_FILE} "
    ):
        DAC.load(tmp_path, 9, CPU, None)


@pytest.fixture(scope="module", params=sorted(AUDIO_CODECS))
def two_videos(request, tmp_path_factory, demo_weights):
    """Two clips, each with its audio extracted at the codec's rate and coded once, and visual
    token files of two presets that cut the frames differently; for each codec."""
    codec = audio_codec(request.param)
    folder = tmp_path_factory.mktemp(f"two_videos_{codec.name}")
    presets = {
        name: make_preset(name, {"kind": "DV", "temporal": t, "spatial": 16, "window": w, "weights": "demo"})
        for name, t, w in (("w17", 8, 17), ("w9", 8, 9))
    }
    videos = {}
    for name, frames in (("a", 38), ("b", 23)):
        source = make_clip(folder / f"{name}.mp4", 48, 32, frames, rate="30000/1001", audio_channels=2)
        wav, timeline = folder / f"{name}.wav", folder / f"{name}_timeline.json"
        extract_audio(source, name, codec.sample_rate, wav, timeline)
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
    encode_wav_files([(v["wav"], v["timeline"], v["codes"]) for v in videos.values()], codec.name,
                     codec.default_codebooks, demo_weights / codec.folder, "cpu", 60)  # fmt: skip
    return folder, videos, presets, codec


def test_the_timeline_holds_the_decoded_frame_count_and_the_source(two_videos):
    _, videos, _, _ = two_videos
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


def test_codes_cover_the_video_at_the_codecs_rate(two_videos):
    """The code frames that cover the video, by hand: 38 frames at 30000/1001 fps are 1.268 s,
    x 44,100 / 512 = 109.2 DAC code frames (up: 110), x 12.5 = 15.85 Mimi ones (up: 16); 23
    frames: 66.1 (67) and 9.6 (10)."""
    _, videos, _, codec = two_videos
    expected = {"dac": (110, 67), "mimi": (16, 10)}[codec.name]
    for video, total in zip(videos.values(), expected, strict=True):
        codes = load_tokens(video["codes"])
        audio = codes.metadata["audio"]
        assert codes["codes"].shape == (1, total, codec.default_codebooks)
        assert codes["codes"].to(torch.int64).max() < codec.codebook_size
        assert (audio["codec"], audio["sample_rate"], audio["hop"], audio["code_frames"]) == (
            codec.name, codec.sample_rate, codec.hop, total)  # fmt: skip
        with soundfile.SoundFile(video["wav"]) as wav:
            assert wav.samplerate == codec.sample_rate and wav.channels == 1


def whole_file_codes(codec, folder, samples):
    """The codes of `samples` by the codec's own library in one call: DAC's encode(), or
    transformers' MimiModel.encode()."""
    x = torch.from_numpy(samples).view(1, 1, -1)
    with torch.inference_mode():
        if codec.name == "dac":
            return DAC.load(folder, 9, CPU, None).model.encode(x)[1][0].T
        from transformers import MimiModel

        network = MimiModel.from_pretrained(folder).eval()
        return network.encode(x, num_quantizers=codec.default_codebooks).audio_codes[0].T


def test_codes_equal_a_whole_file_encode_of_the_audio_under_the_video(two_videos, demo_weights):
    """Made another way: the codec library's own encode of the whole wav, cut (or padded with
    silence) to the code frames that cover the video's frames."""
    _, videos, _, codec = two_videos
    for video in videos.values():
        codes = load_tokens(video["codes"])
        samples_needed = codes.metadata["audio"]["code_frames"] * codec.hop
        samples, _ = soundfile.read(video["wav"], dtype="float32")
        samples = np.pad(samples, (0, max(0, samples_needed - len(samples))))[:samples_needed]
        whole = whole_file_codes(codec, demo_weights / codec.folder, samples)
        assert torch.equal(codes["codes"][0], whole.to(torch.uint16))


def test_each_preset_gets_the_same_codes_grouped_by_its_latent_frames(two_videos):
    folder, videos, presets, codec = two_videos
    rate, hop = codec.sample_rate, codec.hop
    for name, video in videos.items():
        codes = load_tokens(video["codes"])
        for preset in presets.values():
            dest = folder / f"{name}_{preset.name}_audio.safetensors"
            align_codes(video["codes"], video["visual"][preset.name], dest)
            audio, visual = load_tokens(dest), load_tokens(video["visual"][preset.name])
            assert audio["codes"].dtype == torch.uint16
            assert audio["codes"].numpy().tobytes() == codes["codes"].numpy().tobytes()
            # Each latent frame's codes start with the first code frame that starts at or after
            # its first video frame (code frame k starts at k x hop / rate s: 512 / 44,100 for
            # DAC, 80 ms for Mimi), and end where the next latent frame's start.
            ranges, spans = audio["code_ranges"].tolist(), visual["frame_spans"].tolist()
            for (first, _), (frame, _) in zip(ranges, spans, strict=True):
                start = Fraction(frame * 1001, 30000)
                assert Fraction(first * hop, rate) >= start > Fraction((first - 1) * hop, rate)
            assert [end for _, end in ranges[:-1]] == [first for first, _ in ranges[1:]]
            assert ranges[0][0] == 0 and ranges[-1][1] == audio["codes"].shape[1]
            assert audio.metadata["alignment"]["audio_codes"]["sha256"] == sha256_of(video["codes"])
            assert audio.metadata["runtime"] == codes.metadata["runtime"]
        sizes = {len(load_tokens(folder / f"{name}_{p}_audio.safetensors")["code_ranges"]) for p in presets}
        assert len(sizes) == 2  # the two presets cut the same codes into different latent frames


def test_codes_of_another_video_or_a_wrong_file_are_refused(two_videos):
    folder, videos, _, _ = two_videos
    with pytest.raises(AvTokensError, match="describe different videos .* 38 vs 23 frames"):
        align_codes(videos["b"]["codes"], videos["a"]["visual"]["w17"], folder / "x.safetensors")
    with pytest.raises(AvTokensError, match="not a file of audio codes"):
        align_codes(videos["a"]["visual"]["w9"], videos["a"]["visual"]["w17"], folder / "x.safetensors")
    assert not (folder / "x.safetensors").exists()


def test_batched_coding_writes_what_one_video_at_a_time_writes(two_videos, demo_weights):
    folder, videos, _, codec = two_videos
    model = (codec.name, codec.default_codebooks, demo_weights / codec.folder)
    single = folder / "single.safetensors"
    encode_wav_files([(videos["b"]["wav"], videos["b"]["timeline"], single)], *model, "cpu", 60)
    assert single.read_bytes() == videos["b"]["codes"].read_bytes()
    wavs = [folder / "a_rec.wav", folder / "b_rec.wav"]
    decode_codes_files([(videos[n]["codes"], w) for n, w in zip("ab", wavs, strict=True)], *model, "cpu", 60)
    decode_codes_files([(single, folder / "b_alone.wav")], *model, "cpu", 60)
    assert (folder / "b_alone.wav").read_bytes() == wavs[1].read_bytes()
    for name, wav in zip("ab", wavs, strict=True):
        with soundfile.SoundFile(wav) as decoded:  # as long as the video, not the code frames
            assert decoded.samplerate == codec.sample_rate
            assert decoded.frames == round(videos[name]["frames"] * codec.sample_rate * 1001 / 30000)


def test_codes_of_one_codec_are_not_decoded_by_another(two_videos, demo_weights, tmp_path):
    _, videos, _, codec = two_videos
    other = next(c for c in AUDIO_CODECS.values() if c.name != codec.name)
    with pytest.raises(AvTokensError, match=f"codes of {codec.name} with .*this job decodes {other.name}"):
        decode_codes_files([(videos["a"]["codes"], tmp_path / "x.wav")], other.name, other.default_codebooks,
                           demo_weights / other.folder, "cpu", 60)  # fmt: skip
