"""The published Cosmos architecture in our own modules: sizes, shapes, causality, and
NVIDIA's checkpoint layout (tests/data, made from NVIDIA's code) loaded through the same path
as the official files."""

import json
import math
from pathlib import Path

import pytest
import torch

from avtokens.visual_tokenizers.cosmos.network import (
    CosmosDecoderNetwork,
    CosmosEncoderNetwork,
    haar_patch,
    haar_unpatch,
    network_from_release,
)

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


# The key -> shape layout of the released encoder.jit / decoder.jit files, made from NVIDIA's own
# network code (tests/data/README.md says how); nothing of ours went into it.
RELEASE_LAYOUT = json.loads((Path(__file__).parent / "data" / "cosmos_release_layout.json").read_text())
RELEASES = {"CV4x8x8": ("CV", 4, 8), "CV8x8x8": ("CV", 8, 8), "CV8x16x16": ("CV", 8, 16),
            "DV4x8x8": ("DV", 4, 8), "DV8x8x8": ("DV", 8, 8), "DV8x16x16": ("DV", 8, 16)}  # fmt: skip

# What NVIDIA's files hold that our network does not take. Buffers: the Haar filters of the
# (un)patcher and, in DV files, the FSQ tables; our network computes them.
PATCHER_BUFFERS = {
    "encoder": [
        "encoder.patcher3d.wavelets",
        "encoder.patcher3d._arange",
        "encoder.patcher3d.patch_size_buffer",
    ],
    "decoder": ["decoder.unpatcher3d.wavelets", "decoder.unpatcher3d._arange"],
}
FSQ_BUFFERS = {
    "encoder": ["quantizer._levels", "quantizer._basis", "quantizer.implicit_codebook"],
    "decoder": [
        "inv_quant.quantizer._levels",
        "inv_quant.quantizer._basis",
        "inv_quant.quantizer.implicit_codebook",
    ],
}
# And convolutions the forward pass never runs. Every encoder level but the last carries a
# down-sampling stage with conv1 (space), conv2 (time) and conv3 (pointwise), every decoder
# level but the first an up-sampling stage with conv1 (time), conv2 (space) and conv3, even
# where the stage resamples one way only or not at all. Per model: encoder, decoder (standard
# level rule), decoder (legacy rule); LEVELS below says which stages run.
ALL = ["conv1", "conv2", "conv3"]
UNUSED_CONVS = {
    "CV4x8x8": ({"down.0": ["conv2"]}, {"up.1": ["conv1"]}, {"up.1": ["conv1"]}),
    "CV8x8x8": ({"down.1": ALL}, {"up.2": ALL}, {"up.1": ALL}),
    "CV8x16x16": ({"down.1": ["conv2"]}, {"up.2": ["conv1"]}, {"up.1": ["conv1"]}),
    "DV4x8x8": ({"down.0": ["conv2"], "down.1": ALL}, {"up.1": ALL, "up.2": ["conv1"]},
                {"up.1": ALL, "up.2": ["conv1"]}),
    "DV8x8x8": ({"down.1": ALL}, {"up.2": ALL}, {"up.1": ALL}),
    "DV8x16x16": ({"down.1": ["conv2"]}, {"up.2": ["conv1"]}, {"up.1": ["conv1"]}),
}  # fmt: skip
# The decoder under both level rules where they differ (not for the 4x models).
FILES = [(name, part) for name in RELEASES for part in ("encoder", "standard", "legacy")
         if part != "legacy" or RELEASES[name][1] == 8]  # fmt: skip


