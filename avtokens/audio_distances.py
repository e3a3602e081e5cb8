"""DAC's audio distances between a coded wav and its reconstruction: the mel-spectrogram and
multi-scale STFT distances of descript-audio-codec's `dac.nn.loss` (`MelSpectrogramLoss()`
and `MultiScaleSTFTLoss()`, the defaults DAC trains and evaluates with), and SI-SDR in dB.

Computed here with numpy from their definitions: `dac.nn.loss` brings audiotools, librosa,
scipy and torch with it, 4-5 s of CPU per job before any work, for a few FFTs.
tests/test_audio_distances.py checks the figures against `dac.nn.loss` itself.
"""

from __future__ import annotations

import math

import numpy as np

# Both distances: an STFT per window length (hop a quarter of it; a periodic Hann window;
# frames centred, the signal reflected at its ends, as torch.stft does), compared as
# L1(log10 of the magnitudes squared, clamped below at CLAMP) + L1(magnitudes), summed over
# the windows. The mel one first maps each STFT onto that many mel bands.
WINDOWS = (2048, 512)
MEL_BANDS = (150, 80)
CLAMP = 1e-5


def _hann(length: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)


# STFT frames transformed at a time: memory stays a few MB whatever the chunk's length.
FRAMES_PER_BLOCK = 256


def _magnitude_blocks(signal: np.ndarray, window: int):
    """|STFT| of a 1-D signal (longer than half the window), [frames, window // 2 + 1], in
    blocks of frames."""
    padded = np.pad(signal, window // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[:: window // 4]
    hann = _hann(window)
    for start in range(0, len(frames), FRAMES_PER_BLOCK):
        yield np.abs(np.fft.rfft(frames[start : start + FRAMES_PER_BLOCK] * hann))


def _hz_to_mel(hz):
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz)
    log_part = 15 + np.log(np.maximum(hz, 1000) / 1000) / (math.log(6.4) / 27)
    return np.where(hz >= 1000, log_part, 3 * hz / 200)


def _mel_to_hz(mel):
    mel = np.asarray(mel)
    return np.where(mel >= 15, 1000 * np.exp((math.log(6.4) / 27) * (mel - 15)), 200 * mel / 3)


def mel_filters(rate: int, window: int, bands: int) -> np.ndarray:
    """Triangular filters [bands, window // 2 + 1] from 0 Hz to rate / 2, equally spaced in
    mel, each scaled to unit area in Hz (Slaney's normalisation, librosa's default)."""
    bins = np.linspace(0, rate / 2, window // 2 + 1)
    edges = _mel_to_hz(np.linspace(0, _hz_to_mel(rate / 2), bands + 2))
    widths = np.diff(edges)
    rising = (bins - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - bins) / widths[1:, None]
    return np.maximum(0, np.minimum(rising, falling)) * (2 / (edges[2:] - edges[:-2]))[:, None]


def _distance_sum(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The sum, over the elements, of DAC's per-element distance (its mean is the distance)."""
    log_reference = 2 * np.log10(np.maximum(reference, CLAMP))
    log_estimate = 2 * np.log10(np.maximum(estimate, CLAMP))
    return float(np.abs(log_reference - log_estimate).sum() + np.abs(reference - estimate).sum())


def spectral_distances(reference: np.ndarray, estimate: np.ndarray, rate: int) -> tuple[float, float]:
    """DAC's mel-spectrogram and multi-scale STFT distances of two 1-D signals of one length."""
    mel = stft = 0.0
    for window, bands in zip(WINDOWS, MEL_BANDS, strict=True):
        filters = mel_filters(rate, window, bands).T
        mel_sum = stft_sum = 0.0
        frames = 0
        for a, b in zip(
            _magnitude_blocks(reference, window), _magnitude_blocks(estimate, window), strict=True
        ):
            stft_sum += _distance_sum(a, b)
            mel_sum += _distance_sum(a @ filters, b @ filters)
            frames += len(a)
        stft += stft_sum / (frames * (window // 2 + 1))
        mel += mel_sum / (frames * bands)
    return mel, stft


class AudioDistances:
    """Two mono wav files read in chunks of `chunk_seconds`, so memory stays bounded (a
    chunk's samples in float32, their STFT a block of frames at a time): the spectral
    distances are averaged over chunks (weighted by length) and SI-SDR is computed exactly
    over the whole signal from running sums."""

    def __init__(self, chunk_seconds: float = 30.0):
        self.chunk_seconds = chunk_seconds
        self.min_chunk = 2 * max(WINDOWS)  # a few windows of the longest STFT

    def files(self, reference_path, estimate_path) -> dict:
        """Compare two mono wav files at the same rate over their common length."""
        import soundfile

        with soundfile.SoundFile(str(reference_path)) as ref, soundfile.SoundFile(str(estimate_path)) as est:
            if ref.samplerate != est.samplerate:
                raise ValueError(f"{reference_path} and {estimate_path} differ in sample rate")
            n, rate = min(ref.frames, est.frames), ref.samplerate
            chunk = max(int(self.chunk_seconds * rate), self.min_chunk)
            sums = SdrSums()
            mel = stft = 0.0
            remaining = n
            while remaining:
                # A short tail joins the chunk before it (the STFT needs a few windows).
                length = remaining if remaining < chunk + self.min_chunk else chunk
                remaining -= length
                a = ref.read(length, dtype="float32", always_2d=True)[:, 0]
                b = est.read(length, dtype="float32", always_2d=True)[:, 0]
                sums.add(a, b)
                if length < self.min_chunk:  # a whole file shorter than that: pad with silence
                    a, b = np.pad(a, (0, self.min_chunk - length)), np.pad(b, (0, self.min_chunk - length))
                mel_d, stft_d = spectral_distances(a, b, rate)
                mel, stft = mel + mel_d * length, stft + stft_d * length
        return {"mel_distance": mel / sums.n, "stft_distance": stft / sums.n, "si_sdr": sums.si_sdr()}


SDR_BLOCK = 1 << 16  # samples


class SdrSums:
    """Running sums from which the zero-mean SI-SDR of a long signal follows exactly."""

    def __init__(self):
        self.n = 0
        self.r = self.e = self.rr = self.ee = self.re = 0.0

    def add(self, reference: np.ndarray, estimate: np.ndarray) -> None:
        self.n += len(reference)
        for start in range(0, len(reference), SDR_BLOCK):  # in float64, a block at a time
            r = reference[start : start + SDR_BLOCK].astype(np.float64)
            e = estimate[start : start + SDR_BLOCK].astype(np.float64)
            self.r += float(r.sum())
            self.e += float(e.sum())
            self.rr += float(r @ r)
            self.ee += float(e @ e)
            self.re += float(r @ e)

    def si_sdr(self) -> float:
        """10 log10(|target|^2 / |noise|^2), target = projection of the estimate on the reference."""
        rr = self.rr - self.r * self.r / self.n
        ee = self.ee - self.e * self.e / self.n
        re = self.re - self.r * self.e / self.n
        target = re * re / max(rr, 1e-20)
        noise = max(ee - target, 1e-20)
        return 10 * math.log10(max(target, 1e-20) / noise)
