"""Reconstruction quality of the video: per-frame PSNR and SSIM (the audio's: audio_distances).

They compare the decoder's own frames (after clamping and rounding to 8 bits) with the
source frames, before any mp4 re-encode, so the numbers measure the tokenizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PSNR_CAP = 100.0  # dB reported for identical frames (the true value is infinite)


def psnr(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB of uint8 frames [n, H, W, 3], capped at PSNR_CAP."""
    error = (reference.float() - estimate.float()).square().mean(dim=(1, 2, 3))
    value = 10 * torch.log10(255.0**2 / error.clamp_min(1e-12))
    return value.clamp(max=PSNR_CAP)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, range
    255) of uint8 frames [n, H, W, 3], averaged over the three colour channels. Frames smaller
    than the window are padded by replication."""
    kernel = _gaussian_kernel(device=reference.device)
    return torch.stack([_ssim_of_frame(a, b, kernel) for a, b in zip(reference, estimate, strict=True)])


# Output rows of the SSIM map computed at a time: its five statistics are frame-sized maps, so
# a 4K frame at once took 1.5 GB; a strip of rows (with the window's margin) gives the same sums.
SSIM_STRIP_ROWS = 128


def _ssim_of_frame(reference: torch.Tensor, estimate: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # One frame at a time, in strips of rows, keeps memory small whatever the resolution.
    x = reference.permute(2, 0, 1).float()[None]
    y = estimate.permute(2, 0, 1).float()[None]
    size = kernel.numel()
    pad = max(0, size - min(x.shape[2], x.shape[3]))
    if pad:
        x = F.pad(x, (0, pad, 0, pad), mode="replicate")
        y = F.pad(y, (0, pad, 0, pad), mode="replicate")
    rows = x.shape[2] - size + 1  # of the map ("valid" convolution)
    total, count = torch.zeros((), dtype=torch.float64, device=x.device), 0
    for top in range(0, rows, SSIM_STRIP_ROWS):
        end = min(top + SSIM_STRIP_ROWS, rows) + size - 1
        index = _ssim_map(x[:, :, top:end], y[:, :, top:end], kernel)
        total += index.sum(dtype=torch.float64)
        count += index.numel()
    return (total / count).float()


def _ssim_map(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The SSIM index at every position where the window fits in x and y [1, 3, H, W]."""
    # The five local statistics blurred at once, with the Gaussian split into a row and a
    # column pass (the same sums as the 11x11 window, a fifth of the work).
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    maps = _blur(_blur(maps, kernel, dim=3), kernel, dim=2)
    mu_x, mu_y, xx, yy, xy = maps.chunk(5, dim=1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def _blur(maps: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """`maps` convolved with the 1-D `kernel` along `dim`, where it fits ("valid"): a sum of
    shifted copies, the same products and sums as a convolution, and on the CPU some times
    faster than PyTorch's grouped one (0.8 s instead of 2.1 s for a 4K frame's maps)."""
    length = maps.shape[dim] - kernel.numel() + 1
    out = maps.narrow(dim, 0, length) * kernel[0]
    for k in range(1, kernel.numel()):
        out.add_(maps.narrow(dim, k, length), alpha=float(kernel[k]))
    return out
