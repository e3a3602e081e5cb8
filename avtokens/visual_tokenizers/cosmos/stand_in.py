"""Cosmos stand-in weights, for offline runs and tests.

A TorchScript `encoder.jit` / `decoder.jit` pair per kind and factor pair that obeys the
released models' I/O contract: input [B, 3, T, H, W] in [-1, 1]; causal in time (the first
latent frame codes one frame, each later one tc frames, and a T that is not 1 + k*tc
silently gives the wrong length, as the real graphs do); CV latents [B, 16, t, H/s, W/s] as
the first element of a tuple; DV (indices int32 [B, t, h, w], codes [B, 6, t, h, w]) with
indices in [0, 64000); an unclamped decoder output of 1 + tc*(t - 1) frames; weights stored
as bf16; an average pool in the encoder (no bf16 kernel on CPU) and a bf16 cast inside the
DV decoder, so the dtype rules bite here too. The network is a block-average encoder and a
nearest-neighbour decoder carrying the colour in three channels, plus randomly initialised
channels: reconstructions look like a blocky copy of the input, so a misplaced frame or crop
shows up in tests.

Both files carry a marker (`STAND_IN_MARKER`) that the loader reads, so stand-in output says so.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from avtokens.atomic import write_saved
from avtokens.visual_tokenizers.cosmos.fsq import FiniteScalarQuantizer
from avtokens.visual_tokenizers.cosmos.network import (
    CausalConv3d,
    CosmosDecoderNetwork,
    CosmosEncoderNetwork,
    HybridUpsample,
)

STAND_IN_MARKER = "avtokens_stand_in.json"


class StandInEncoder(nn.Module):
    def __init__(self, discrete: bool, temporal: int, spatial: int):
        super().__init__()
        self.temporal = temporal
        channels = 6 if discrete else 16
        block = (temporal, spatial // 2, spatial // 2)
        self.embed = nn.Conv3d(3, channels, kernel_size=block, stride=block, bias=False)
        with torch.no_grad():
            self.embed.weight.normal_(0, 0.02)
            self.embed.weight[:3] = 0
            # Colour channels hold the block mean (doubled for DV, to span the FSQ levels).
            gain = (2.0 if discrete else 1.0) / self.embed.weight[0, 0].numel()
            for c in range(3):
                self.embed.weight[c, c] = gain
        self.quantizer = FiniteScalarQuantizer() if discrete else None

    def forward(self, x):
        # Causal: latent frame 0 codes frame 0 alone (as tc copies of it), each later one the
        # next tc frames. Pooled first (frame by frame, so the same as after the padding): the
        # padded copy is a quarter of the input's size (a 4K window: 0.6 GB, not 2.4).
        pooled = F.avg_pool3d(x, kernel_size=(1, 2, 2))
        z = self.embed(torch.cat([pooled[:, :, :1].repeat(1, 1, self.temporal - 1, 1, 1), pooled], dim=2))
        if self.quantizer is None:
            return z, z
        return self.quantizer(z)


class StandInDecoder(nn.Module):
    def __init__(self, discrete: bool, temporal: int, spatial: int):
        super().__init__()
        self.temporal = temporal
        channels = 6 if discrete else 16
        self.quantizer = FiniteScalarQuantizer() if discrete else None
        self.post = nn.Conv3d(channels, 3, kernel_size=1, bias=False)
        self.scale = (1.0, float(spatial), float(spatial))
        with torch.no_grad():
            self.post.weight.normal_(0, 0.01)
            for c in range(3):
                self.post.weight[c, c] = 1.0

    def forward(self, tokens):
        if self.quantizer is not None:
            tokens = self.quantizer.indices_to_codes(tokens).to(torch.bfloat16)
        # Nearest-neighbour blocks: frame 0 from latent frame 0, then tc frames from each later
        # one (causal). The latent frames are picked first, so that only the output is made at
        # full size, in the tokens' dtype (a 4K window: 1.2 GB in bf16).
        latents = self.post(tokens)
        frames = torch.arange(1 + self.temporal * (latents.shape[2] - 1), device=latents.device)
        picked = latents.index_select(2, (frames + self.temporal - 1) // self.temporal)
        return F.interpolate(picked, scale_factor=self.scale, mode="nearest")


@contextlib.contextmanager
def _quiet():
    """Silence TorchScript's deprecation notices: the official format is TorchScript, so the
    stand-ins must be too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # Tracing fixes shape-dependent branches (one latent frame or more), as in the
        # released graphs.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def write_cosmos_stand_in(folder: Path | str, discrete: bool, temporal: int, spatial: int, seed: int = 0,
                          full_size: bool = False, variant: str = "standard") -> None:  # fmt: skip
    """Write `encoder.jit` and `decoder.jit` for one kind and factor pair into `folder`:
    the tiny stand-in, or with `full_size` the published architecture with random weights
    (the released models' cost, for benchmarks), its decoder levels by NVIDIA's `variant` rule."""
    torch.manual_seed(seed)
    kind = "DV" if discrete else "CV"
    if full_size:
        encoder = CosmosEncoderNetwork(kind, temporal, spatial)
        decoder = with_every_upsampling_conv(CosmosDecoderNetwork(kind, temporal, spatial, variant=variant))
    else:
        encoder = StandInEncoder(discrete, temporal, spatial)
        decoder = StandInDecoder(discrete, temporal, spatial)
    marker = {"stand_in": True, "kind": kind, "temporal": temporal, "spatial": spatial, "seed": seed,
              "network": "cosmos" if full_size else "tiny"}  # fmt: skip
    trace_release_files(folder, encoder, decoder, marker)


