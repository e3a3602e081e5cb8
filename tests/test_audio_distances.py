"""DAC's audio distances: the figures `dac.nn.loss` itself gives, chunked files, SI-SDR."""

import warnings

import numpy as np
import pytest
import soundfile
import torch

from avtokens.audio_distances import (
    AudioDistances,
    SdrSums,
    _hz_to_mel,
    _mel_to_hz,
    mel_filters,
    spectral_distances,
)

# float32 (DAC's loss) against float64 (ours): means over 10^4-10^5 values agree to a few
# float32 steps of the result; 1e-5 relative is about 80.
FLOAT32_AGREEMENT = 1e-5


def dac_distances(reference: np.ndarray, estimate: np.ndarray, rate: int) -> tuple[float, float]:
    """The mel and multi-scale STFT distances as descript-audio-codec computes them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from audiotools import AudioSignal
        from dac.nn.loss import MelSpectrogramLoss, MultiScaleSTFTLoss

    def signal(samples):
        return AudioSignal(torch.from_numpy(samples.astype(np.float32)).view(1, 1, -1), rate)

    a, b = signal(reference), signal(estimate)
    return float(MelSpectrogramLoss()(b, a)), float(MultiScaleSTFTLoss()(b, a))


def tone_and_noise(seconds: float, rate: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    reference = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t * (1 + t))
    reference += 0.01 * rng.standard_normal(len(t))
    estimate = 0.8 * reference + 0.03 * rng.standard_normal(len(t))
    # Rounded to float32, as the wav files hold them and DAC's loss reads them.
    return reference.astype(np.float32).astype(np.float64), estimate.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("seconds, rate", [(4096 / 44100, 44100), (2.0177, 44100), (1.3, 24000)])
def test_the_distances_are_dacs_own(seconds, rate):
    """The shortest chunk, an odd length, and another codec's rate (Mimi's 24 kHz)."""
    reference, estimate = tone_and_noise(seconds, rate)
    ours, theirs = spectral_distances(reference, estimate, rate), dac_distances(reference, estimate, rate)
    assert ours == pytest.approx(theirs, rel=FLOAT32_AGREEMENT)
    assert theirs[0] > 0.1 and theirs[1] > 0.1  # the signals differ enough to tell


def test_the_mel_filters_are_librosas_slaney_filters():
    """librosa.filters.mel's defaults, which DAC's mel distance uses (float32 there)."""
    import librosa

    for rate, window, bands in [(44100, 2048, 150), (44100, 512, 80), (24000, 512, 80)]:
        theirs = librosa.filters.mel(sr=rate, n_fft=window, n_mels=bands)
        assert np.abs(mel_filters(rate, window, bands) - theirs).max() < 1e-6 * np.abs(theirs).max()


def test_the_mel_scale_is_slaneys():
    """3/200 mel per Hz up to 1 kHz (15 mel), then 27 mel per factor of 6.4."""
    hz, mel = [0, 500, 1000, 6400, 40960], [0, 7.5, 15, 42, 69]
    assert _hz_to_mel(hz) == pytest.approx(mel) and _mel_to_hz(mel) == pytest.approx(hz)


def write_pair(folder, reference, estimate, rate):
    for name, samples in (("ref.wav", reference), ("est.wav", estimate)):
        soundfile.write(folder / name, samples.astype(np.float32), rate, subtype="FLOAT")
    return folder / "ref.wav", folder / "est.wav"


@pytest.mark.parametrize(
    "samples, chunks", [(2 * 44100 + 1000, [44100, 45100]), (44100 + 4096, [44100, 4096])]
)
def test_files_are_compared_in_chunks_weighted_by_length(tmp_path, samples, chunks):
    """In chunks of 1 s: a tail shorter than the shortest chunk (4096 samples) joins the chunk
    before it, one that long does not; each chunk's distances weighted by its length."""
    rate = 44100
    reference, estimate = tone_and_noise(samples / rate, rate, seed=1)
    got = AudioDistances(chunk_seconds=1.0).files(*write_pair(tmp_path, reference, estimate, rate))
    bounds = np.cumsum([0, *chunks])
    by_chunk = [
        dac_distances(reference[a:b], estimate[a:b], rate)
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    expected = [sum(d[i] * n for d, n in zip(by_chunk, chunks, strict=True)) / samples for i in (0, 1)]
    assert [got["mel_distance"], got["stft_distance"]] == pytest.approx(expected, rel=FLOAT32_AGREEMENT)


def test_a_file_shorter_than_the_shortest_chunk_is_padded_with_silence(tmp_path):
    """3000 samples: the spectral distances of both padded with zeros to 4096, SI-SDR of the
    3000 themselves."""
    rate = 44100
    reference, estimate = tone_and_noise(3000 / rate, rate, seed=2)
    got = AudioDistances().files(*write_pair(tmp_path, reference, estimate, rate))
    padded = [np.pad(x, (0, 4096 - 3000)) for x in (reference, estimate)]
    expected = dac_distances(*padded, rate)
    assert [got["mel_distance"], got["stft_distance"]] == pytest.approx(expected, rel=FLOAT32_AGREEMENT)
    assert got["si_sdr"] == pytest.approx(si_sdr_by_definition(reference, estimate), abs=1e-6)


def test_wavs_at_different_rates_are_not_compared(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(5000, np.float32), 44100)
    soundfile.write(tmp_path / "b.wav", np.zeros(5000, np.float32), 24000)
    with pytest.raises(ValueError, match=r"a\.wav and .*b\.wav differ in sample rate"):
        AudioDistances().files(tmp_path / "a.wav", tmp_path / "b.wav")


def test_audio_metrics_are_perfect_on_identical_audio_and_fall_with_noise(tmp_path):
    rate = 44100
    t = np.arange(rate * 3) / rate
    clean = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1375 * t * (1 + t))).astype(
        np.float32
    )
    soundfile.write(tmp_path / "ref.wav", clean, rate, subtype="FLOAT")
    distances = AudioDistances(chunk_seconds=1.0)
    same = distances.files(tmp_path / "ref.wav", tmp_path / "ref.wav")
    assert same["mel_distance"] == 0 and same["stft_distance"] == 0 and same["si_sdr"] > 100
    rng = np.random.default_rng(0)
    results = []
    for sigma in (0.001, 0.01, 0.1):
        noise = sigma * rng.standard_normal(len(clean)).astype(np.float32)
        soundfile.write(tmp_path / "est.wav", clean + noise, rate, subtype="FLOAT")
        results.append(distances.files(tmp_path / "ref.wav", tmp_path / "est.wav"))
    for better, worse in zip(results, results[1:], strict=False):
        assert (
            worse["mel_distance"] > better["mel_distance"]
            and worse["stft_distance"] > better["stft_distance"]
        )
        assert worse["si_sdr"] < better["si_sdr"]
    # SI-SDR of white noise at a known level: 10 log10(signal power / noise power).
    power = float(np.mean(clean.astype(np.float64) ** 2))
    assert results[1]["si_sdr"] == pytest.approx(10 * np.log10(power / 0.01**2), abs=0.3)


