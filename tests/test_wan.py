"""The Wan2.1 VAE through diffusers, from its official layout: our windowed encode and our
decode against diffusers' own whole-clip `encode()` and `decode()` of the same frames, the
checkpoint checks, and the seed command with `--family`."""

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from helpers import REPO, make_clip, max_bf16_steps, place_stand_ins

from avtokens import AvTokensError, load_tokens
from avtokens.media import probe, read_frame_windows
from avtokens.picture import plan_picture
from avtokens.presets import make_preset
from avtokens.visual import encode_video_file
from avtokens.visual_tokenizers.wan import CONFIG, WAN21

CPU = torch.device("cpu")


def source_frames(path, count: int) -> torch.Tensor:
    """The clip's first `count` frames as the tokenizer sees them: [1, 3, count, H, W] in [-1, 1]."""
    windows = list(read_frame_windows(path, plan_picture(probe(path)), count))
    frames = torch.from_numpy(np.concatenate(windows)[:count])
    return (frames.permute(3, 0, 1, 2).float() / 127.5 - 1).unsqueeze(0)


@pytest.fixture(scope="module")
def wan_clip(tmp_path_factory, demo_weights):
    """A 17-frame clip (1 + 4x4) and the stand-in VAE, loaded by diffusers as its model card does."""
    from diffusers import AutoencoderKLWan

    folder = tmp_path_factory.mktemp("wan")
    clip = make_clip(folder / "clip.mp4", 64, 48, 17, rate="25", audio_channels=None)
    checkpoint = demo_weights / make_preset("w", {"family": "wan2.1", "weights": "demo"}).model
    vae = AutoencoderKLWan.from_pretrained(checkpoint, subfolder="vae", torch_dtype=torch.float32).eval()
    return folder, clip, checkpoint, vae


def normalized(vae, z: torch.Tensor) -> torch.Tensor:
    """Wan's pipelines' latents: (z - latents_mean) / latents_std, as [B, t, h, w, 16]."""
    shape = (1, -1, 1, 1, 1)
    mean, std = (
        torch.tensor(vae.config.latents_mean).view(shape),
        torch.tensor(vae.config.latents_std).view(shape),
    )
    return ((z - mean) / std).permute(0, 2, 3, 4, 1)


def colours(vae, latent: torch.Tensor) -> torch.Tensor:
    """A latent frame [h, w, 16] of stored tokens -> its first three channels as the encoder gave
    them, [3, h, w] (the stand-in's block colours)."""
    mean, std = torch.tensor(vae.config.latents_mean[:3]), torch.tensor(vae.config.latents_std[:3])
    return (latent[..., :3].float() * std + mean).permute(2, 0, 1)


def test_our_windowed_encode_is_diffusers_whole_clip_encode(wan_clip):
    folder, clip, checkpoint, vae = wan_clip
    frames = source_frames(clip, 17)
    with torch.inference_mode():
        whole = normalized(vae, vae.encode(frames).latent_dist.mode())  # [1, 5, 6, 8, 16]
    tokens = {}
    for window in (17, 5):  # one window of the whole clip; four, each restarting the cache
        preset = make_preset("w", {"family": "wan2.1", "window": window, "weights": "demo"})
        encode_video_file(clip, folder / f"w{window}.safetensors", preset, checkpoint, "cpu", 2, "clip")
        tokens[window] = load_tokens(folder / f"w{window}.safetensors")
    latents = tokens[17]["latents"]
    assert latents.dtype == torch.bfloat16 and latents.shape == whole.shape == (1, 5, 6, 8, 16)
    assert max_bf16_steps(whole, latents.double()) <= 1  # bf16's own rounding, no more
    windowed = tokens[5]["latents"]
    assert windowed.shape == (1, 2 * 4, 6, 8, 16)  # 17 frames: windows of 5, 5, 5 and 2 (padded)
    # Causal: the first window's two latent frames are the whole clip's first two; the second
    # window starts afresh: its first latent frame codes frame 5 alone, where the whole clip's
    # codes frames 5-8 (the stand-in's colour channels: 8x8 block means of them).
    assert max_bf16_steps(whole[:, :2], windowed[:, :2].double()) <= 1
    alone, four = (
        torch.nn.functional.avg_pool2d(frames[0, :, span].mean(1), 8) for span in (slice(5, 6), slice(5, 9))
    )
    assert (alone - four).abs().max() > 0.05  # the clip moves: more than both tolerances below
    for latents, expected in ((windowed, alone), (whole, four)):
        assert (colours(vae, latents[0, 2]) - expected).abs().max() < 0.01  # bf16 steps of z / std
    tokenizer = tokens[17].metadata["tokenizer"]
    assert (tokenizer["family"], tokenizer["kind"], tokenizer["temporal"], tokenizer["spatial"]) == (
        "wan2.1", "CV", 4, 8)  # fmt: skip
    normalization = tokenizer["latent_normalization"]
    assert normalization["applied"] and normalization["latents_std"] == list(vae.config.latents_std)
    assert tokens[17].metadata["latent"]["channels"] == 16 and tokens[17].metadata["stand_in_weights"]


