"""The three engines agree: the TorchScript graph, our own modules filled from its weights,
and those modules compiled. Random weights in the released layout, all six models, CPU.

Tolerances (CPU, float32 encoders; the DV decoder runs in bf16 as the released graph does):
CV latents within 1e-3 of each other (they are stored as bf16, whose step at 1 is 8e-3), DV
indices equal on at least 99.9% of positions, reconstructions at least 50 dB PSNR apart.
"""

import pytest
import torch

from avtokens import AvTokensError
from avtokens.cosmos import CosmosDecoder, CosmosEncoder
from avtokens.demo_weights import write_cosmos_stand_in
from avtokens.metrics import psnr
from avtokens.presets import make_preset

MODELS = [("CV", 4, 8), ("CV", 8, 8), ("CV", 8, 16), ("DV", 4, 8), ("DV", 8, 8), ("DV", 8, 16)]


def preset(kind, temporal, spatial, engine):
    fields = {"kind": kind, "temporal": temporal, "spatial": spatial, "window": 17, "engine": engine}
    return make_preset("p", fields, "demo")


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """Full-size networks with random weights, traced into encoder.jit / decoder.jit."""
    root = tmp_path_factory.mktemp("release")
    for kind, temporal, spatial in MODELS:
        write_cosmos_stand_in(root / f"{kind}{temporal}x{spatial}", kind == "DV", temporal, spatial,
                              seed=temporal + spatial, full_size=True)  # fmt: skip
    return root


def to_pixels(frames):
    return ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).flatten(0, 1)


def run(folder, model, engine, frames, backend="inductor"):
    p, cpu = preset(*model, engine), torch.device("cpu")
    encoder = CosmosEncoder(folder / "encoder.jit", p, cpu, compile_backend=backend)
    decoder = CosmosDecoder(folder / "decoder.jit", p, cpu, compile_backend=backend)
    assert encoder.record["engine"] == decoder.record["engine"] == engine
    tokens = encoder(frames)
    return tokens, decoder(tokens)


def assert_parity(reference, other, kind):
    (ref_tokens, ref_frames), (tokens, frames) = reference, other
    assert tokens.shape == ref_tokens.shape and frames.shape == ref_frames.shape
    if kind == "CV":
        assert (tokens.float() - ref_tokens.float()).abs().max() <= 1e-3
    else:
        assert (tokens == ref_tokens).float().mean() >= 0.999
    assert psnr(to_pixels(ref_frames), to_pixels(frames)).min() >= 50


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"{m[0]}{m[1]}x{m[2]}x{m[2]}")
def test_eager_and_compiled_match_the_torchscript_graph(release_files, model):
    folder = release_files / f"{model[0]}{model[1]}x{model[2]}"
    frames = torch.rand(2, 3, 17, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference = run(folder, model, "torchscript", frames)
    assert_parity(reference, run(folder, model, "eager", frames), model[0])
    # Dynamo's graph capture with a backend that generates no code: a fast check of the
    # compiled path for every model (the next test compiles one with inductor).
    assert_parity(reference, run(folder, model, "compiled", frames, backend="aot_eager"), model[0])


def test_inductor_compiles_once_and_serves_short_windows_and_batches(release_files):
    model = ("CV", 4, 8)
    folder = release_files / "CV4x8"
    frames = torch.rand(2, 3, 17, 32, 48, generator=torch.Generator().manual_seed(2)) * 2 - 1
    short = frames[:1, :, :9]  # a last batch of one short window: padded, then cropped
    cpu = torch.device("cpu")
    eager = CosmosEncoder(folder / "encoder.jit", preset(*model, "eager"), cpu)
    compiled = CosmosEncoder(folder / "encoder.jit", preset(*model, "compiled"), cpu)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # the counts so far include other tests' graphs
    for x in (frames, short):
        assert (compiled(x).float() - eager(x).float()).abs().max() <= 1e-3
    assert compiled.engine == "compiled"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # no recompile for the short one


def test_our_network_refuses_weights_that_do_not_fill_it(tmp_path, demo_weights):
    p = preset("CV", 8, 8, "eager")
    with pytest.raises(AvTokensError, match="tiny stand-in weights run only as engine torchscript"):
        CosmosEncoder(demo_weights / p.model / "encoder.jit", p, torch.device("cpu"))
    # A release file with one layer taken out: the error names it.
    write_cosmos_stand_in(tmp_path, False, 8, 8, full_size=True)
    module = torch.jit.load(str(tmp_path / "encoder.jit"))
    state = module.state_dict()
    from avtokens.cosmos_network import network_from_release

    del state["encoder.mid.attn_1.1.q.conv3d.weight"]
    with pytest.raises(ValueError, match=r"1 parameters missing: encoder\.mid\.attn_1\.1\.q\.conv3d\.weight"):
        network_from_release(state, "encoder", "CV", 8, 8)
