"""The published Cosmos architecture in our own modules: sizes, shapes, causality, and
files in the release layout that load through the same path as the official ones."""

import pytest
import torch

from avtokens.cosmos import CosmosDecoder, CosmosEncoder
from avtokens.cosmos_network import CosmosDecoderNetwork, CosmosEncoderNetwork, haar_patch, haar_unpatch
from avtokens.demo_weights import write_cosmos_stand_in
from avtokens.presets import make_preset

# Millions of parameters (encoder, decoder) of the released models, from the design notes.
SIZES = {
    ("CV", 8, 8): (42.9, 62.7), ("DV", 8, 8): (42.9, 62.7),
    ("CV", 8, 16): (45.5, 65.4), ("DV", 8, 16): (45.5, 65.4),
    ("DV", 4, 8): (42.7, 62.0), ("CV", 4, 8): (30.1, 43.1),
}  # fmt: skip


def millions(module):
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


@pytest.mark.parametrize("model", SIZES, ids=lambda m: f"{m[0]}{m[1]}x{m[2]}x{m[2]}")
def test_each_released_model_has_its_published_size(model):
    assert (millions(CosmosEncoderNetwork(*model)), millions(CosmosDecoderNetwork(*model))) == SIZES[model]


@pytest.mark.parametrize("patch", [2, 4])
def test_the_haar_patcher_is_exactly_invertible(patch):
    frames = torch.rand(2, 3, 1 + 2 * patch, 4 * patch, 6 * patch, dtype=torch.float64) * 2 - 1
    bands = haar_patch(frames, patch)
    assert bands.shape == (2, 3 * patch**3, 3, 4, 6)
    assert torch.allclose(haar_unpatch(bands, patch), frames, atol=1e-12)


@pytest.mark.parametrize("model", [("CV", 8, 8), ("DV", 4, 8), ("CV", 4, 8)], ids=str)
def test_the_frame_count_rule_and_causality(model):
    kind, temporal, spatial = model
    torch.manual_seed(0)
    encoder, decoder = CosmosEncoderNetwork(*model).eval(), CosmosDecoderNetwork(*model).eval()
    frames = torch.rand(1, 3, 1 + 2 * temporal, 2 * spatial, 3 * spatial) * 2 - 1
    later = frames.clone()
    later[:, :, 1 + temporal :] = torch.rand_like(later[:, :, 1 + temporal :])  # the last latent frame's
    with torch.no_grad():
        out, out_later = encoder(frames), encoder(later)
        tokens = out[0]
        if kind == "DV":
            assert tokens.shape == (1, 3, 2, 3) and tokens.dtype == torch.int32
            assert 0 <= int(tokens.min()) and int(tokens.max()) < 64000
            assert torch.equal(tokens[:, :2], out_later[0][:, :2])
        else:
            assert tokens.shape == (1, 16, 3, 2, 3)
            assert torch.allclose(tokens[:, :, :2], out_later[0][:, :, :2], atol=1e-5)
            assert not torch.allclose(tokens[:, :, 2], out_later[0][:, :, 2])
        assert decoder(tokens).shape == frames.shape


def test_full_size_files_in_the_release_layout_load_like_the_official_ones(tmp_path):
    write_cosmos_stand_in(tmp_path, discrete=True, temporal=8, spatial=16, full_size=True)
    keys = torch.jit.load(str(tmp_path / "encoder.jit")).state_dict().keys()
    assert {"encoder.conv_in.0.conv3d.weight", "encoder.down.0.block.1.conv1.1.conv3d.weight",
            "encoder.down.0.block.0.nin_shortcut.conv3d.weight",
            "encoder.down.0.downsample.conv2.conv3d.weight", "encoder.mid.attn_1.0.q.conv3d.weight",
            "encoder.mid.attn_1.1.proj_out.conv3d.weight", "encoder.down.0.block.0.norm1.norm.weight",
            "quant_conv.conv3d.weight"} <= set(keys)  # fmt: skip
    assert (
        "decoder.up.1.upsample.conv1.conv3d.weight"
        in torch.jit.load(str(tmp_path / "decoder.jit")).state_dict()
    )
    preset = make_preset("p", {"kind": "DV", "temporal": 8, "spatial": 16, "window": 17, "weights": "demo"})
    device = torch.device("cpu")
    encoder = CosmosEncoder(tmp_path / "encoder.jit", preset, device)  # probes kind and factors
    decoder = CosmosDecoder(tmp_path / "decoder.jit", preset, device)
    indices = encoder(torch.rand(2, 3, 17, 48, 64) * 2 - 1)
    assert indices.shape == (2, 3, 3, 4) and int(indices.max()) < 64000
    assert decoder(indices).shape == (2, 3, 17, 48, 64)