def with_every_upsampling_conv(decoder: CosmosDecoderNetwork) -> CosmosDecoderNetwork:
    """`decoder` with all three up-sampling convolutions at every level above 0, used or not,
    as NVIDIA's released files carry them: then key names say nothing about which levels
    up-sample, and only what the file computes does."""
    for level in decoder.decoder.up[1:]:
        width = level.block[-1].conv2[1].conv3d.out_channels
        if not hasattr(level, "upsample"):
            level.upsample = HybridUpsample(width, spatial=False, temporal=False)
        if not level.upsample.temporal:
            level.upsample.conv1 = CausalConv3d(width, width, (3, 1, 1))
        if not level.upsample.spatial:
            level.upsample.conv2 = CausalConv3d(width, width, (1, 3, 3), padding=1)
    return decoder


def trace_release_files(folder: Path | str, encoder: nn.Module, decoder: nn.Module, marker: dict) -> None:
    """Trace `encoder` and `decoder` (of the kind and factors `marker` names) into
    `encoder.jit` / `decoder.jit` as the release files are laid out: traced at one size (the
    graph then runs at any size), bf16 weights, the DV decoder traced in bf16 so that its
    graph casts its codes to bf16; `marker` is stored in both, flagging them as stand-ins."""
    folder = Path(folder)
    temporal, spatial = marker["temporal"], marker["spatial"]
    encoder, decoder = encoder.eval(), decoder.eval()
    frames = torch.rand(1, 3, 1 + 2 * temporal, 2 * spatial, 3 * spatial) * 2 - 1
    # check_trace off: tracing's own check runs each network twice more (40% of the time for
    # the full-size ones); what a graph computes is checked against our network on load
    # (the self-check) and by the engines' parity tests.
    with torch.no_grad(), _quiet():
        traced_encoder = torch.jit.trace(encoder, frames, check_trace=False)
        tokens = encoder(frames)[0]
        if marker["kind"] == "DV":
            traced_decoder = torch.jit.trace(decoder.to(torch.bfloat16), tokens, check_trace=False)
        else:
            traced_decoder = torch.jit.trace(decoder, tokens, check_trace=False)
    extra = {STAND_IN_MARKER: json.dumps(marker)}
    for name, module in (("encoder.jit", traced_encoder), ("decoder.jit", traced_decoder)):
        with _quiet():
            write_saved(
                folder / name, lambda f, m=module: torch.jit.save(m.to(torch.bfloat16), f, _extra_files=extra)
            )
