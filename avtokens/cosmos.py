"""Load the Cosmos causal video tokenizer from its TorchScript files and run it on tensors.

The same code loads the official `encoder.jit` / `decoder.jit` and the stand-ins of
`avtokens.demo_weights`; only the checkpoint folder differs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from avtokens import AvTokensError
from avtokens.checkpoints import WeightsLock
from avtokens.demo_weights import STAND_IN_MARKER
from avtokens.media import sha256_of
from avtokens.presets import Preset

log = logging.getLogger(__name__)


def _model_dtypes(device: torch.device, discrete: bool) -> tuple[torch.dtype, torch.dtype]:
    """(encoder, decoder) dtypes. bf16 on GPU. On CPU PyTorch has no bf16 3D average
    pooling, so float32, except the DV decoder, whose graph casts its codes to bf16."""
    if device.type == "cuda":
        return torch.bfloat16, torch.bfloat16
    return torch.float32, (torch.bfloat16 if discrete else torch.float32)


class _CosmosNetwork:
    """One TorchScript file of a preset (`part`: encoder or decoder), checked against the
    weights lock and probed with a tiny input, plus what the token metadata records of it."""

    part: str

    def __init__(
        self, path: Path | str, preset: Preset, device: torch.device, lock: WeightsLock | None = None
    ):
        self.preset, self.device, path = preset, device, Path(path)
        encoder_dtype, decoder_dtype = _model_dtypes(device, preset.is_discrete)
        self.dtype = encoder_dtype if self.part == "encoder" else decoder_dtype
        if not path.is_file():
            raise AvTokensError(
                f"{path}: Cosmos {self.part} of preset '{preset.name}' is missing (file {path.name} of "
                f"the Hugging Face repo {preset.repo})"
            )
        extra = {STAND_IN_MARKER: ""}
        try:
            with warnings.catch_warnings():  # the released format is TorchScript, deprecated or not
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise AvTokensError(f"{path}: not a loadable TorchScript checkpoint ({first})") from None
        self.module = module.to(self.dtype).eval()
        self.stand_in = bool(extra[STAND_IN_MARKER])
        sha256 = sha256_of(path)
        if lock is not None:
            lock.check(f"{preset.repo}/{path.name}", path, sha256)
        self.record = {
            "file": str(path),
            "repo": preset.repo,
            "sha256": sha256,
            "dtype": str(self.dtype).removeprefix("torch."),
            "stand_in": self.stand_in,
        }
        if self.stand_in:
            log.warning("%s holds stand-in weights: its tokens carry no meaning", path)
        expected, found = f"a {preset.kind}{preset.factors} {self.part}", self._probe()
        if found != expected:
            raise AvTokensError(f"{path}: preset '{preset.name}' expects {expected}, but the file is {found}")

    def _probe(self) -> str:
        """What the network is, read from how it maps a tiny input: "a CV8x16x16 encoder" and so on."""
        raise NotImplementedError


class CosmosEncoder(_CosmosNetwork):
    """frames [B, 3, T, H, W] in [-1, 1] -> CV latents bf16 [B, t, h, w, 16] or DV
    indices int64 [B, t, h, w]; T must be 1 + k*tc and H, W multiples of the spatial factor."""

    part = "encoder"

    @torch.inference_mode()
    def _probe(self) -> str:
        out = self.module(torch.zeros(1, 3, 17, 32, 32, device=self.device, dtype=self.dtype))[0]
        if out.dim() == 4 and not out.is_floating_point():  # DV indices [1, t, h, w]
            kind, t, h = "DV", out.shape[1], out.shape[2]
        elif out.dim() == 5 and out.shape[1] == 16:  # CV latents [1, 16, t, h, w]
            kind, t, h = "CV", out.shape[2], out.shape[3]
        else:
            kind, t, h = None, 0, 0
        if kind is None or t < 2 or 16 % (t - 1) or 32 % h:
            return f"not a Cosmos encoder (17 frames of 32x32 gave {tuple(out.shape)})"
        s = 32 // h
        return f"a {kind}{16 // (t - 1)}x{s}x{s} encoder"

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.module(frames.to(self.dtype))
        if self.preset.is_discrete:
            return out[0].to(torch.int64)
        return out[0].permute(0, 2, 3, 4, 1).to(torch.bfloat16)


class CosmosDecoder(_CosmosNetwork):
    """CV latents [B, t, h, w, 16] or DV indices [B, t, h, w] -> frames float32
    [B, 3, 1 + tc*(t - 1), h*s, w*s], clamped to [-1, 1] (the network does not clamp)."""

    part = "decoder"

    @torch.inference_mode()
    def _probe(self) -> str:
        kind = self.preset.kind
        if self.preset.is_discrete:
            tokens = torch.zeros(1, 2, 2, 2, dtype=torch.int64, device=self.device)
        else:
            tokens = torch.zeros(1, 16, 2, 2, 2, dtype=self.dtype, device=self.device)
        try:
            out = self.module(tokens)
        except RuntimeError as err:
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            return f"not a {kind} decoder (it refused {kind} tokens: {reason})"
        if out.dim() != 5 or out.shape[1] != 3 or out.shape[3] % 2:
            return f"not a Cosmos decoder (2 latent frames of 2x2 gave {tuple(out.shape)})"
        s = out.shape[3] // 2
        return f"a {kind}{out.shape[2] - 1}x{s}x{s} decoder"

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.preset.is_discrete:
            tokens = tokens.to(self.device, torch.int64)
        else:
            tokens = tokens.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype)
        return self.module(tokens).float().clamp_(-1, 1)