# Which levels resample, written out by hand from NVIDIA's published rule (design notes) for
# (kind, temporal, spatial, patch): encoder down.0, down.1, ...; decoder up.1, up.2, ... under
# their standard rule and their legacy rule. "st": space and time, "s": space, "": nothing.
LEVELS = {
    ("CV", 4, 8, 4): (["s"], ["s"], ["s"]),  # two levels
    ("DV", 4, 8, 4): (["s", ""], ["", "s"], ["", "s"]),  # space at up.2, not at up.1
    ("CV", 8, 8, 4): (["st", ""], ["st", ""], ["", "st"]),
    ("DV", 8, 8, 4): (["st", ""], ["st", ""], ["", "st"]),
    ("CV", 8, 16, 4): (["st", "s"], ["st", "s"], ["s", "st"]),
    ("DV", 8, 16, 4): (["st", "s"], ["st", "s"], ["s", "st"]),
    ("DV", 4, 8, 2): (["st", "s"], ["st", "s"], ["s", "st"]),  # -360p layouts
    ("DV", 8, 8, 2): (["st", "st"], ["st", ""], ["st", "st"]),
}  # fmt: skip


def stages(levels, name):
    return [
        ("s" if getattr(level, name).spatial else "") + ("t" if getattr(level, name).temporal else "")
        if hasattr(level, name) else ""
        for level in levels
    ]  # fmt: skip


@pytest.mark.parametrize("model", LEVELS, ids=lambda m: f"{m[0]}{m[1]}x{m[2]}x{m[2]}-patch{m[3]}")
def test_each_model_resamples_at_the_levels_nvidias_rule_gives(model):
    kind, temporal, spatial, patch = model
    down, standard, legacy = LEVELS[model]
    encoder = CosmosEncoderNetwork(kind, temporal, spatial, patch=patch).encoder
    assert stages(encoder.down[:-1], "downsample") == down
    for variant, expected in (("standard", standard), ("legacy", legacy)):
        decoder = CosmosDecoderNetwork(kind, temporal, spatial, patch=patch, variant=variant).decoder
        assert stages(decoder.up[1:], "upsample") == expected, variant


def test_a_single_latent_frame_still_passes_the_temporal_upsampling_conv():
    """NVIDIA's up-sampling applies its residual time conv to a single frame too (only the
    repeat is skipped), and so do the traced graphs; skipping it decodes a one-frame window
    differently."""
    torch.manual_seed(0)
    decoder = CosmosDecoderNetwork("CV", 8, 8).eval()
    upsample = decoder.decoder.up[1].upsample
    x = torch.randn(1, upsample.conv3.conv3d.in_channels, 1, 2, 2)
    with torch.no_grad():
        with_conv = upsample(x)
        torch.nn.init.zeros_(upsample.conv1.conv3d.weight)
        torch.nn.init.zeros_(upsample.conv1.conv3d.bias)
        assert not torch.allclose(upsample(x), with_conv)


def test_the_number_of_levels_is_read_from_the_weights():
    """NVIDIA's published code builds a three-level CV4x8x8 encoder; the 0.1 release has two.
    Either loads as what it is."""
    from avtokens.cosmos_network import network_from_release

    torch.manual_seed(0)
    frames = torch.rand(1, 3, 9, 16, 24) * 2 - 1
    for levels in (2, 3):
        encoder = CosmosEncoderNetwork("CV", 4, 8, levels=levels).eval()
        loaded = network_from_release(encoder.state_dict(), "encoder", "CV", 4, 8).eval()
        assert len(loaded.encoder.down) == levels
        with torch.no_grad():
            assert torch.equal(loaded(frames)[0], encoder(frames)[0])


@pytest.mark.parametrize("temporal, variant", [(4, "standard"), (8, "legacy")])
def test_the_360p_variants_patch_by_two_and_load_with_their_patch_size(temporal, variant):
    """The "-360p" releases patch 2x2x2 and resample more inside; the loader reads the patch
    size from the weights (conv_in takes 3 * patch^3 channels). With patch 2, an 8x decoder
    reaches its time factor only under the legacy rule."""
    from avtokens.cosmos_network import network_from_release

    torch.manual_seed(0)
    encoder = CosmosEncoderNetwork("DV", temporal, 8, patch=2).eval()
    decoder = CosmosDecoderNetwork("DV", temporal, 8, patch=2, variant=variant).eval()
    assert encoder.encoder.conv_in[0].conv3d.weight.shape[1] == 24
    frames = torch.rand(1, 3, 1 + 2 * temporal, 32, 48) * 2 - 1
    with torch.no_grad():
        indices = encoder(frames)[0]
        assert indices.shape == (1, 3, 4, 6)
        assert decoder(indices).shape == frames.shape
        loaded = network_from_release(encoder.state_dict(), "encoder", "DV", temporal, 8).eval()
        assert torch.equal(loaded(frames)[0], indices)
        loaded = network_from_release(decoder.state_dict(), "decoder", "DV", temporal, 8, variant=variant)
        assert torch.equal(loaded.eval()(indices), decoder(indices))
