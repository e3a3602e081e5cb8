"""Tokenizer families behind one interface: the registry's presets, releases, grids and
refusals (pure Python, as the Snakefile reads them)."""

import pytest

from avtokens.presets import Preset, grid_presets, make_preset
from avtokens.visual_tokenizers import VISUAL_TOKENIZERS, LatentLayout
from avtokens.visual_tokenizers.cosmos import COSMOS


def test_a_family_fills_in_its_release_model_window_and_engine():
    assert make_preset("w", {"family": "wan2.1"}) == Preset(
        "w", "CV", 4, 8, 81, "official", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "auto", "wan2.1", "2.1"
    )
    predict2 = make_preset("p", {"family": "wan2.1", "release": "cosmos-predict2", "window": 33})
    assert (predict2.repo, predict2.window, predict2.model) == (
        "nvidia/Cosmos-Predict2-2B-Video2World", 33, "Cosmos-Predict2-2B-Video2World")  # fmt: skip
    # NVIDIA's later Cosmos releases: the same family, their own repos.
    cosmos = {"kind": "CV", "temporal": 8, "spatial": 8}
    assert make_preset("a", {**cosmos, "release": 1.0}).repo == "nvidia/Cosmos-1.0-Tokenizer-CV8x8x8"
    tokenize1 = make_preset("b", {"kind": "DV", "temporal": 4, "spatial": 8, "release": "tokenize1"})
    assert tokenize1.repo == "nvidia/Cosmos-Tokenize1-DV4x8x8-360p" and tokenize1.window == 121
    assert tokenize1.tokenizer is VISUAL_TOKENIZERS["cosmos"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"family": "vq"}, "preset 'p': no tokenizer family 'vq'; families: cosmos, wan2.1"),
        ({"family": "wan2.1", "kind": "DV", "temporal": 4, "spatial": 8},
         "preset 'p': no Wan2.1 VAE tokenizer of release 2.1 is DV4x8x8; it has CV4x8x8"),
        ({"kind": "DV", "temporal": 8, "spatial": 8, "release": "1.0"},
         "preset 'p': no Cosmos tokenizer of release 1.0 is DV8x8x8; it has CV8x8x8, DV8x16x16; "
         "release 0.1 has it"),
        ({"kind": "CV", "temporal": 8, "spatial": 8, "release": "2.0"},
         "preset 'p': family cosmos has releases 0.1, 1.0, tokenize1, not '2.0'"),
        ({"kind": "CV"}, "preset 'p': give temporal, spatial (family cosmos, release 0.1 has CV4x8x8, "
                         "CV8x8x8, CV8x16x16, DV4x8x8, DV8x8x8, DV8x16x16)"),
        ({"family": "wan2.1", "engine": "torchscript"},
         "preset 'p': engine must be one of auto, eager (family wan2.1), not 'torchscript'"),
        ({"family": "wan2.1", "window": 17 + 2}, "preset 'p': window 19 is not 1 + k*4"),
    ],
)  # fmt: skip
def test_what_a_family_does_not_have_is_refused_naming_what_it_has(fields, message):
    with pytest.raises(ValueError) as err:
        make_preset("p", fields)
    assert str(err.value).startswith(message)


def test_a_grid_spans_families_and_names_the_others_presets_after_them():
    presets, skipped = grid_presets(
        {"family": ["cosmos", "wan2.1"], "kind": ["CV"], "temporal": [4], "spatial": [8], "window": [9]}
    )
    assert presets == {
        "CV4x8x8-w9": {"kind": "CV", "temporal": 4, "spatial": 8, "window": 9},
        "wan2.1-CV4x8x8-w9": {"family": "wan2.1", "kind": "CV", "temporal": 4, "spatial": 8, "window": 9},
    }
    assert skipped == []


def test_a_family_says_what_its_checkpoints_hold_and_how_its_tokens_are_stored():
    wan = VISUAL_TOKENIZERS["wan2.1"]
    weights = "vae/diffusion_pytorch_model.safetensors"
    assert wan.checkpoint_files() == ["vae/config.json", weights] == wan.checkpoint_files("decoder")
    assert wan.weights_file("encoder") == wan.weights_file("decoder") == weights
    assert (
        COSMOS.checkpoint_files("decoder") == ["decoder.jit"]
        and COSMOS.weights_file("encoder") == "encoder.jit"
    )
    assert COSMOS.checkpoint_files() == ["encoder.jit", "decoder.jit"]
    assert COSMOS.layout("DV") == LatentLayout("indices", "uint16", 64000)
    assert COSMOS.layout("CV") == wan.layout("CV") == LatentLayout("latents", "bfloat16", None)
    # NVIDIA renamed the 0.1 repos; a checkpoint under either name is found (the fetch's first).
    assert COSMOS.folder_names("nvidia/Cosmos-Tokenizer-DV8x8x8") == [
        "Cosmos-Tokenizer-DV8x8x8", "Cosmos-0.1-Tokenizer-DV8x8x8"]  # fmt: skip
    assert COSMOS.folder_names("nvidia/Cosmos-0.1-Tokenizer-CV4x8x8") == [
        "Cosmos-0.1-Tokenizer-CV4x8x8", "Cosmos-Tokenizer-CV4x8x8"]  # fmt: skip
    assert COSMOS.folder_names("me/Cosmos-1.0-Tokenizer-CV8x8x8") == ["Cosmos-1.0-Tokenizer-CV8x8x8"]
    assert wan.folder_names("Wan-AI/Wan2.1-T2V-1.3B-Diffusers") == ["Wan2.1-T2V-1.3B-Diffusers"]
    assert "`window` (now 33), for example to 33 or 17" in COSMOS.single_window_advice(33)
    assert "not the window (now 81)" in wan.single_window_advice(81)
