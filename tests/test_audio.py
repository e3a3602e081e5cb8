"""DAC loading and windowed coding, on a stand-in saved in the release file's format."""

import math

import numpy as np
import pytest
import soundfile
import torch

from avtokens import AvTokensError
from avtokens.audio import SAMPLE_RATE, DacCodec, _read_samples, _windows
from avtokens.presets import DAC_WEIGHTS_FILE

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
