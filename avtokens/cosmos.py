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
from avtokens.demo_weights import STAND_IN_MARKER
from avtokens.media import sha256_of
from avtokens.presets import Preset

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AvTokensError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU")
    return device


def checkpoint_files(checkpoint_dir: Path | str, preset: Preset) -> dict[str, Path]:
    folder = Path(checkpoint_dir) / preset.model
    return {"encoder": folder / "encoder.jit", "decoder": folder / "decoder.jit"}


def require_checkpoint(checkpoint_dir: Path | str, preset: Preset, part: str) -> Path:
    """The path of one checkpoint file, or an error naming what was expected where."""
    path = checkpoint_files(checkpoint_dir, preset)[part]
    if not path.is_file():
        raise AvTokensError(
            f"preset '{preset.name}' needs the Cosmos checkpoint {path} (file {path.name} of "
            f"the Hugging Face repo nvidia/{preset.model}), which is missing: download "
            f"encoder.jit and decoder.jit into {path.parent}, point `checkpoints:` at the "
            f"folder that holds {preset.model}/, or use `weights: demo` to try the workflow"
        )
    return path


def _model_dtypes(device: torch.device, discrete: bool) -> tuple[torch.dtype, torch.dtype]:
    """(encoder, decoder) dtypes. bf16 on GPU. On CPU PyTorch has no bf16 3D average
    pooling, so float32, except the DV decoder, whose graph casts its codes to bf16."""
    if device.type == "cuda":
        return torch.bfloat16, torch.bfloat16
    return torch.float32, (torch.bfloat16 if discrete else torch.float32)


class _CosmosNetwork:
    """One loaded TorchScript file of a preset (`part`: encoder or decoder) and what the
    token metadata records about it."""

    part: str

    def __init__(self, checkpoint_dir, preset: Preset, device: torch.device):
        self.preset, self.device = preset, device
        encoder_dtype, decoder_dtype = _model_dtypes(device, preset.is_discrete)
        self.dtype = encoder_dtype if self.part == "encoder" else decoder_dtype
        path = require_checkpoint(checkpoint_dir, preset, self.part)
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
        self.record = {
            "file": str(path),
            "sha256": sha256_of(path),
            "dtype": str(self.dtype).removeprefix("torch."),
            "stand_in": self.stand_in,
        }
        if self.stand_in:
            log.warning("%s holds stand-in weights: its tokens carry no meaning", path)


class CosmosEncoder(_CosmosNetwork):
    """frames [B, 3, T, H, W] in [-1, 1] -> CV latents bf16 [B, t, h, w, 16] or DV
    indices int64 [B, t, h, w]; T must be 1 + k*tc and H, W multiples of the spatial factor."""

    part = "encoder"

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
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.preset.is_discrete:
            tokens = tokens.to(self.device, torch.int64)
        else:
            tokens = tokens.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype)
        return self.module(tokens).float().clamp_(-1, 1)
