"""The Cosmos causal video tokenizer network, written as ordinary PyTorch modules.

Built from the published architecture (see the project's design notes): a Haar wavelet
patcher, causal factorised 3D convolutions, per-frame group norm, hybrid down/up-sampling
and a middle block with spatial and causal temporal attention (through
`scaled_dot_product_attention`, so memory is linear in the frame size). Module names follow
the released checkpoints (`encoder.down.0.block.1.conv1.1.conv3d.weight`, ...), so a
released state dict maps onto it by name.

`CosmosEncoderNetwork` / `CosmosDecoderNetwork` keep the release's I/O contract: frames
[B, 3, T, H, W] in [-1, 1] in, a tuple out (CV: (latents,); DV: (indices, codes)); the
decoder takes latents (CV) or indices (DV) and gives [B, 3, 1 + tc*(t-1), H, W].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from avtokens.visual_tokenizers.cosmos.fsq import FiniteScalarQuantizer

LATENT_CHANNELS = 16
FSQ_CHANNELS = 6
BASE_WIDTH = 128


class CausalConv3d(nn.Module):
    """Conv3d that sees only the present and past frames: time is padded in front by
    repeating the first frame; space is zero-padded by `padding` on each side."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride=(1, 1, 1), padding: int = 0):
        super().__init__()
        self.time_pad = kernel[0] - 1 + 1 - stride[0]
        self.space_pad = padding
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.space_pad:
            p = self.space_pad
            x = F.pad(x, (p, p, p, p))
        return self.conv3d(x)


def factorised_conv(cin: int, cout: int) -> nn.Sequential:
    """A (1,3,3) spatial conv then a (3,1,1) causal temporal conv."""
    return nn.Sequential(CausalConv3d(cin, cout, (1, 3, 3), padding=1), CausalConv3d(cout, cout, (3, 1, 1)))


def pointwise_conv(cin: int, cout: int) -> CausalConv3d:
    return CausalConv3d(cin, cout, (1, 1, 1))


class FrameNorm(nn.Module):
    """GroupNorm with one group over each frame on its own, so the future cannot leak back."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self.norm(frames).reshape(b, t, c, h, w).transpose(1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), factorised_conv(cin, cout)
        self.norm2, self.conv2 = FrameNorm(cout), factorised_conv(cout, cout)
        self.nin_shortcut = pointwise_conv(cin, cout) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.norm = FrameNorm(channels)
        self.q, self.k, self.v = (pointwise_conv(channels, channels) for _ in range(3))
        self.proj_out = pointwise_conv(channels, channels)


class SpatialAttention(_Attention):
    """Single-head self-attention over all positions of each latent frame."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x)

        def tokens(proj):  # [b*t, 1, h*w, c]
            return proj(y).permute(0, 2, 3, 4, 1).reshape(b * t, 1, h * w, c)

        out = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v))
        out = out.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3)
        return x + self.proj_out(out)


class CausalTemporalAttention(_Attention):
    """Single-head self-attention over the frames at each position, each frame seeing only
    itself and earlier ones."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x)

        def tokens(proj):  # [b*h*w, 1, t, c]
            return proj(y).permute(0, 3, 4, 2, 1).reshape(b * h * w, 1, t, c)

        out = F.scaled_dot_product_attention(tokens(self.q), tokens(self.k), tokens(self.v), is_causal=True)
        out = out.reshape(b, h, w, t, c).permute(0, 4, 3, 1, 2)
        return x + self.proj_out(out)


class MiddleBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResidualBlock(channels, channels)
        self.attn_1 = nn.Sequential(SpatialAttention(channels), CausalTemporalAttention(channels))
        self.block_2 = ResidualBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class HybridDownsample(nn.Module):
    """x2 down in space (strided conv + average pool) and/or in time (causal strided conv +
    average pool), then a pointwise conv."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        if spatial:
            self.conv1 = CausalConv3d(channels, channels, (1, 3, 3), stride=(1, 2, 2))
        if temporal:
            self.conv2 = CausalConv3d(channels, channels, (3, 1, 1), stride=(2, 1, 1))
        self.conv3 = pointwise_conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial:
            x = F.pad(x, (0, 1, 0, 1))
            x = self.conv1(x) + F.avg_pool3d(x, (1, 2, 2), stride=(1, 2, 2))
        if self.temporal:
            x = torch.cat([x[:, :, :1], x], dim=2)
            x = self.conv2(x) + F.avg_pool3d(x, (2, 1, 1), stride=(2, 1, 1))
        return self.conv3(x)


