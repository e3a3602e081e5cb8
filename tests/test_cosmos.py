"""The Cosmos loading path, run on stand-in weights in the official TorchScript layout."""

import numpy as np
import pytest
import torch

from avtokens import AvTokensError
from avtokens.presets import make_preset
from avtokens.visual import model_input, model_output_to_frames
from avtokens.visual_tokenizers.cosmos import COSMOS
from avtokens.visual_tokenizers.cosmos.fsq import CODEBOOK_SIZE
from avtokens.visual_tokenizers.cosmos.loader import CosmosDecoder, CosmosEncoder
from avtokens.windows import Window

CPU = torch.device("cpu")
PRESETS = sorted(COSMOS.models("0.1"))


def files(weights_dir, p, part):
    """Loader arguments for a preset's stand-in file."""
    return weights_dir / p.model / f"{part}.jit", p, CPU


def preset(kind, t, s, window=17):
    return make_preset("p", {"kind": kind, "temporal": t, "spatial": s, "window": window, "weights": "demo"})


@pytest.mark.parametrize("kind, t, s", PRESETS)
def test_encode_decode_shapes_and_ranges(demo_weights, kind, t, s):
    p = preset(kind, t, s)
    encoder, decoder = (
        CosmosEncoder(*files(demo_weights, p, "encoder")),
        CosmosDecoder(*files(demo_weights, p, "decoder")),
    )
    assert encoder.stand_in and decoder.stand_in
    height, width = 50, 70  # not multiples of 8 or 16
    frames = np.random.default_rng(0).integers(0, 256, (10, height, width, 3), dtype=np.uint8)
    # By hand: 10 real frames padded to 1 + k*t, 13 at 4x and 17 at 8x: 4 and 3 latent frames.
    padded, latent_frames = {4: (13, 4), 8: (17, 3)}[t]
    win = Window(0, 10, padded)
    ph, pw = -(-height // s) * s, -(-width // s) * s
    x = model_input([(win, frames), (win, frames)], ph, pw, CPU, torch.float32)
    assert x.shape == (2, 3, win.padded_frames, ph, pw)
    # Edge frames, rows and columns repeated, then scaled to [-1, 1] (numpy's own padding).
    margins = ((0, win.padded_frames - 10), (0, ph - height), (0, pw - width), (0, 0))
    padded = np.pad(frames, margins, mode="edge")
    expected = torch.from_numpy(padded.transpose(3, 0, 1, 2).astype(np.float32) / np.float32(127.5) - 1)
    assert torch.equal(x[0], expected) and torch.equal(x[1], expected)
    tokens = encoder(x)
    if kind == "CV":
        assert tokens.shape == (2, latent_frames, ph // s, pw // s, 16) and tokens.dtype == torch.bfloat16
    else:
        assert tokens.shape == (2, latent_frames, ph // s, pw // s) and tokens.dtype == torch.int64
        assert 0 <= tokens.min() and tokens.max() < CODEBOOK_SIZE
    out = decoder(tokens)
    assert out.shape == (2, 3, 1 + t * (latent_frames - 1), ph, pw)
    assert out.min() >= -1 and out.max() <= 1
    restored = torch.cat(list(model_output_to_frames(out[0], 10, height, width))).numpy()
    assert restored.shape == (10, height, width, 3) and restored.dtype == np.uint8
    # The stand-in is a block average: the first frame comes back close to the input's blocks.
    assert np.abs(restored.astype(float).mean() - frames.astype(float).mean()) < 40


@pytest.mark.parametrize("kind, t, s", PRESETS)
def test_graph_runs_at_other_sizes_and_a_wrong_frame_count_silently_misleads(demo_weights, kind, t, s):
    encoder = CosmosEncoder(*files(demo_weights, preset(kind, t, s), "encoder"))
    for frames, h, w in ((1, s, s), (1 + 3 * t, 3 * s, 5 * s)):
        out = encoder(torch.zeros(1, 3, frames, h, w))
        assert out.shape[1:3] == (1 + (frames - 1) // t, h // s)
    # Like the released graphs: T != 1 + k*tc gives no error, and the extra frame is lost.
    assert encoder(torch.zeros(1, 3, 2 + t, s, s)).shape[1] == 2


def test_dv_decoder_casts_to_bf16_inside_its_graph(demo_weights):
    # The reason the DV decoder stays in bf16 on CPU: float32 weights fail in its graph.
    decoder = CosmosDecoder(*files(demo_weights, preset("DV", 8, 8), "decoder"))
    assert decoder.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="BFloat16"):
        decoder.module.float()(torch.zeros(1, 2, 1, 1, dtype=torch.int64))


def test_missing_checkpoint_names_the_file_and_the_repo(tmp_path):
    p = make_preset("mine", {"kind": "CV", "temporal": 8, "spatial": 16, "window": 17})
    with pytest.raises(AvTokensError) as err:
        p.tokenizer.encoder(tmp_path / p.model, p, torch.device("cpu"), None)
    assert str(err.value) == (
        f"{tmp_path / p.model}: the Cosmos encoder of preset 'mine' is missing encoder.jit (files of the "
        "Hugging Face repo nvidia/Cosmos-0.1-Tokenizer-CV8x16x16)"
    )


def test_a_corrupt_checkpoint_fails_with_one_line(tmp_path):
    p = preset("CV", 8, 8)
    (tmp_path / p.model).mkdir()
    (tmp_path / p.model / "encoder.jit").write_text("not a zip")
    with pytest.raises(AvTokensError, match="not a loadable TorchScript checkpoint"):
        CosmosEncoder(*files(tmp_path, p, "encoder"))


@pytest.mark.parametrize("part", ["encoder", "decoder"])
@pytest.mark.parametrize(
    "configured, found",
    [
        (("CV", 8, 16), "CV8x8x8"),
        (("CV", 8, 8), "CV4x8x8"),
        (("DV", 8, 8), "DV8x16x16"),
        (("CV", 8, 8), "DV8x8x8"),
    ],
)
def test_probe_refuses_a_checkpoint_of_other_factors_or_kind(demo_weights, part, configured, found):
    # The folder of `found` is handed over as if it held the configured model.
    p = preset(*configured)
    path = demo_weights / f"Cosmos-0.1-Tokenizer-{found}" / f"{part}.jit"
    loader = CosmosEncoder if part == "encoder" else CosmosDecoder
    with pytest.raises(AvTokensError) as err:
        loader(path, p, CPU)
    assert f"expects a {p.kind}{p.factors} {part}, but the file is " in str(err.value)
    if found[:2] == p.kind or part == "encoder":
        assert str(err.value).endswith(f"is a {found} {part}")
    else:  # a DV decoder cannot even take CV latents
        assert f"is not a {p.kind} decoder (it refused {p.kind} tokens: " in str(err.value)