def test_si_sdr_ignores_scale_but_not_distortion(tmp_path):
    rate = 44100
    clean = (np.sin(np.arange(rate) / 7) * 0.5).astype(np.float32)
    soundfile.write(tmp_path / "ref.wav", clean, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "quiet.wav", clean * 0.25, rate, subtype="FLOAT")
    soundfile.write(tmp_path / "clipped.wav", np.clip(clean, -0.3, 0.3), rate, subtype="FLOAT")
    distances = AudioDistances()
    assert distances.files(tmp_path / "ref.wav", tmp_path / "quiet.wav")["si_sdr"] > 100
    assert distances.files(tmp_path / "ref.wav", tmp_path / "clipped.wav")["si_sdr"] < 30


def si_sdr_by_definition(reference, estimate):
    """Zero-mean SI-SDR (Le Roux et al. 2019), in float64: the estimate's projection on the
    reference is the target, the rest is noise."""
    s, e = reference - reference.mean(), estimate - estimate.mean()
    target = (e @ s) / (s @ s) * s
    noise = e - target
    return 10 * np.log10((target @ target) / (noise @ noise))


@pytest.mark.parametrize("scale", [1.0, 1e-4])  # SI-SDR does not depend on the level
def test_si_sdr_from_running_sums_is_the_definition_over_chunks(scale):
    rng = np.random.default_rng(3)
    t = np.arange(10_000) / 44100
    reference = scale * (0.4 + 0.3 * np.sin(2 * np.pi * 440 * t))  # with a DC offset
    estimate = 0.8 * reference + scale * (0.1 + 0.05 * rng.standard_normal(len(t)))
    sums = SdrSums()
    for start, stop in ((0, 4096), (4096, 4100), (4100, 10_000)):  # chunks of any length
        sums.add(reference[start:stop], estimate[start:stop])
    assert sums.n == 10_000
    expected = si_sdr_by_definition(reference, estimate)
    assert 10 < expected < 20  # the signal dominates, not perfectly
    assert sums.si_sdr() == pytest.approx(expected, abs=1e-6)


def test_audio_distances_chunk_as_documented():
    from dac.nn.loss import MelSpectrogramLoss, MultiScaleSTFTLoss

    distances = AudioDistances()
    assert distances.chunk_seconds == 30.0  # README: "computed in 30 s chunks"
    # The shortest chunk holds two of the longest STFT window DAC's distances use.
    windows = [
        p.window_length for loss in (MelSpectrogramLoss(), MultiScaleSTFTLoss()) for p in loss.stft_params
    ]
    assert distances.min_chunk == 2 * max(windows) == 4096