class HybridUpsample(nn.Module):
    """x2 up in time (repeat, drop the first frame, residual causal conv) and/or in space
    (nearest, residual conv), then a pointwise conv. A single frame is not repeated but still
    goes through the residual time conv, as in NVIDIA's code and its traced graphs."""

    def __init__(self, channels: int, spatial: bool, temporal: bool):
        super().__init__()
        self.spatial, self.temporal = spatial, temporal
        if temporal:
            self.conv1 = CausalConv3d(channels, channels, (3, 1, 1))
        if spatial:
            self.conv2 = CausalConv3d(channels, channels, (1, 3, 3), padding=1)
        self.conv3 = pointwise_conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.temporal or self.spatial):  # a stage that does nothing, as released files carry
            return x
        if self.temporal:
            if x.shape[2] > 1:
                x = x.repeat_interleave(2, dim=2)[:, :, 1:]
            x = x + self.conv1(x)
        if self.spatial:
            x = x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
            x = x + self.conv2(x)
        return self.conv3(x)


def _haar_filters(channels: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Low (a, a) and high (a, -a) filters, a = 1/sqrt(2), one per channel: [channels, 1, 2]."""
    a = 1 / math.sqrt(2)
    low = torch.tensor([a, a], device=device, dtype=dtype).expand(channels, 1, 2)
    high = torch.tensor([a, -a], device=device, dtype=dtype).expand(channels, 1, 2)
    return low, high


def _axis_kernel(taps: torch.Tensor, axis: int) -> torch.Tensor:
    """[C, 1, 2] -> a Conv3d kernel that filters along `axis` (2 = t, 3 = h, 4 = w)."""
    shape = [taps.shape[0], 1, 1, 1, 1]
    shape[axis] = 2
    return taps.reshape(shape)


def haar_patch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 3, T, H, W] -> [B, 3*patch^3, 1 + (T-1)/patch, H/patch, W/patch]: the first frame
    repeated patch-1 times, then log2(patch) levels of a 3D Haar transform, sub-bands in the
    order lll, llh, ..., hhh (axes t, h, w), divided by 2*sqrt(2) per level."""
    x = torch.cat([x[:, :, :1].expand(-1, -1, patch - 1, -1, -1), x], dim=2)
    for _ in range(int(math.log2(patch))):
        c = x.shape[1]
        low, high = _haar_filters(c, x.device, x.dtype)
        x = F.pad(x, (0, 1, 0, 1, 0, 1), mode="reflect")
        bands = [x]
        for axis in (2, 3, 4):
            stride = [1, 1, 1]
            stride[axis - 2] = 2
            bands = [
                F.conv3d(b, _axis_kernel(f, axis), stride=stride, groups=c)
                for b in bands
                for f in (low, high)
            ]
        x = torch.cat(bands, dim=1) / (2 * math.sqrt(2))
    return x


def haar_unpatch(x: torch.Tensor, patch: int) -> torch.Tensor:
    """The inverse of `haar_patch`, dropping the repeated first frames."""
    for _ in range(int(math.log2(patch))):
        c = x.shape[1] // 8
        low, high = _haar_filters(c, x.device, x.dtype)
        bands = list(x.chunk(8, dim=1))
        for axis in (4, 3, 2):  # undo w, then h, then t
            stride = [1, 1, 1]
            stride[axis - 2] = 2
            bands = [
                F.conv_transpose3d(lo, _axis_kernel(low, axis), stride=stride, groups=c)
                + F.conv_transpose3d(hi, _axis_kernel(high, axis), stride=stride, groups=c)
                for lo, hi in zip(bands[0::2], bands[1::2], strict=True)
            ]
        x = bands[0] * (2 * math.sqrt(2))
    return x[:, :, patch - 1 :]


def _level_widths(levels: int) -> list[int]:
    return [BASE_WIDTH * m for m in (2, 4, 4)[:levels]]


# How the decoder picks its up-sampling levels. NVIDIA's decoder has two rules: "standard"
# (their default) and "legacy" (their `legacy_mode`). A released file's key names do not say
# which one it was exported with; what the file computes does (see loader.py).
DECODER_VARIANTS = ("standard", "legacy")


def _steps(spatial: int, temporal: int, patch: int) -> tuple[int, int]:
    """x2 resampling steps the network makes in (space, time); the patcher makes the rest."""
    return int(math.log2(spatial)) - int(math.log2(patch)), int(math.log2(temporal)) - int(math.log2(patch))


def encoder_resampling(levels: int, temporal: int, spatial: int, patch: int) -> list[tuple[bool, bool]]:
    """(spatial, temporal) x2 down-sampling after encoder level i, for i < levels - 1:
    space while i < S, time while i < T."""
    s, t = _steps(spatial, temporal, patch)
    return [(i < s, i < t) for i in range(levels - 1)]


def decoder_resampling(levels: int, temporal: int, spatial: int, patch: int,
                       variant: str = "standard") -> list[tuple[bool, bool]]:  # fmt: skip
    """(spatial, temporal) x2 up-sampling of decoder level i (`up.{i}`), for i > 0; item i - 1.

    NVIDIA's rule, with r = levels - 1 - i the level's place counted from the deepest:
    time when 0 < r < T + 1 (legacy: r < T); space when in time too, or when r < S and S > T.
    It is not the encoder's mirror: DV4x8x8 up-samples in space at up.2, not up.1."""
    if variant not in DECODER_VARIANTS:
        raise ValueError(f"decoder variant must be one of {', '.join(DECODER_VARIANTS)}, not {variant!r}")
    s, t = _steps(spatial, temporal, patch)
    steps = []
    for i in range(1, levels):
        r = levels - 1 - i
        temporal_up = r < t if variant == "legacy" else 0 < r < t + 1
        steps.append((temporal_up or (r < s and s > t), temporal_up))
    return steps


class Encoder(nn.Module):
    def __init__(self, temporal: int, spatial: int, patch: int, levels: int):
        super().__init__()
        self.patch = patch
        widths = _level_widths(levels)
        self.conv_in = factorised_conv(3 * patch**3, BASE_WIDTH)
        self.down = nn.ModuleList()
        width = BASE_WIDTH
        steps = encoder_resampling(levels, temporal, spatial, patch)
        for i, out in enumerate(widths):
            level = nn.Module()
            level.block = nn.ModuleList([ResidualBlock(width, out), ResidualBlock(out, out)])
            width = out
            if i < levels - 1 and any(steps[i]):
                level.downsample = HybridDownsample(width, *steps[i])
            self.down.append(level)
        self.mid = MiddleBlock(width)
        self.norm_out = FrameNorm(width)
        self.conv_out = factorised_conv(width, LATENT_CHANNELS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(haar_patch(x, self.patch))
        for level in self.down:
            for block in level.block:
                x = block(x)
            if hasattr(level, "downsample"):
                x = level.downsample(x)
        return self.conv_out(F.silu(self.norm_out(self.mid(x))))


class Decoder(nn.Module):
    """`upsampling`: (spatial, temporal) per level above 0, as `decoder_resampling` gives."""

    def __init__(self, patch: int, levels: int, upsampling: list[tuple[bool, bool]]):
        super().__init__()
        self.patch = patch
        widths = _level_widths(levels)
        width = widths[-1]
        self.conv_in = factorised_conv(LATENT_CHANNELS, width)
        self.mid = MiddleBlock(width)
        up = [None] * levels
        for i in reversed(range(levels)):  # up.{i} mirrors down.{i}; run from the deepest
            level = nn.Module()
            level.block = nn.ModuleList(
                [ResidualBlock(width if j == 0 else widths[i], widths[i]) for j in range(3)]
            )
            width = widths[i]
            if i > 0 and any(upsampling[i - 1]):
                level.upsample = HybridUpsample(width, *upsampling[i - 1])
            up[i] = level
        self.up = nn.ModuleList(up)
        self.norm_out = FrameNorm(width)
        self.conv_out = factorised_conv(width, 3 * patch**3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                x = block(x)
            if hasattr(level, "upsample"):
                x = level.upsample(x)
        return haar_unpatch(self.conv_out(F.silu(self.norm_out(x))), self.patch)


def released_levels(kind: str, temporal: int, spatial: int) -> int:
    """Levels of the released models: [2, 4, 4] channel multipliers, [2, 4] for CV4x8x8."""
    return 2 if (kind, temporal, spatial) == ("CV", 4, 8) else 3


class CosmosEncoderNetwork(nn.Module):
    """Frames -> (latents,) for CV or (indices, codes) for DV, as the released encoder.jit."""

    def __init__(self, kind: str, temporal: int, spatial: int, patch: int = 4, levels: int | None = None):
        super().__init__()
        levels = levels or released_levels(kind, temporal, spatial)
        self.encoder = Encoder(temporal, spatial, patch, levels)
        self.quant_conv = pointwise_conv(LATENT_CHANNELS, FSQ_CHANNELS if kind == "DV" else LATENT_CHANNELS)
        self.quantizer = FiniteScalarQuantizer() if kind == "DV" else None

    def forward(self, x: torch.Tensor):
        z = self.quant_conv(self.encoder(x))
        if self.quantizer is None:
            return (z,)
        indices, codes = self.quantizer(z.float())
        return indices, codes.to(z.dtype)


class CosmosDecoderNetwork(nn.Module):
    """Latents (CV) or indices (DV) -> frames, as the released decoder.jit. `variant` picks
    NVIDIA's rule for the up-sampling levels; `upsampling` gives them outright instead."""

    def __init__(self, kind: str, temporal: int, spatial: int, patch: int = 4, levels: int | None = None,
                 variant: str = "standard", upsampling: list[tuple[bool, bool]] | None = None):  # fmt: skip
        super().__init__()
        levels = levels or released_levels(kind, temporal, spatial)
        self.inv_quant = FiniteScalarQuantizer() if kind == "DV" else None
        self.post_quant_conv = pointwise_conv(
            FSQ_CHANNELS if kind == "DV" else LATENT_CHANNELS, LATENT_CHANNELS
        )
        if upsampling is None:
            upsampling = decoder_resampling(levels, temporal, spatial, patch, variant)
        self.upsampling = [tuple(step) for step in upsampling]
        self.decoder = Decoder(patch, levels, upsampling)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.inv_quant is not None:
            tokens = self.inv_quant.indices_to_codes(tokens).to(self.post_quant_conv.conv3d.weight.dtype)
        return self.decoder(self.post_quant_conv(tokens))


def _count_levels(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many levels `prefix` (encoder.down or decoder.up) has in a state dict."""
    found = {int(key[len(prefix) + 1 :].split(".", 1)[0]) for key in state if key.startswith(prefix + ".")}
    return max(found) + 1 if found else 0


def network_from_release(state: dict[str, torch.Tensor], part: str, kind: str, temporal: int,
                         spatial: int, variant: str = "standard") -> nn.Module:  # fmt: skip
    """Our encoder or decoder network (`part`) filled from a released TorchScript file's
    `state_dict()`; for a decoder, with the level rule `variant`. The patch size and the
    number of levels are read from the weights. Keys the network does not use (buffers,
    weights of no-op stages) are left out. Raises ValueError naming any parameter left
    unfilled or of the wrong shape: a silently random layer is the classic failure of a port."""
    probe_key = "encoder.conv_in.0.conv3d.weight" if part == "encoder" else "decoder.conv_out.1.conv3d.weight"
    if probe_key not in state:
        raise ValueError(f"it does not hold the Cosmos network ({probe_key} is missing)")
    channels = state[probe_key].shape[1 if part == "encoder" else 0]  # 3 * patch^3
    patch = round((channels / 3) ** (1 / 3))
    levels = _count_levels(state, "encoder.down" if part == "encoder" else "decoder.up")
    if levels not in (2, 3):
        raise ValueError(f"it has {levels} levels; the released Cosmos {part}s have 2 or 3")
    if part == "encoder":
        network = CosmosEncoderNetwork(kind, temporal, spatial, patch=patch, levels=levels)
    else:
        network = CosmosDecoderNetwork(kind, temporal, spatial, patch=patch, levels=levels, variant=variant)
    wanted = network.state_dict()
    missing = [key for key in wanted if key not in state]
    misshaped = [f"{key} {tuple(state[key].shape)} (needs {tuple(wanted[key].shape)})"
                 for key in wanted if key in state and state[key].shape != wanted[key].shape]  # fmt: skip
    if missing or misshaped:
        problems = [f"{len(missing)} parameters missing: {', '.join(missing[:5])}" if missing else "",
                    f"wrong shapes: {', '.join(misshaped[:5])}" if misshaped else ""]  # fmt: skip
        raise ValueError(
            f"it does not fit the {kind}{temporal}x{spatial}x{spatial} {part} network; "
            + "; ".join(p for p in problems if p)
        )
    network.load_state_dict({key: state[key] for key in wanted})
    return network