def test_our_decode_is_diffusers_decode_of_the_same_latents(wan_clip):
    _, _, checkpoint, vae = wan_clip
    preset = make_preset("w", {"family": "wan2.1", "window": 9, "weights": "demo"})
    latents = torch.randn(2, 3, 6, 8, 16, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    decoder = WAN21.decoder(checkpoint, preset, CPU, None)
    frames = decoder(latents)
    shape = (1, -1, 1, 1, 1)
    z = latents.float().permute(0, 4, 1, 2, 3) * torch.tensor(vae.config.latents_std).view(shape)
    z = z + torch.tensor(vae.config.latents_mean).view(shape)
    with torch.inference_mode():
        expected = vae.decode(z).sample
    assert frames.shape == expected.shape == (2, 3, 9, 48, 64)
    assert max_bf16_steps(expected, frames) <= 1


def test_the_stand_in_reconstructs_a_blocky_copy_of_its_input(wan_clip):
    """Loaded by diffusers as real weights are, the stand-in's mean latent is each 8x8 block's
    colour (the first frame alone, then each 4 frames' average) and its decoder repeats it back,
    checked against torch's own pooling, so that a person can judge its reconstructions by eye."""
    _, clip, _, vae = wan_clip
    frames = source_frames(clip, 9)
    with torch.inference_mode():
        z = vae.encode(frames).latent_dist.mode()
        reconstruction = vae.decode(z).sample
    spans = [frames[0, :, :1], frames[0, :, 1:5], frames[0, :, 5:9]]  # what each latent frame codes
    blocks = torch.stack([torch.nn.functional.avg_pool2d(span.mean(1), 8) for span in spans], 1)
    assert z.shape == (1, 16, 3, 6, 8) and (z[0, :3] - blocks).abs().max() < 1e-3
    copy = blocks.repeat_interleave(8, -1).repeat_interleave(8, -2)
    expected = torch.cat([copy[:, :1], copy[:, 1:].repeat_interleave(4, 1)], 1)
    assert (reconstruction[0] - expected).abs().max() < 1e-3
    psnr = 10 * torch.log10(4 / (reconstruction - frames).square().mean())
    assert psnr > 12, psnr  # a blocky copy of a detailed test pattern; random weights give about 6


def test_a_checkpoint_that_is_not_the_presets_model_is_refused(wan_clip, tmp_path):
    _, _, checkpoint, _ = wan_clip
    preset = make_preset("w", {"family": "wan2.1", "weights": "demo"})
    shutil.copytree(checkpoint, tmp_path / "wan22")
    config = json.loads((tmp_path / "wan22" / CONFIG).read_text())
    (tmp_path / "wan22" / CONFIG).write_text(
        json.dumps({**config, "scale_factor_spatial": 16, "patch_size": 2})
    )
    with pytest.raises(AvTokensError) as err:
        WAN21.encoder(tmp_path / "wan22", preset, CPU, None)
    assert str(err.value) == (
        f"{tmp_path / 'wan22' / CONFIG}: preset 'w' expects a CV4x8x8 Wan2.1 VAE, but the config compresses "
        "4x16x16 with patch size 2 (a Wan2.2 VAE)"
    )
    with pytest.raises(AvTokensError) as err:
        WAN21.decoder(tmp_path / "nothing", preset, CPU, None)
    assert str(err.value) == (
        f"{tmp_path / 'nothing'}: the Wan2.1 VAE decoder of preset 'w' is missing vae/config.json, "
        "vae/diffusion_pytorch_model.safetensors (files of the Hugging Face repo "
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers)"
    )


@pytest.mark.workflow
def test_the_seed_command_runs_another_family(tmp_path):
    videos, tokens, recon = tmp_path / "videos", tmp_path / "tokens", tmp_path / "recon"
    make_clip(videos / "clip.mp4", 48, 32, 13, rate="25")
    # The stand-ins as an earlier call left them: the family's own is built by the README's
    # starter steps (test_make_run), and the command's stand-in build by test_tokenize_video.
    place_stand_ins(tokens / ".tokenize_video" / "w")
    proc = subprocess.run(
        [str(REPO / "tokenize_video"), videos, "clip.mp4", "w", "0", "4", "8", tokens, recon,
         "--family", "wan2.1", "--window", "9", "--weights", "demo", "--cores", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    visual = load_tokens(tokens / "w_visual_tokens.safetensors")
    # 13 frames: a window of 9 (3 latent frames), then 4 padded to 5 (2 latent frames).
    assert visual["latents"].shape == (1, 3 + 2, 4, 6, 16)
    assert visual.metadata["tokenizer"]["family"] == "wan2.1"
    assert probe(recon / "w_combined.mp4").has_audio
    assert "w: 0 min 1 sec; 25 fps; 48x32 => 5 latent frames of 6x4 visual" in proc.stdout