@pytest.fixture
def no_random_init(monkeypatch):
    """Leaves our network's parameters as allocated: the file's values replace them anyway (and
    are compared with them), and drawing ~100 M random numbers per network takes seconds."""
    for name in ("kaiming_uniform_", "uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


def left_out_of_our_network(name: str, part: str) -> set[str]:
    """The keys of NVIDIA's file that our network (`part`: encoder, or the decoder's level rule)
    does not take, named from the lists above."""
    file = "encoder" if part == "encoder" else "decoder"
    stages = UNUSED_CONVS[name][("encoder", "standard", "legacy").index(part)]
    stage = "downsample" if file == "encoder" else "upsample"
    keys = {f"{file}.{level}.{stage}.{conv}.conv3d.{p}"
            for level, convs in stages.items() for conv in convs for p in ("weight", "bias")}  # fmt: skip
    return keys | set(PATCHER_BUFFERS[file]) | set(FSQ_BUFFERS[file] if name.startswith("DV") else [])


def nvidia_state(name: str, file: str, seed: int | None = None) -> dict[str, torch.Tensor]:
    """Tensors of the shapes, and for buffers the dtypes, of NVIDIA's file. Without a seed each
    is one constant, its key's own (1, 2, 3, ...), expanded without copying, so a parameter's
    value says which key it came from; with one, seeded random values (bf16 weights)."""
    layout, state = RELEASE_LAYOUT["models"][name][file], {}
    generator = torch.Generator().manual_seed(seed or 0)
    for tag, (key, shape) in enumerate(sorted(layout["shapes"].items()), start=1):
        dtype = getattr(torch, layout["buffers"].get(key, "float32" if seed is None else "bfloat16"))
        if seed is None:
            state[key] = torch.tensor(tag, dtype=dtype).expand(shape)
        elif dtype.is_floating_point:
            state[key] = torch.empty(shape, dtype=dtype).uniform_(-1, 1, generator=generator)
        else:
            state[key] = torch.randint(0, 64, shape, generator=generator, dtype=dtype)
    return state


def assert_filled_from(network: torch.nn.Module, state: dict[str, torch.Tensor], left_out: set[str]):
    """Every parameter (and persistent buffer) of `network` holds the file's tensor of its name,
    shape and values; what the file holds beyond them is exactly `left_out`."""
    ours = network.state_dict()
    assert {name for name, _ in network.named_parameters()} <= set(ours)
    assert set(ours) - set(state) == set(), "our network has weights NVIDIA's file lacks"
    extra = set(state) - set(ours)
    assert extra == left_out, f"not the known extras; these differ: {sorted(extra ^ left_out)}"
    for key, tensor in ours.items():
        assert tensor.shape == state[key].shape, key
        assert torch.equal(tensor, state[key].to(tensor.dtype)), f"{key} is not the file's {key}"


@pytest.mark.parametrize("name, part", FILES, ids=[f"{name}-{part}" for name, part in FILES])
def test_our_network_takes_every_weight_of_nvidias_layout_from_its_own_key(name, part, no_random_init):
    """For each released model, its encoder and its decoder under either level rule: tensors of
    the shapes NVIDIA's file holds, each tagged with its key's own value, go through our loading
    path; every parameter must come from the key of its name, and nothing of the file may be
    left over but the known buffers and unused stage convolutions."""
    kind, temporal, spatial = RELEASES[name]
    file = "encoder" if part == "encoder" else "decoder"
    state = nvidia_state(name, file)
    variant = "standard" if part == "encoder" else part
    network = network_from_release(state, file, kind, temporal, spatial, variant=variant)
    left_out = left_out_of_our_network(name, part)
    assert_filled_from(network, state, left_out)
    assert millions(network) == SIZES[(kind, temporal, spatial)][file != "encoder"]
    layout = RELEASE_LAYOUT["models"][name][file]
    unused = sum(math.prod(layout["shapes"][key]) for key in left_out if key not in layout["buffers"])
    assert layout["parameters"] == sum(p.numel() for p in network.parameters()) + unused


class _Holder(torch.nn.Module):
    """A bare module: it holds tensors and computes nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_torchscript_of(state: dict[str, torch.Tensor], buffers, path) -> None:
    """A TorchScript file holding `state` under its dotted names (buffers as buffers), made
    without any network of ours: a tree of bare modules."""
    root = _Holder()
    for key, tensor in state.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if name not in node._modules:
                node.add_module(name, _Holder())
            node = node._modules[name]
        if key in buffers:
            node.register_buffer(leaf, tensor)
        else:
            node.register_parameter(leaf, torch.nn.Parameter(tensor, requires_grad=False))
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # TorchScript, the released format
@pytest.mark.parametrize("file", ["encoder", "decoder"])
def test_full_size_files_in_the_release_layout_load_like_the_official_ones(tmp_path, file, no_random_init):
    """A TorchScript file in NVIDIA's DV8x16x16 layout, full size, seeded random weights, made
    without our network, read as the workflow reads a release file (torch.jit.load, then its
    state dict into network_from_release): our network holds exactly the file's values and runs."""
    name, (kind, temporal, spatial) = "DV8x16x16", RELEASES["DV8x16x16"]
    state = nvidia_state(name, file, seed=17)
    path = tmp_path / f"{file}.jit"
    write_torchscript_of(state, RELEASE_LAYOUT["models"][name][file]["buffers"], path)
    loaded = torch.jit.load(str(path), map_location="cpu").state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[key], state[key]) for key in state)
    with torch.no_grad():  # and it runs: one frame in, one latent position out, and back
        if file == "encoder":
            network = network_from_release(loaded, "encoder", kind, temporal, spatial).eval()
            assert_filled_from(network, loaded, left_out_of_our_network(name, "encoder"))
            assert network(torch.rand(1, 3, 1, spatial, spatial) * 2 - 1)[0].shape == (1, 1, 1, 1)
        for variant in ("standard", "legacy") if file == "decoder" else ():
            network = network_from_release(loaded, "decoder", kind, temporal, spatial, variant=variant).eval()
            assert_filled_from(network, loaded, left_out_of_our_network(name, variant))
            assert network(torch.randint(0, 64000, (1, 1, 1, 1))).shape == (1, 3, 1, spatial, spatial)


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
