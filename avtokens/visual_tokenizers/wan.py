"""The Wan2.1 VAE, the video tokenizer of Wan2.1 and of NVIDIA's Cosmos-Predict2: diffusers'
`AutoencoderKLWan` from a Diffusers repo's `vae/` folder (`config.json` and
`diffusion_pytorch_model.safetensors`), loaded as its model card does
(`AutoencoderKLWan.from_pretrained(repo, subfolder="vae", torch_dtype=torch.float32)`).

Causal 4x8x8: a window of 1 + 4k frames gives 1 + k latent frames of 16 continuous channels
(the mean of the encoder's Gaussian), stored in bf16 as CV latents are. Wan's and
Cosmos-Predict2's pipelines train on `(z - latents_mean) / latents_std` (the config's 16 values
each), so the tokens are stored normalised that way and the decoder undoes it; the token file
records the normalisation. torch and diffusers are imported where a model loads or runs: the
Snakefile reads this module while it plans.

The full-size stand-in (benchmarks) is `AutoencoderKLWan()` with random weights: diffusers gives
the class the Wan2.1 VAE's architecture as defaults (read in diffusers 0.42's source: base_dim
96, dim_mult [1, 2, 4, 4], 2 residual blocks, no attention scales, temporal down-sampling
[False, True, True], z_dim 16, 4x8x8; 126.9 M parameters, the Wan2.1 report's 127 M). Checked
offline only: not against the repo's `vae/config.json`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from avtokens import AvTokensError
from avtokens.joblog import warn_stand_in
from avtokens.storage import as_declared
from avtokens.visual_tokenizers.base import VisualTokenizer

log = logging.getLogger(__name__)

CONFIG, WEIGHTS = "vae/config.json", "vae/diffusion_pytorch_model.safetensors"
# A stand-in's marker, beside its config: its tokens and reconstructions carry no meaning.
STAND_IN_FILE = "vae/avtokens_stand_in.json"
# The stand-in: the real network's shape (three down-samplings, two of them in time) at a
# tiny width, so that it runs in seconds on a CPU.
STAND_IN_CONFIG = dict(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, attn_scales=[],
                       temperal_downsample=[False, True, True])  # fmt: skip
# Its weights make it what the Cosmos stand-ins are, a blocky copy (see `blocky_copy`): the
# picture rides on channels 0-2 as RGB + _OFFSET, where SiLU is the identity to 2e-4, beside a
# channel at _LEVEL, which makes every RMS norm a fixed scale (to 4e-5).
_OFFSET, _LEVEL = 12.0, 1000.0


class Wan21VAE(VisualTokenizer):
    name = "wan2.1"
    label = "Wan2.1 VAE"
    stand_in_output = ("a blocky copy of the video: each 8x8 block in its colour, averaged over the four "
                       "frames of its latent frame")  # fmt: skip
    releases = {
        "2.1": {("CV", 4, 8): "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"},
        # The same VAE, as NVIDIA's Cosmos-Predict2 world models ship it (a gated repo: HF_TOKEN).
        "cosmos-predict2": {("CV", 4, 8): "nvidia/Cosmos-Predict2-2B-Video2World"},
    }
    default_release = "2.1"
    # 81 frames: what Wan2.1 generates and was trained on; the encoder's causal cache keeps
    # memory nearly flat in the window's length, so longer windows cost little.
    default_window = 81
    engines = ("auto", "eager")  # diffusers' modules as they are
    files = {"encoder": (CONFIG, WEIGHTS), "decoder": (CONFIG, WEIGHTS)}

    def single_window_advice(self, window: int) -> str:
        return (f"the VAE codes 4 frames at a time, so its memory grows with the picture, not the window "
                f"(now {window}); run it on a device with more memory")  # fmt: skip

    def open_encoder(self, folder, preset, device, digests):
        return WanEncoder(folder, preset, device, digests)

    def open_decoder(self, folder, preset, device, digests):
        return WanDecoder(folder, preset, device, digests)

    def write_stand_in(self, folder, kind, temporal, spatial, full_size=False, seed: int = 0):
        import torch
        from diffusers import AutoencoderKLWan

        from avtokens.atomic import atomic_output

        torch.manual_seed(seed)
        if full_size:  # diffusers' defaults are the released VAE's config (module docstring)
            vae = AutoencoderKLWan()
        else:
            vae = AutoencoderKLWan(**STAND_IN_CONFIG)
            blocky_copy(vae, torch.Generator().manual_seed(seed))
        folder = Path(folder)
        vae.save_pretrained(folder / "vae")
        with atomic_output(folder / STAND_IN_FILE) as tmp:
            tmp.write_text(json.dumps({"stand_in": True, "family": self.name, "seed": seed}) + "\n")


WAN21 = Wan21VAE()


def blocky_copy(vae, generator) -> None:
    """Set the weights of a stand-in `AutoencoderKLWan` (STAND_IN_CONFIG) so that its encoder's
    mean is each 8x8 block's colour, averaged over the 4 frames of its latent frame (the first
    latent frame: the first frame), and its decoder repeats each latent position over its block
    and frames, as the Cosmos stand-ins do: its reconstructions are a blocky copy of the input,
    which a person can judge by eye, where random weights give grey noise. Residual branches
    and attention add nothing (their last layers are zero); the latent's other 13 channels are
    random mixtures of the colours, which the decoder ignores. The same class, config and file
    as the real weights, loaded the same way."""
    import torch

    def carry(weight, channels, tap, value=1.0, into=0):
        """Output channel into + c takes input channel c at kernel position `tap`."""
        for c in channels:
            weight[(into + c, c, *tap)] = value

    picture, level = range(3), 3  # the colour channels, the constant one
    norm = torch.tensor(_LEVEL**2 + 3 * _OFFSET**2).sqrt()  # a position's RMS norm, to 4e-5
    current = (2, 1, 1)  # a causal 3x3x3 kernel's tap on the current frame and position
    with torch.no_grad():
        for name, parameter in vae.named_parameters():
            if not name.endswith("gamma"):  # the RMS norms' scales stay 1
                parameter.zero_()
        for coder in (vae.encoder, vae.decoder):
            coder.conv_in.bias[level] = _LEVEL
            coder.conv_in.bias[:3] = _OFFSET
            carry(coder.conv_in.weight, picture, current)
            gamma = coder.norm_out.gamma
            gamma[:3] = norm / gamma.shape[0] ** 0.5  # undoes the norm's scale on the colours
            gamma[3:] = 1 / gamma.shape[0] ** 0.5
        for layer in vae.encoder.down_blocks:  # each resampler: 2x2 means, and in time pairs of frames
            if hasattr(layer, "resample") and isinstance(layer.resample, torch.nn.Sequential):
                for c in range(layer.dim):
                    layer.resample[1].weight[c, c, :2, :2] = 0.25
                if hasattr(layer, "time_conv"):
                    carry(layer.time_conv.weight, range(layer.dim), (1, 0, 0), 0.5)
                    carry(layer.time_conv.weight, range(layer.dim), (2, 0, 0), 0.5)
        z_dim = vae.config.z_dim
        out = vae.encoder.conv_out  # the Gaussian's mean: the colours, then mixtures; log-variance 0
        carry(out.weight, picture, current)
        out.bias[:3] = -_OFFSET
        mixtures = torch.randn(z_dim - 3, 3, generator=generator) / 3
        out.weight[3:z_dim, :3, 2, 1, 1] = mixtures
        out.bias[3:z_dim] = -_OFFSET * mixtures.sum(dim=1)
        carry(vae.quant_conv.weight, range(2 * z_dim), (0, 0, 0))
        carry(vae.post_quant_conv.weight, range(z_dim), (0, 0, 0))
        for block in vae.decoder.up_blocks:  # each: its first residual block, then its up-sampler
            shortcut = block.resnets[0].conv_shortcut
            if isinstance(shortcut, torch.nn.Conv3d):
                carry(shortcut.weight, range(shortcut.in_channels), (0, 0, 0))
            for upsampler in block.upsamplers or []:
                conv = upsampler.resample[1]  # after a nearest-neighbour doubling
                carry(conv.weight, range(conv.out_channels), (1, 1))
                if hasattr(upsampler, "time_conv"):  # each latent frame twice
                    for half in (0, upsampler.dim):
                        carry(upsampler.time_conv.weight, range(upsampler.dim), (2, 0, 0), into=half)
        carry(vae.decoder.conv_out.weight, picture, current)
        vae.decoder.conv_out.bias[:] = -_OFFSET


class _WanVAE:
    """The VAE of a checkpoint folder, checked against the preset, plus what the token metadata
    records of it. `digests`: the sha256 of its files (both pinned: the config holds the latent
    normalisation the tokens are stored in)."""

    def __init__(self, folder, preset, device, digests):
        import torch
        from diffusers import AutoencoderKLWan

        from avtokens.checkpoints import from_pretrained

        self.preset, self.device, self.dtype = preset, device, torch.float32  # as the model card loads it
        vae = from_pretrained(AutoencoderKLWan, folder, subfolder="vae", torch_dtype=self.dtype,
                              low_cpu_mem_usage=False)  # fmt: skip
        config = vae.config
        found = (config.scale_factor_temporal, config.scale_factor_spatial, config.patch_size)
        if found != (preset.temporal, preset.spatial, None):
            raise AvTokensError(
                f"{folder / CONFIG}: preset '{preset.name}' expects a {preset.kind}{preset.factors} "
                f"Wan2.1 VAE, but the config compresses {found[0]}x{found[1]}x{found[1]}"
                + (f" with patch size {found[2]} (a Wan2.2 VAE)" if found[2] else "")
            )
        self.vae = vae.to(device).eval()
        self.channels = config.z_dim
        shape = (1, config.z_dim, 1, 1, 1)
        self.mean = torch.tensor(config.latents_mean, dtype=self.dtype, device=device).view(shape)
        self.std = torch.tensor(config.latents_std, dtype=self.dtype, device=device).view(shape)
        self.stand_in = (folder / STAND_IN_FILE).is_file()
        if self.stand_in:
            warn_stand_in(log, folder, "tokens")
        self.record = {"file": as_declared(folder / WEIGHTS), "repo": preset.repo, "sha256": digests[WEIGHTS],
                       "config_sha256": digests[CONFIG], "dtype": str(self.dtype).removeprefix("torch."),
                       "stand_in": self.stand_in, "engine": "eager"}  # fmt: skip
        self.metadata = {
            "latent_normalization": {
                "applied": True,
                "formula": "(z - latents_mean) / latents_std",
                "latents_mean": list(config.latents_mean),
                "latents_std": list(config.latents_std),
            }
        }


class WanEncoder(_WanVAE):
    def __call__(self, frames, full_batch=None):  # uncompiled: each call runs at its own size
        import torch

        with torch.inference_mode():
            z = self.vae.encode(frames.to(self.dtype)).latent_dist.mode()
            return ((z - self.mean) / self.std).permute(0, 2, 3, 4, 1).to(torch.bfloat16)


class WanDecoder(_WanVAE):
    def __call__(self, tokens, full_batch=None):  # uncompiled: each call runs at its own size
        import torch

        with torch.inference_mode():
            z = tokens.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype) * self.std + self.mean
            return self.vae.decode(z).sample  # clamped to [-1, 1] by diffusers
