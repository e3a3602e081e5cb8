"""Metric sanity: perfect on identical inputs, worse as known noise grows."""

import csv
import json

import numpy as np
import pytest
import torch

from avtokens.metrics import psnr, ssim
from avtokens.summary import describe, summarize, write_table


def noisy(frames, sigma, seed=0):
    noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(seed)) * sigma
    return (frames.float() + noise).round().clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("size", [(48, 64), (7, 9)])  # the second is smaller than the SSIM window
def test_video_metrics_are_perfect_on_identical_frames_and_fall_with_noise(size):
    rng = np.random.default_rng(1)
    frames = torch.from_numpy(rng.integers(0, 256, (4, *size, 3), dtype=np.uint8))
    assert torch.all(psnr(frames, frames) == 100.0)  # the README's figure for identical frames
    assert torch.allclose(ssim(frames, frames), torch.ones(4))
    scores = [
        (psnr(frames, noisy(frames, s)).mean(), ssim(frames, noisy(frames, s)).mean()) for s in (1, 4, 16, 64)
    ]
    for (p_low, s_low), (p_high, s_high) in zip(scores, scores[1:], strict=False):
        assert p_high < p_low and s_high < s_low


# Bright frames with strong noise, and dark faint ones, where the constants C1 and C2 weigh;
# and frames taller than the strips of rows SSIM is computed in (128), the last one partial.
# 380 rows: 370 of the map, three strips; a count of rows 12 too many would make a fourth.
@pytest.mark.parametrize("top, noise, size", [(256, 20, (20, 23)), (4, 1, (20, 23)), (256, 20, (300, 13)),
                                              (256, 20, (380, 13))])  # fmt: skip
def test_ssim_matches_the_definition_with_a_full_gaussian_window(top, noise, size):
    """Against a plain float64 computation: every 11x11 patch weighted by the 2-D Gaussian."""
    rng = np.random.default_rng(2)
    ref = rng.integers(0, top, (2, *size, 3), dtype=np.uint8)
    est = np.clip(ref + rng.normal(0, noise, ref.shape), 0, 255).astype(np.uint8)
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = []
    for a, b in zip(ref.astype(np.float64), est.astype(np.float64), strict=True):
        values = []
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]  # [11, 11, 3]
                mean = lambda t: np.einsum("ij,ijc->c", window, t)  # noqa: E731
                mx, my = mean(pa), mean(pb)
                vx, vy, cov = mean(pa * pa) - mx**2, mean(pb * pb) - my**2, mean(pa * pb) - mx * my
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        expected.append(np.mean(values))
    got = ssim(torch.from_numpy(ref), torch.from_numpy(est)).numpy()
    assert np.allclose(got, expected, atol=1e-5), (got, expected)


def test_psnr_matches_its_definition():
    a = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    b = torch.full((1, 2, 2, 3), 10, dtype=torch.uint8)
    assert psnr(a, b).item() == pytest.approx(10 * np.log10(255**2 / 100))


def test_summary_statistics():
    assert summarize([30.0, 20.0, 40.0, 35.0]) == pytest.approx(
        {"mean": 31.25, "p5": 21.5, "worst": 20.0, "worst_frame": 1}
    )


def test_the_token_table_sums_counts_into_a_total_row(tmp_path):
    def summary(preset, tokens):
        return {
            "video": "v",
            "preset": preset,
            "duration_s": 2.0,
            "latent_frames": 3,
            "visual_tokens": tokens,
            "audio_tokens": 10,
            "total_tokens": tokens + 10,
            "token_bytes": 100,
            "tokens_per_second": 1.0,
            "psnr": {"mean": 30.0, "p5": 25.0},
            "ssim": {"mean": 0.9},
            "audio": {"mel_distance": 1.0, "stft_distance": 2.0, "si_sdr": 3.0},
        }

    paths = []
    for preset, tokens in (("a", 100), ("b", 50)):
        paths.append(tmp_path / f"{preset}.json")
        paths[-1].write_text(json.dumps(summary(preset, tokens)))
    write_table(paths, tmp_path / "table.tsv")
    with open(tmp_path / "table.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [r["preset"] for r in rows] == ["a", "b", "2 presets"]
    assert rows[-1]["total_tokens"] == "170" and rows[-1]["duration_s"] == "4"
    assert rows[-1]["tokens_per_second"] == "42.5" and rows[0]["psnr_mean"] == "30"


def test_the_seed_sentence():
    numbers = {"duration_s": 531.0, "fps": "25", "width": 960, "height": 720, "latent_frames": 1750,
               "latent_width": 60, "latent_height": 45, "codes_per_latent_frame": 27, "codebooks": 9,
               "visual_tokens": 4_725_000, "audio_tokens": 425_250, "total_tokens": 5_150_250}  # fmt: skip
    assert describe("Tom and Jerry", numbers) == (
        "Tom and Jerry: 8 min 51 sec; 25 fps; 960x720 => 1,750 latent frames of 60x45 visual + 27x9 audio; "
        "4,725,000 visual tokens & 425,250 audio tokens = 5.15 million tokens"
    )


def test_psnr_and_ssim_score_each_frame_on_its_own():
    a = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    b = a.clone()
    b[1] = 10  # frame 1 off by 10 everywhere: MSE 100
    b[2] = 1  # frame 2 off by 1: MSE 1
    assert psnr(a, b).tolist() == pytest.approx([100.0, 10 * np.log10(255**2 / 100), 10 * np.log10(255**2)])
    # A flat frame against another flat one: no variance, so SSIM = C1 / (mu_y^2 + C1) with
    # C1 = (0.01 * 255)^2 = 6.5025: 6.5025 / 7.5025 for a step of 1, 6.5025 / 106.5025 for 10.
    assert ssim(a, b).tolist() == pytest.approx([1.0, 6.5025 / 106.5025, 6.5025 / 7.5025], abs=1e-6)


def test_videos_of_different_lengths_are_not_compared():
    frames = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    with pytest.raises(ValueError):
        ssim(frames, frames[:2])


def test_summary_statistics_keep_full_precision():
    # float32 scores whose float32 sum loses the small ones: the mean of the numbers themselves.
    scores = np.array([2.0**24, 1.0, 1.0], dtype=np.float32)
    assert summarize(scores)["mean"] == (2**24 + 2) / 3
